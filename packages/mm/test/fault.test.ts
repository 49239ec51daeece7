import { describe, expect, it } from "vitest";
import {
  ENTRY_PROTNONE,
  ENTRY_WRITE,
  ENTRY_ZERO,
  FRAME_ANON_EXCLUSIVE,
  HPAGE_PMD_NR,
  HPAGE_PMD_SIZE,
  MADV_DONTNEED,
  Machine,
  type MachineConfig,
  PROT_NONE,
  PROT_READ,
  SegvError,
  stampToken,
  ZERO_PFN,
} from "../src/index.js";
import {
  expectNoFrameReferenced,
  hugePmdAt,
  MiB,
  mmapHuge,
  mmapPrivate,
  mmapShared,
  PAGE,
  pteAt,
  RW,
  thrown,
} from "./helpers.js";

function setup(config: Partial<MachineConfig> = {}) {
  const m = new Machine({ contentMode: "tag", ...config });
  const p = m.createProcess();
  return { m, p, mm: p.mm };
}

describe("anonymous faults and the zero page", () => {
  it("maps the shared zero page on a read fault, using no frame and no RSS", () => {
    const { m, p, mm } = setup({ zeroPage: true });
    const a = mmapPrivate(p, 4 * PAGE);
    expect(p.readPageHash(a)).toBe(0);
    const e = pteAt(mm, a)!;
    expect(e.pfn).toBe(ZERO_PFN);
    expect(e.flags & ENTRY_ZERO).toBe(ENTRY_ZERO);
    expect(e.flags & ENTRY_WRITE).toBe(0);
    expect(m.usedFrames).toBe(0);
    expect(mm.rssAnon).toBe(0);
    expect(m.stats.faultZeroPage).toBe(1);
  });

  it("copies the zero page into a new frame on a later write", () => {
    const { m, p, mm } = setup({ zeroPage: true });
    const a = mmapPrivate(p, 4 * PAGE);
    p.readPageHash(a);
    p.writeStamp(a, PAGE, 3);
    expect(m.stats.cowCopies).toBe(1);
    expect(p.minorFaults).toBe(2);
    expect(m.usedFrames).toBe(1);
    expect(mm.rssAnon).toBe(1);
    const e = pteAt(mm, a)!;
    expect(e.pfn).not.toBe(ZERO_PFN);
    expect(e.flags & (ENTRY_ZERO | ENTRY_WRITE)).toBe(ENTRY_WRITE);
    expect(p.readPageHash(a)).toBe(stampToken(3));
  });

  it("allocates a writable zeroed page on a read fault when the zero page is off", () => {
    const { m, p, mm } = setup({ zeroPage: false });
    const a = mmapPrivate(p, 4 * PAGE);
    expect(p.readPageHash(a)).toBe(0);
    expect(m.usedFrames).toBe(1);
    expect(m.stats.faultAnon).toBe(1);
    expect(pteAt(mm, a)!.flags & ENTRY_WRITE).toBe(ENTRY_WRITE);
    // The write needs no fault and copies nothing.
    p.writeStamp(a, PAGE, 1);
    expect(p.minorFaults).toBe(1);
    expect(m.stats.cowCopies).toBe(0);
  });

  it("maps a freshly allocated page read-only in a read-only VMA when the zero page is off", () => {
    const { m, p, mm } = setup({ zeroPage: false });
    const a = mmapPrivate(p, PAGE, PROT_READ);
    expect(p.readPageHash(a)).toBe(0);
    expect(m.usedFrames).toBe(1);
    expect(pteAt(mm, a)!.flags & ENTRY_WRITE).toBe(0);
  });

  it("takes one fault per page on first access and none on repeated access", () => {
    const { p } = setup();
    const a = mmapPrivate(p, 8 * PAGE);
    expect(p.touch(a, 8 * PAGE, true).faults).toBe(8);
    expect(p.touch(a, 8 * PAGE, true).faults).toBe(0);
    expect(p.touch(a, 8 * PAGE, false).faults).toBe(0);
  });
});

describe("access checks", () => {
  it("raises SIGSEGV for any access to a PROT_NONE mapping", () => {
    const { m, p } = setup();
    const a = mmapPrivate(p, PAGE, PROT_NONE);
    const r = thrown(() => p.readPageHash(a)) as SegvError;
    expect(r).toBeInstanceOf(SegvError);
    expect(r.reason).toBe("access");
    expect(r.address).toBe(a);
    expect(r.message).toContain("does not permit");
    expect(() => p.writeStamp(a, PAGE, 1)).toThrow(SegvError);
    expect(m.stats.segv).toBe(2);
    expect(m.stats.faults).toBe(0);
  });

  it("raises SIGSEGV for a write to a read-only mapping but allows the read", () => {
    const { p } = setup();
    const a = mmapPrivate(p, PAGE, PROT_READ);
    expect(p.readPageHash(a)).toBe(0);
    const w = thrown(() => p.writeStamp(a, PAGE, 1)) as SegvError;
    expect(w).toBeInstanceOf(SegvError);
    expect(w.message).toContain("write");
  });

  it("raises SIGSEGV with reason no-vma outside every mapping", () => {
    const { p } = setup();
    const a = mmapPrivate(p, PAGE);
    p.mm.munmap(a, PAGE);
    const e = thrown(() => p.readPageHash(a + 100)) as SegvError;
    expect(e.reason).toBe("no-vma");
    expect(e.message).toContain("no mapping");
  });

  it("makes pages inaccessible at once after mprotect(PROT_NONE), and accessible again after mprotect back", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 2 * PAGE);
    p.writeStamp(a, 2 * PAGE, 6);
    mm.mprotect(a, 2 * PAGE, PROT_NONE);
    expect(pteAt(mm, a)!.flags & ENTRY_PROTNONE).toBe(ENTRY_PROTNONE);
    expect(() => p.readPageHash(a)).toThrow(SegvError);
    mm.mprotect(a, 2 * PAGE, PROT_READ);
    expect(p.readPageHash(a + PAGE)).toBe(stampToken(6));
  });

  it("stops a touch at the first page that faults with SIGSEGV and reports it", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 4 * PAGE);
    mm.mprotect(a + 2 * PAGE, 2 * PAGE, PROT_READ);
    const r = p.touch(a, 4 * PAGE, true, 1);
    expect(r).toEqual({ faults: 2, segvAt: a + 2 * PAGE });
  });
});

describe("mprotect and write permission", () => {
  it("restores write access without a fault only for exclusive anonymous pages", () => {
    const { m, p, mm } = setup();
    const a = mmapPrivate(p, 3 * PAGE);
    p.writeStamp(a, PAGE, 1); // exclusive anonymous page
    p.readPageHash(a + PAGE); // zero page
    p.writeStamp(a + 2 * PAGE, PAGE, 3);
    const c = p.fork(); // page 2 is now shared with the child
    mm.mprotect(a, 3 * PAGE, PROT_READ);
    mm.mprotect(a, 3 * PAGE, RW);
    // The parent's first page lost exclusivity at fork too; give it back by writing it once.
    p.writeStamp(a, PAGE, 1);
    mm.mprotect(a, 3 * PAGE, PROT_READ);
    mm.mprotect(a, 3 * PAGE, RW);
    expect(pteAt(mm, a)!.flags & ENTRY_WRITE).toBe(ENTRY_WRITE);
    expect(pteAt(mm, a + PAGE)!.flags & ENTRY_WRITE).toBe(0);
    expect(pteAt(mm, a + 2 * PAGE)!.flags & ENTRY_WRITE).toBe(0);
    const faults = p.minorFaults;
    const copies = m.stats.cowCopies;
    p.writeStamp(a, PAGE, 10);
    expect(p.minorFaults).toBe(faults);
    p.writeStamp(a + PAGE, PAGE, 11);
    p.writeStamp(a + 2 * PAGE, PAGE, 12);
    expect(p.minorFaults).toBe(faults + 2);
    expect(m.stats.cowCopies).toBe(copies + 2);
    expect(c.readPageHash(a + 2 * PAGE)).toBe(stampToken(3));
  });

  it("restores write access without a fault for shared mappings", () => {
    const { p, mm } = setup();
    const a = mmapShared(p, PAGE);
    p.writeStamp(a, PAGE, 1);
    mm.mprotect(a, PAGE, PROT_READ);
    expect(pteAt(mm, a)!.flags & ENTRY_WRITE).toBe(0);
    mm.mprotect(a, PAGE, RW);
    expect(pteAt(mm, a)!.flags & ENTRY_WRITE).toBe(ENTRY_WRITE);
  });
});

describe("copy-on-write after fork", () => {
  function forked() {
    const s = setup();
    const a = mmapPrivate(s.p, 4 * PAGE);
    s.p.writeStamp(a, 4 * PAGE, 1);
    const c = s.p.fork();
    return { ...s, a, c };
  }

  it("write-protects the page on both sides and maps it twice", () => {
    const { m, mm, a, c } = forked();
    const pe = pteAt(mm, a)!;
    const ce = pteAt(c.mm, a)!;
    expect(ce.pfn).toBe(pe.pfn);
    expect(pe.flags & ENTRY_WRITE).toBe(0);
    expect(ce.flags & ENTRY_WRITE).toBe(0);
    expect(m.pool.mapcount[pe.pfn]).toBe(2);
    expect(m.pool.refcount[pe.pfn]).toBe(2);
    expect(m.pool.flags[pe.pfn] & FRAME_ANON_EXCLUSIVE).toBe(0);
    expect(m.usedFrames).toBe(4);
    expect(c.mm.rssAnon).toBe(4);
  });

  it("copies the page on the child's write and leaves the parent's content alone", () => {
    const { m, p, mm, a, c } = forked();
    const old = pteAt(mm, a)!.pfn;
    c.writeStamp(a, PAGE, 2);
    expect(m.stats.cowCopies).toBe(1);
    expect(pteAt(c.mm, a)!.pfn).not.toBe(old);
    expect(m.pool.mapcount[old]).toBe(1);
    expect(c.readPageHash(a)).toBe(stampToken(2));
    expect(p.readPageHash(a)).toBe(stampToken(1));
    expect(m.usedFrames).toBe(5);
  });

  it("reuses the page in place when the other process already copied it", () => {
    const { m, p, mm, a, c } = forked();
    c.writeStamp(a, PAGE, 2);
    const before = pteAt(mm, a)!.pfn;
    p.writeStamp(a, PAGE, 3);
    expect(m.stats.cowCopies).toBe(1);
    expect(m.stats.cowReuses).toBe(1);
    expect(pteAt(mm, a)!.pfn).toBe(before);
    expect(m.pool.flags[before] & FRAME_ANON_EXCLUSIVE).toBe(FRAME_ANON_EXCLUSIVE);
  });

  it("reuses the page in place when the other process has exited", () => {
    const { m, p, a, c } = forked();
    c.exit();
    p.writeStamp(a, 4 * PAGE, 3);
    expect(m.stats.cowCopies).toBe(0);
    expect(m.stats.cowReuses).toBe(4);
    expect(m.usedFrames).toBe(4);
  });

  it("lets each process copy the zero page on its own write", () => {
    const { m, p } = setup();
    const a = mmapPrivate(p, PAGE);
    p.readPageHash(a);
    const c = p.fork();
    expect(pteAt(c.mm, a)!.pfn).toBe(ZERO_PFN);
    c.writeStamp(a, PAGE, 1);
    p.writeStamp(a, PAGE, 2);
    expect(m.stats.cowCopies).toBe(2);
    expect(c.readPageHash(a)).toBe(stampToken(1));
    expect(p.readPageHash(a)).toBe(stampToken(2));
  });

  it("does not copy page tables of a private VMA that was never faulted", () => {
    const { p } = setup();
    mmapPrivate(p, 4 * PAGE);
    const c = p.fork();
    expect(c.mm.pt.tablePages).toBe(0);
    expect(c.mm.vmas.size).toBe(1);
  });

  it("frees every frame when parent and child exit in either order", () => {
    const { m, p, a, c } = forked();
    c.writeStamp(a + PAGE, PAGE, 9);
    const g = c.fork();
    p.exit();
    g.writeStamp(a, 2 * PAGE, 4);
    c.exit();
    g.exit();
    expectNoFrameReferenced(m);
  });
});

describe("shared anonymous mappings", () => {
  it("are not copied at fork: the child faults in the parent's pages and sees their data", () => {
    const { m, p, mm } = setup();
    const a = mmapShared(p, 4 * PAGE);
    p.writeStamp(a, 4 * PAGE, 1);
    const c = p.fork();
    expect(c.mm.pt.tablePages).toBe(0);
    expect(c.readPageHash(a + 3 * PAGE)).toBe(stampToken(1));
    expect(pteAt(c.mm, a + 3 * PAGE)!.pfn).toBe(pteAt(mm, a + 3 * PAGE)!.pfn);
    expect(m.usedFrames).toBe(4);
    expect(m.stats.cowCopies).toBe(0);
  });

  it("make writes of either process visible to the other", () => {
    const { p } = setup();
    const a = mmapShared(p, 2 * PAGE);
    const c = p.fork();
    c.writeStamp(a, PAGE, 5);
    expect(p.readPageHash(a)).toBe(stampToken(5));
    p.writeStamp(a + PAGE, PAGE, 6);
    expect(c.readPageHash(a + PAGE)).toBe(stampToken(6));
  });

  it("keep their data across MADV_DONTNEED, which only unmaps the pages", () => {
    const { m, p, mm } = setup();
    const a = mmapShared(p, 2 * PAGE);
    p.writeStamp(a, 2 * PAGE, 7);
    mm.madvise(a, 2 * PAGE, MADV_DONTNEED);
    expect(pteAt(mm, a)).toBeNull();
    expect(mm.rssShmem).toBe(0);
    expect(m.usedFrames).toBe(2);
    expect(p.readPageHash(a + PAGE)).toBe(stampToken(7));
  });

  it("allocate a page on a read fault (shmem has no zero page) and count it as shmem RSS", () => {
    const { m, p, mm } = setup();
    const a = mmapShared(p, PAGE);
    expect(p.readPageHash(a)).toBe(0);
    expect(m.usedFrames).toBe(1);
    expect(mm.rssShmem).toBe(1);
    expect(mm.rssAnon).toBe(0);
  });

  it("map the already cached pages of the aligned fault-around window on a read fault", () => {
    const { m, p } = setup({ faultAroundBytes: 16 * PAGE });
    const a = mmapShared(p, 64 * PAGE);
    expect(a % (16 * PAGE)).toBe(0);
    p.writeStamp(a, 40 * PAGE, 1);
    const c = p.fork();
    expect(c.touch(a + 20 * PAGE, PAGE, false).faults).toBe(1);
    expect(m.stats.faultAroundPages).toBe(15);
    // Pages 16..31 are mapped now; 32 is outside the window.
    expect(c.touch(a + 16 * PAGE, 16 * PAGE, false).faults).toBe(0);
    expect(c.touch(a + 32 * PAGE, PAGE, false).faults).toBe(1);
    // Pages the object does not hold yet are not mapped by fault-around.
    expect(c.touch(a + 48 * PAGE, PAGE, false).faults).toBe(1);
    expect(c.touch(a + 49 * PAGE, PAGE, false).faults).toBe(1);
  });

  it("free their pages when the last mapping of the object goes away", () => {
    const { m, p, mm } = setup();
    const a = mmapShared(p, 4 * PAGE);
    p.writeStamp(a, 4 * PAGE, 1);
    const c = p.fork();
    mm.munmap(a, 4 * PAGE);
    expect(m.usedFrames).toBe(4);
    expect(c.readPageHash(a)).toBe(stampToken(1));
    c.exit();
    expect(m.usedFrames).toBe(0);
  });
});

describe("transparent huge pages", () => {
  it("maps the huge zero page on a read fault in a MADV_HUGEPAGE range", () => {
    const { m, p, mm } = setup({ zeroPage: true, hugeZeroPage: true });
    const a = mmapHuge(p);
    expect(p.readPageHash(a + 5 * PAGE)).toBe(0);
    const e = hugePmdAt(mm, a)!;
    expect(e.flags & ENTRY_ZERO).toBe(ENTRY_ZERO);
    expect(m.usedFrames).toBe(0);
    expect(m.stats.faultHugeZeroPage).toBe(1);
    expect(p.touch(a, HPAGE_PMD_SIZE, false).faults).toBe(0);
  });

  it("replaces the huge zero page by a new THP on a write, with one PMD", () => {
    const { m, p, mm } = setup({ zeroPage: true, hugeZeroPage: true });
    const a = mmapHuge(p);
    p.readPageHash(a);
    p.writeStamp(a + 7 * PAGE, PAGE, 2);
    expect(m.stats.thpAllocs).toBe(1);
    expect(m.stats.thpSplitPmd).toBe(0);
    expect(m.usedFrames).toBe(HPAGE_PMD_NR);
    const e = hugePmdAt(mm, a)!;
    expect(e.flags & (ENTRY_ZERO | ENTRY_WRITE)).toBe(ENTRY_WRITE);
    expect(e.pfn % HPAGE_PMD_NR).toBe(0);
    expect(mm.pt.leafTables).toBe(0);
    expect(mm.rssAnon).toBe(HPAGE_PMD_NR);
    expect(p.readPageHash(a + 7 * PAGE)).toBe(stampToken(2));
    expect(p.readPageHash(a + 8 * PAGE)).toBe(0);
  });

  it("allocates a THP on a read fault when the huge zero page is off", () => {
    const { m, p, mm } = setup({ zeroPage: true, hugeZeroPage: false });
    const a = mmapHuge(p);
    p.readPageHash(a);
    expect(m.stats.thpAllocs).toBe(1);
    expect(m.stats.faultThp).toBe(1);
    expect(hugePmdAt(mm, a)!.flags & ENTRY_ZERO).toBe(0);
  });

  it("maps a THP with one writable PMD on a write fault", () => {
    const { m, p, mm } = setup();
    const a = mmapHuge(p);
    p.writeStamp(a + HPAGE_PMD_SIZE - PAGE, PAGE, 1);
    expect(m.stats.faultThp).toBe(1);
    expect(hugePmdAt(mm, a)!.flags & ENTRY_WRITE).toBe(ENTRY_WRITE);
    expect(p.touch(a, HPAGE_PMD_SIZE, true).faults).toBe(0);
  });

  /** A machine whose every 2 MiB block holds something, so no THP can be allocated. */
  function noHugeBlockLeft(config: Partial<MachineConfig> = {}) {
    const s = setup({ memoryBytes: 8 * MiB, ...config });
    const filler = mmapHuge(s.p, 2 * HPAGE_PMD_SIZE);
    s.p.writeStamp(filler, 2 * HPAGE_PMD_SIZE, 1);
    const small = mmapPrivate(s.p, PAGE);
    s.p.writeStamp(small, PAGE, 1);
    expect(s.m.pool.tryAllocHuge()).toBe(-1);
    return s;
  }

  it("falls back to 4 KiB pages on a write to the huge zero page when no huge block is free", () => {
    const { m, p, mm } = noHugeBlockLeft();
    const a = mmapHuge(p);
    p.readPageHash(a);
    const used = m.usedFrames;
    const copies = m.stats.cowCopies;
    p.writeStamp(a + 5 * PAGE, PAGE, 3);
    expect(m.stats.thpFallbacks).toBe(1);
    expect(m.stats.thpSplitPmd).toBe(1);
    expect(m.stats.cowCopies).toBe(copies + 1);
    expect(m.usedFrames).toBe(used + 1);
    expect(hugePmdAt(mm, a)).toBeNull();
    expect(pteAt(mm, a + 5 * PAGE)!.flags & ENTRY_ZERO).toBe(0);
    for (const i of [0, 4, 6, 511]) expect(pteAt(mm, a + i * PAGE)!.flags & ENTRY_ZERO).toBe(ENTRY_ZERO);
    expect(p.readPageHash(a + 5 * PAGE)).toBe(stampToken(3));
    expect(p.readPageHash(a + 6 * PAGE)).toBe(0);
  });

  it("falls back to 4 KiB pages on a first write fault when no huge block is free", () => {
    const { m, p, mm } = noHugeBlockLeft();
    const a = mmapHuge(p);
    const allocs = m.stats.thpAllocs;
    p.writeStamp(a, PAGE, 3);
    expect(m.stats.thpFallbacks).toBe(1);
    expect(m.stats.thpAllocs).toBe(allocs);
    expect(pteAt(mm, a)).not.toBeNull();
    expect(pteAt(mm, a + PAGE)).toBeNull();
  });

  function thp() {
    const s = setup();
    const a = mmapHuge(s.p);
    s.p.writeStamp(a, HPAGE_PMD_SIZE, 5);
    s.p.writeStamp(a + 100 * PAGE, PAGE, 6);
    expect(s.m.stats.thpAllocs).toBe(1);
    return { ...s, a };
  }

  it("splits the PMD for an mprotect of part of it, keeping the rest writable", () => {
    const { m, p, mm, a } = thp();
    mm.mprotect(a, PAGE, PROT_READ);
    expect(m.stats.thpSplitPmd).toBe(1);
    expect(hugePmdAt(mm, a)).toBeNull();
    expect(pteAt(mm, a)!.flags & ENTRY_WRITE).toBe(0);
    expect(pteAt(mm, a + PAGE)!.flags & ENTRY_WRITE).toBe(ENTRY_WRITE);
    expect(p.readPageHash(a + 100 * PAGE)).toBe(stampToken(6));
    expect(m.usedFrames).toBe(HPAGE_PMD_NR);
  });

  it("changes a whole PMD's protection without splitting it", () => {
    const { m, p, mm, a } = thp();
    mm.mprotect(a, HPAGE_PMD_SIZE, PROT_READ);
    expect(m.stats.thpSplitPmd).toBe(0);
    expect(hugePmdAt(mm, a)!.flags & ENTRY_WRITE).toBe(0);
    mm.mprotect(a, HPAGE_PMD_SIZE, RW);
    expect(hugePmdAt(mm, a)!.flags & ENTRY_WRITE).toBe(ENTRY_WRITE);
    expect(p.touch(a, PAGE, true).faults).toBe(0);
  });

  it("splits the PMD for a partial munmap and keeps the folio until it is split under pressure", () => {
    const { m, p, mm, a } = thp();
    mm.munmap(a + HPAGE_PMD_SIZE - PAGE, PAGE);
    expect(m.stats.thpSplitPmd).toBe(1);
    expect(mm.rssAnon).toBe(HPAGE_PMD_NR - 1);
    expect(m.usedFrames).toBe(HPAGE_PMD_NR);
    expect(p.readPageHash(a + 100 * PAGE)).toBe(stampToken(6));
  });

  it("unmaps a whole PMD without splitting and frees the THP", () => {
    const { m, mm, a } = thp();
    mm.munmap(a, HPAGE_PMD_SIZE);
    expect(m.stats.thpSplitPmd).toBe(0);
    expect(m.usedFrames).toBe(0);
    expect(mm.rssAnon).toBe(0);
  });

  it("splits the PMD for a partial MADV_DONTNEED, zeroing only the advised pages", () => {
    const { m, p, mm, a } = thp();
    mm.madvise(a + 100 * PAGE, 2 * PAGE, MADV_DONTNEED);
    expect(m.stats.thpSplitPmd).toBe(1);
    expect(p.readPageHash(a + 100 * PAGE)).toBe(0);
    expect(p.readPageHash(a + 102 * PAGE)).toBe(stampToken(5));
    expect(mm.rssAnon).toBe(HPAGE_PMD_NR - 2);
  });

  it("drops a whole PMD on MADV_DONTNEED without splitting, reading zeros afterwards", () => {
    const { m, p, mm, a } = thp();
    mm.madvise(a, HPAGE_PMD_SIZE, MADV_DONTNEED);
    expect(m.stats.thpSplitPmd).toBe(0);
    expect(m.usedFrames).toBe(0);
    expect(p.readPageHash(a + 100 * PAGE)).toBe(0);
  });

  it("after fork, splits the writer's PMD and copies one 4 KiB page", () => {
    const { m, p, mm, a } = thp();
    const c = p.fork();
    const head = hugePmdAt(mm, a)!.pfn;
    expect(hugePmdAt(c.mm, a)!.pfn).toBe(head);
    expect(hugePmdAt(mm, a)!.flags & ENTRY_WRITE).toBe(0);
    expect(hugePmdAt(c.mm, a)!.flags & ENTRY_WRITE).toBe(0);
    expect(m.pool.refcount[head]).toBe(2);
    c.writeStamp(a + 3 * PAGE, PAGE, 7);
    expect(m.stats.thpSplitPmd).toBe(1);
    expect(m.stats.cowCopies).toBe(1);
    expect(m.usedFrames).toBe(HPAGE_PMD_NR + 1);
    expect(hugePmdAt(mm, a)!.pfn).toBe(head); // the parent keeps its PMD
    expect(pteAt(c.mm, a + 4 * PAGE)!.pfn).toBe(head + 4);
    expect(pteAt(c.mm, a + 4 * PAGE)!.flags & ENTRY_WRITE).toBe(0);
    expect(c.readPageHash(a + 3 * PAGE)).toBe(stampToken(7));
    expect(p.readPageHash(a + 3 * PAGE)).toBe(stampToken(5));
  });

  it("reuses a PTE-mapped THP once the only other mm mapping it has gone (CONFIG_MM_ID)", () => {
    const { m, p, a } = thp();
    const c = p.fork();
    p.writeStamp(a, PAGE, 8); // split + copy in the parent
    c.exit();
    const copies = m.stats.cowCopies;
    p.writeStamp(a + PAGE, PAGE, 9);
    expect(m.stats.cowCopies).toBe(copies);
    expect(m.stats.cowReuses).toBe(1);
  });

  it("keeps copying pages of a THP that another process still maps", () => {
    const { m, p, a } = thp();
    const c = p.fork();
    p.writeStamp(a, 3 * PAGE, 8);
    expect(m.stats.cowCopies).toBe(3);
    expect(m.stats.cowReuses).toBe(0);
    expect(c.readPageHash(a + PAGE)).toBe(stampToken(5));
  });

  it("reuses a THP still mapped by its PMD in place once the child has exited", () => {
    const { m, p, mm, a } = thp();
    const c = p.fork();
    c.exit();
    p.writeStamp(a, PAGE, 8);
    expect(m.stats.thpSplitPmd).toBe(0);
    expect(m.stats.cowCopies).toBe(0);
    expect(hugePmdAt(mm, a)!.flags & ENTRY_WRITE).toBe(ENTRY_WRITE);
    // The reused folio is exclusive again: after a split and an mprotect round trip every page
    // is writable without a fault.
    mm.mprotect(a + PAGE, PAGE, PROT_READ);
    mm.mprotect(a + PAGE, PAGE, RW);
    expect(pteAt(mm, a + PAGE)!.flags & ENTRY_WRITE).toBe(ENTRY_WRITE);
    expect(p.touch(a, HPAGE_PMD_SIZE, true).faults).toBe(0);
  });

  it("frees the THP and all 4 KiB copies when both processes exit", () => {
    const { m, p, a } = thp();
    const c = p.fork();
    c.writeStamp(a, 8 * PAGE, 1);
    p.mm.munmap(a + 4 * PAGE, PAGE);
    p.exit();
    c.exit();
    expectNoFrameReferenced(m);
  });
});
