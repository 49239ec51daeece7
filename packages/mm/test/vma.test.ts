import { describe, expect, it } from "vitest";
import {
  HPAGE_PMD_SIZE,
  MADV_HUGEPAGE,
  MADV_NOHUGEPAGE,
  MAP_FIXED,
  MAP_NORESERVE,
  Machine,
  type Mm,
  PROT_NONE,
  PROT_READ,
  THP_ADVICE_HUGEPAGE,
  THP_ADVICE_NOHUGEPAGE,
  THP_ADVICE_NONE,
  Vma,
  VmaList,
} from "../src/index.js";
import { hugePmdAt, MiB, mmapHuge, mmapPrivate, mmapShared, PAGE, PRIVATE, RW } from "./helpers.js";

function layout(mm: Mm): [number, number, number][] {
  return mm.vmas.toArray().map((v) => [v.start, v.end, v.prot]);
}

function setup(config: ConstructorParameters<typeof Machine>[0] = {}) {
  const m = new Machine({ contentMode: "tag", ...config });
  const p = m.createProcess();
  return { m, p, mm: p.mm };
}

function privateVma(start: number, end: number, anonVma = 0): Vma {
  return new Vma(start, end, RW, false, THP_ADVICE_NONE, false, anonVma, null, start / 4096);
}

describe("VmaList", () => {
  it("finds the VMA containing an address and nothing in the gaps", () => {
    const l = new VmaList();
    l.insert(privateVma(0x10000, 0x20000));
    l.insert(privateVma(0x40000, 0x50000));
    expect(l.find(0x1ffff)?.start).toBe(0x10000);
    expect(l.find(0x20000)).toBeNull();
    expect(l.find(0x40000)?.start).toBe(0x40000);
    expect(l.intersects(0x20000, 0x40000)).toBe(false);
    expect(l.intersects(0x20000, 0x40001)).toBe(true);
  });

  it("splits a VMA at an address inside it into two with the same attributes", () => {
    const l = new VmaList();
    l.insert(privateVma(0x10000, 0x20000, 7));
    l.splitAt(0x18000);
    expect(l.toArray().map((v) => [v.start, v.end, v.anonVma])).toEqual([
      [0x10000, 0x18000, 7],
      [0x18000, 0x20000, 7],
    ]);
    l.splitAt(0x18000); // already a boundary
    expect(l.size).toBe(2);
  });

  it("merges adjacent compatible VMAs but not ones with different anon_vmas", () => {
    const l = new VmaList();
    l.insert(privateVma(0x10000, 0x20000, 1));
    l.insert(privateVma(0x20000, 0x30000, 1));
    l.insert(privateVma(0x30000, 0x40000, 2));
    l.mergeAround(0x10000, 0x40000);
    expect(l.toArray().map((v) => [v.start, v.end])).toEqual([
      [0x10000, 0x30000],
      [0x30000, 0x40000],
    ]);
  });
});

describe("VMA split and merge through the syscalls", () => {
  it("merges a new private mapping into an adjacent one with the same protection", () => {
    const { mm } = setup();
    const a = mm.mmap({ addr: 0x7000_0000_0000, length: 4 * PAGE, prot: RW, flags: PRIVATE | MAP_FIXED });
    mm.mmap({ addr: a + 4 * PAGE, length: 4 * PAGE, prot: RW, flags: PRIVATE | MAP_FIXED });
    expect(layout(mm)).toEqual([[a, a + 8 * PAGE, RW]]);
  });

  it("keeps adjacent mappings apart when protection, MAP_NORESERVE or sharing differ", () => {
    const { mm } = setup();
    const a = 0x7000_0000_0000;
    mm.mmap({ addr: a, length: PAGE, prot: RW, flags: PRIVATE | MAP_FIXED });
    mm.mmap({ addr: a + PAGE, length: PAGE, prot: PROT_READ, flags: PRIVATE | MAP_FIXED });
    mm.mmap({
      addr: a + 2 * PAGE,
      length: PAGE,
      prot: PROT_READ,
      flags: PRIVATE | MAP_FIXED | MAP_NORESERVE,
    });
    mm.mmap({ addr: a + 3 * PAGE, length: PAGE, prot: PROT_READ, flags: 0x21 | MAP_FIXED });
    mm.mmap({ addr: a + 4 * PAGE, length: PAGE, prot: PROT_READ, flags: 0x21 | MAP_FIXED });
    expect(mm.vmas.size).toBe(5);
  });

  it("splits a VMA in three for an mprotect of its middle and merges it back when the old protection returns", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 8 * PAGE);
    p.writeStamp(a, 8 * PAGE, 1);
    mm.mprotect(a + 2 * PAGE, 3 * PAGE, PROT_READ);
    expect(layout(mm)).toEqual([
      [a, a + 2 * PAGE, RW],
      [a + 2 * PAGE, a + 5 * PAGE, PROT_READ],
      [a + 5 * PAGE, a + 8 * PAGE, RW],
    ]);
    mm.mprotect(a + 2 * PAGE, 3 * PAGE, RW);
    expect(layout(mm)).toEqual([[a, a + 8 * PAGE, RW]]);
  });

  it("does not merge back a piece made read-only before its first fault once both pieces faulted", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 8 * PAGE);
    // Read-only without an anon_vma, the piece loses VM_ACCOUNT. That flag is not an access
    // flag, so neither piece lends the other its anon_vma on the first fault, and with two
    // anon_vmas they cannot merge when the piece is writable (and accounted) again.
    mm.mprotect(a + 4 * PAGE, 4 * PAGE, PROT_READ);
    expect(mm.findVma(a + 4 * PAGE)!.account).toBe(false);
    p.writeStamp(a, PAGE, 1);
    p.readPageHash(a + 4 * PAGE);
    mm.mprotect(a + 4 * PAGE, 4 * PAGE, RW);
    expect(mm.findVma(a + 4 * PAGE)!.account).toBe(true);
    expect(layout(mm)).toEqual([
      [a, a + 4 * PAGE, RW],
      [a + 4 * PAGE, a + 8 * PAGE, RW],
    ]);
  });

  it("merges back a piece made inaccessible and writable again while it was never faulted", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 8 * PAGE);
    mm.mprotect(a + 4 * PAGE, 4 * PAGE, PROT_NONE);
    p.writeStamp(a, PAGE, 1);
    mm.mprotect(a + 4 * PAGE, 4 * PAGE, RW);
    expect(layout(mm)).toEqual([[a, a + 8 * PAGE, RW]]);
  });

  it("keeps VM_ACCOUNT on a piece made read-only after a fault, which then merges back", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 8 * PAGE);
    p.writeStamp(a, PAGE, 1);
    mm.mprotect(a + 4 * PAGE, 4 * PAGE, PROT_READ);
    expect(mm.findVma(a + 4 * PAGE)!.account).toBe(true);
    p.readPageHash(a + 4 * PAGE);
    mm.mprotect(a + 4 * PAGE, 4 * PAGE, RW);
    expect(layout(mm)).toEqual([[a, a + 8 * PAGE, RW]]);
  });

  it("accounts private writable mappings only, and a read-only one once mprotect makes it writable", () => {
    const { p, mm } = setup();
    const rw = mmapPrivate(p, 4 * PAGE);
    const ro = mmapPrivate(p, 4 * PAGE, PROT_READ);
    const sh = mmapShared(p, 4 * PAGE);
    const nr = mm.mmap({ length: 4 * PAGE, prot: RW, flags: PRIVATE | MAP_NORESERVE });
    expect([rw, ro, sh, nr].map((x) => mm.findVma(x)!.account)).toEqual([true, false, false, false]);
    mm.mprotect(ro, 4 * PAGE, RW);
    expect(mm.findVma(ro)!.account).toBe(true);
  });

  it("does not merge a forked child's faulted VMA with a new mapping next to it", () => {
    const { p } = setup();
    const a = p.mm.mmap({ addr: 0x7000_0000_0000, length: 4 * PAGE, prot: RW, flags: PRIVATE | MAP_FIXED });
    p.writeStamp(a, PAGE, 1);
    const c = p.fork();
    // The child's VMA links to the parent's anon_vma as well as its own (not a singular chain).
    c.mm.mmap({ addr: a + 4 * PAGE, length: 4 * PAGE, prot: RW, flags: PRIVATE | MAP_FIXED });
    expect(c.mm.vmas.size).toBe(2);
    // The parent's VMA has only its own anon_vma and merges.
    p.mm.mmap({ addr: a + 4 * PAGE, length: 4 * PAGE, prot: RW, flags: PRIVATE | MAP_FIXED });
    expect(p.mm.vmas.size).toBe(1);
  });

  it("keeps shared mappings of one object mergeable after a split", () => {
    const { p, mm } = setup();
    const a = mmapShared(p, 6 * PAGE);
    p.writeStamp(a, 6 * PAGE, 3);
    mm.mprotect(a + 2 * PAGE, 2 * PAGE, PROT_NONE);
    expect(mm.vmas.size).toBe(3);
    mm.mprotect(a + 2 * PAGE, 2 * PAGE, RW);
    expect(layout(mm)).toEqual([[a, a + 6 * PAGE, RW]]);
    expect(mm.findVma(a)!.shmem!.users).toBe(1);
  });
});

describe("THP advice", () => {
  it("MADV_HUGEPAGE then MADV_NOHUGEPAGE leaves a VM_NOHUGEPAGE VMA that does not merge with unadvised neighbours", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 6 * PAGE);
    mm.madvise(a + 2 * PAGE, 2 * PAGE, MADV_HUGEPAGE);
    mm.madvise(a + 2 * PAGE, 2 * PAGE, MADV_NOHUGEPAGE);
    expect(mm.vmas.toArray().map((v) => v.thpAdvice)).toEqual([
      THP_ADVICE_NONE,
      THP_ADVICE_NOHUGEPAGE,
      THP_ADVICE_NONE,
    ]);
  });

  it("MADV_HUGEPAGE over a whole VMA changes its advice without splitting it", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 2 * MiB);
    mm.madvise(a, 2 * MiB, MADV_HUGEPAGE);
    expect(mm.vmas.size).toBe(1);
    expect(mm.findVma(a)!.thpAdvice).toBe(THP_ADVICE_HUGEPAGE);
  });

  it("with thp=madvise, only MADV_HUGEPAGE ranges get a THP on a write fault", () => {
    const { m, p } = setup({ thp: "madvise" });
    const plain = mmapPrivate(p, HPAGE_PMD_SIZE);
    p.writeStamp(plain, PAGE, 1);
    expect(m.stats.faultThp).toBe(0);
    const huge = mmapHuge(p);
    p.writeStamp(huge, PAGE, 1);
    expect(m.stats.faultThp).toBe(1);
    expect(hugePmdAt(p.mm, huge)).not.toBeNull();
  });

  it("with thp=always, every aligned 2 MiB range gets a THP unless MADV_NOHUGEPAGE says otherwise", () => {
    const { m, p, mm } = setup({ thp: "always" });
    const a = mmapPrivate(p, 2 * HPAGE_PMD_SIZE);
    expect(a % HPAGE_PMD_SIZE).toBe(0);
    mm.madvise(a + HPAGE_PMD_SIZE, HPAGE_PMD_SIZE, MADV_NOHUGEPAGE);
    p.writeStamp(a, PAGE, 1);
    p.writeStamp(a + HPAGE_PMD_SIZE, PAGE, 1);
    expect(m.stats.faultThp).toBe(1);
    expect(hugePmdAt(mm, a)).not.toBeNull();
    expect(hugePmdAt(mm, a + HPAGE_PMD_SIZE)).toBeNull();
  });

  it("with thp=never, MADV_HUGEPAGE has no effect on faults", () => {
    const { m, p } = setup({ thp: "never" });
    const a = mmapPrivate(p, 2 * HPAGE_PMD_SIZE);
    p.mm.madvise(a, 2 * HPAGE_PMD_SIZE, MADV_HUGEPAGE);
    p.writeStamp(a, 2 * HPAGE_PMD_SIZE, 1);
    expect(m.stats.faultThp).toBe(0);
    expect(m.usedFrames).toBe(1024);
  });

  it("gives no THP where the aligned 2 MiB around the fault is not inside one VMA", () => {
    const { m, p, mm } = setup();
    const base = mmapHuge(p, 2 * HPAGE_PMD_SIZE);
    mm.munmap(base, 2 * HPAGE_PMD_SIZE);
    // 2 MiB long but starting one page past a 2 MiB boundary.
    const a = mm.mmap({ addr: base + PAGE, length: HPAGE_PMD_SIZE, prot: RW, flags: PRIVATE | MAP_FIXED });
    mm.madvise(a, HPAGE_PMD_SIZE, MADV_HUGEPAGE);
    p.writeStamp(a, HPAGE_PMD_SIZE, 1);
    expect(m.stats.faultThp).toBe(0);
    expect(m.usedFrames).toBe(512);
  });

  it("leaves a VMA and its THP alone when mprotect asks for the protection it already has", () => {
    const { m, p, mm } = setup();
    const a = mmapHuge(p);
    p.writeStamp(a, HPAGE_PMD_SIZE, 4);
    mm.mprotect(a + HPAGE_PMD_SIZE / 2, PAGE, RW);
    expect(m.stats.thpSplitPmd).toBe(0);
    expect(hugePmdAt(mm, a)).not.toBeNull();
    expect(layout(mm)).toEqual([[a, a + HPAGE_PMD_SIZE, RW]]);
  });

  it("splits a huge PMD that a VMA split (MADV_NOHUGEPAGE on half) cuts through", () => {
    const { m, p, mm } = setup();
    const a = mmapHuge(p);
    p.writeStamp(a, HPAGE_PMD_SIZE, 4);
    mm.madvise(a + HPAGE_PMD_SIZE / 2, HPAGE_PMD_SIZE / 2, MADV_NOHUGEPAGE);
    // vma_adjust_trans_huge: no huge PMD may straddle a VMA boundary.
    expect(m.stats.thpSplitPmd).toBe(1);
    expect(hugePmdAt(mm, a)).toBeNull();
    expect(p.readPageHash(a + HPAGE_PMD_SIZE - PAGE)).toBe(p.readPageHash(a));
  });
});
