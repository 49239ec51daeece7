import { describe, expect, it } from "vitest";
import {
  contentDigest,
  type DevicePagemapOps,
  ENTRY_DEVICE_PRIVATE,
  ENTRY_KIND_MASK,
  ENTRY_MIGRATION,
  HPAGE_PMD_SIZE,
  MADV_COLLAPSE,
  MADV_FREE,
  MADV_HUGEPAGE,
  MADV_PAGEOUT,
  Machine,
  MIGRATE_PFN_DEVICE,
  MIGRATE_PFN_VALID,
  MIGRATE_VMA_SELECT_SYSTEM,
  MigrateVma,
  type Mm,
  MmuNotifyEvent,
  MREMAP_DONTUNMAP,
  MREMAP_FIXED,
  MREMAP_MAYMOVE,
  migrateVmaFinalize,
  migrateVmaPages,
  migrateVmaSetup,
  VM_FAULT_SIGBUS,
} from "../src/index.js";
import {
  expectNoFrameReferenced,
  hugePmdAt,
  mmapHuge,
  mmapPrivate,
  mmapShared,
  PAGE,
  PRIVATE,
  pteAt,
  RecordingFakeNotifier,
  RW,
  thrown,
} from "./helpers.js";

const { UNMAP, CLEAR } = MmuNotifyEvent;

function setup(contentMode: "tag" | "bytes" = "tag") {
  const m = new Machine({ contentMode, memoryBytes: 64 * 1024 * 1024 });
  const p = m.createProcess();
  return { m, p, mm: p.mm };
}

/**
 * A fake device-memory owner: order-0 device pages with reference counts and content hashes; a
 * CPU fault on one of its pages is recorded and refused (SIGBUS), so a test sees which address
 * and device page the fault named.
 */
class RecordingFakeDevicePagemap implements DevicePagemapOps {
  readonly name = "recording-fake-device";
  readonly refs = new Int32Array(64);
  readonly hashes = new Uint32Array(64);
  readonly faults: [number, number][] = [];
  migrateToRam(_mm: unknown, _vma: unknown, va: number, dpfn: number): number {
    this.faults.push([va, dpfn]);
    return VM_FAULT_SIGBUS;
  }
  pageGet(dpfn: number, nr = 1): void {
    this.refs[dpfn] += nr;
  }
  pagePut(dpfn: number): void {
    this.refs[dpfn]--;
  }
  folioRefs(dpfn: number): number {
    return this.refs[dpfn];
  }
  folioSplit(): boolean {
    return true;
  }
  pageHash(dpfn: number): number {
    return this.hashes[dpfn];
  }
}

/** Migrate the `n` pages at `va` of `mm` to device pages 1..n of `owner`. */
function migrateToDevice(
  mm: Mm,
  dev: RecordingFakeDevicePagemap,
  owner: number,
  va: number,
  n: number,
): void {
  const args = new MigrateVma(mm, va, va + n * PAGE, owner, MIGRATE_VMA_SELECT_SYSTEM);
  migrateVmaSetup(args);
  for (let i = 0; i < n; i++) {
    dev.hashes[i + 1] = mm.machine.pool.content.hash(args.src[i]);
    dev.refs[i + 1] = 1; // the allocation's reference, which the migration hands over
    args.dst[i] = i + 1;
    args.dstFlags[i] = MIGRATE_PFN_VALID | MIGRATE_PFN_DEVICE;
  }
  migrateVmaPages(args);
  migrateVmaFinalize(args);
}

describe("mremap", () => {
  it("sends UNMAP over the moved source range, and munmap's UNMAP for a replaced destination", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 8 * PAGE);
    const b = mmapPrivate(p, 8 * PAGE);
    p.writeStamp(a, 8 * PAGE, 1);
    p.writeStamp(b, 8 * PAGE, 2);
    const src = new RecordingFakeNotifier();
    const dst = new RecordingFakeNotifier();
    mm.notifiers.insert(a, 8 * PAGE, src);
    mm.notifiers.insert(b, 8 * PAGE, dst);
    expect(mm.mremap(a, 4 * PAGE, 4 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, b + 2 * PAGE)).toBe(b + 2 * PAGE);
    expect(dst.events).toEqual([[UNMAP, b + 2 * PAGE, b + 6 * PAGE]]);
    // move_page_tables, then the unmap of the emptied source (unmap_region notifies it too).
    expect(src.events).toEqual([
      [UNMAP, a, a + 4 * PAGE],
      [UNMAP, a, a + 4 * PAGE],
    ]);
  });

  it("sends UNMAP over the tail a shrink gives up, and nothing for a grow in place", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 8 * PAGE);
    p.writeStamp(a, 8 * PAGE, 1);
    mm.munmap(a + 8 * PAGE, 8 * PAGE);
    const fake = new RecordingFakeNotifier();
    mm.notifiers.insert(a, 16 * PAGE, fake);
    expect(mm.mremap(a, 8 * PAGE, 4 * PAGE, 0)).toBe(a);
    expect(fake.events).toEqual([[UNMAP, a + 4 * PAGE, a + 8 * PAGE]]);
    fake.clear();
    expect(mm.mremap(a, 4 * PAGE, 12 * PAGE, 0)).toBe(a);
    expect(fake.events).toEqual([]);
    expect(mm.findVma(a + 11 * PAGE)).not.toBeNull();
  });

  it("moves pages with their contents and frames in both content modes, taking no faults", () => {
    const digests = (["tag", "bytes"] as const).map((mode) => {
      const { m, p, mm } = setup(mode);
      const a = mmapHuge(p, 2 * HPAGE_PMD_SIZE);
      p.writeStamp(a, HPAGE_PMD_SIZE, 3);
      p.writeStamp(a + HPAGE_PMD_SIZE, 5 * PAGE, 4);
      const hashes = [0, 100, 511, 512, 516].map((i) => p.readPageHash(a + i * PAGE));
      const head = hugePmdAt(mm, a)!.pfn;
      const faults = p.minorFaults;
      const n = mm.mremap(a, 2 * HPAGE_PMD_SIZE, 2 * HPAGE_PMD_SIZE, MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
      expect(n).not.toBe(a);
      expect(n % HPAGE_PMD_SIZE).toBe(0);
      expect(hugePmdAt(mm, n)!.pfn).toBe(head);
      expect([0, 100, 511, 512, 516].map((i) => p.readPageHash(n + i * PAGE))).toEqual(hashes);
      expect(p.minorFaults).toBe(faults);
      // DONTUNMAP: the old range is mapped and empty.
      expect(mm.findVma(a)).not.toBeNull();
      expect(pteAt(mm, a + 512 * PAGE)).toBeNull();
      expect(p.readPageHash(a)).toBe(0);
      const d = contentDigest(mm);
      p.exit();
      expectNoFrameReferenced(m);
      return d;
    });
    expect(digests[0]).toBe(digests[1]);
  });

  it("moves device-private entries with the page table: the page stays on its device at the new address", () => {
    const { m, p, mm } = setup();
    const dev = new RecordingFakeDevicePagemap();
    const owner = m.registerDevicePagemap(dev);
    const a = mmapPrivate(p, 8 * PAGE);
    p.writeStamp(a, 8 * PAGE, 9);
    migrateToDevice(mm, dev, owner, a + 2 * PAGE, 2);
    expect(pteAt(mm, a + 2 * PAGE)!.flags & ENTRY_KIND_MASK).toBe(ENTRY_DEVICE_PRIVATE);
    const rss = mm.rssDevice;
    const dst = mmapPrivate(p, 64 * PAGE) + 8 * PAGE;
    const n = mm.mremap(a, 8 * PAGE, 8 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
    expect(n).toBe(dst);
    expect(pteAt(mm, a + 2 * PAGE)).toBeNull();
    const e = pteAt(mm, n + 3 * PAGE)!;
    expect(e.flags & ENTRY_KIND_MASK).toBe(ENTRY_DEVICE_PRIVATE);
    expect(e.pfn).toBe(2);
    expect(dev.refs[1]).toBe(1);
    expect(dev.refs[2]).toBe(1);
    expect(mm.rssDevice).toBe(rss);
    expect(thrown(() => p.readPageHash(n + 3 * PAGE)).message).toMatch(/SIGBUS/);
    expect(dev.faults).toEqual([[n + 3 * PAGE, 2]]);
    p.exit();
    expect(dev.refs[1] + dev.refs[2]).toBe(0);
    expectNoFrameReferenced(m);
  });

  it("leaves device-private entries alone on MADV_FREE and MADV_PAGEOUT, which succeed (hmm-tests migrate_anon_huge_free)", () => {
    const { m, p, mm } = setup();
    const dev = new RecordingFakeDevicePagemap();
    const owner = m.registerDevicePagemap(dev);
    const a = mmapPrivate(p, 8 * PAGE);
    p.writeStamp(a, 8 * PAGE, 9);
    migrateToDevice(mm, dev, owner, a, 4);
    mm.madvise(a, 8 * PAGE, MADV_FREE);
    mm.madvise(a, 8 * PAGE, MADV_PAGEOUT);
    for (let i = 0; i < 4; i++) {
      const e = pteAt(mm, a + i * PAGE)!;
      expect(e.flags & ENTRY_KIND_MASK).toBe(ENTRY_DEVICE_PRIVATE);
      expect(e.pfn).toBe(i + 1);
    }
    for (let i = 4; i < 8; i++) expect(pteAt(mm, a + i * PAGE)).toBeNull();
    p.exit();
    expectNoFrameReferenced(m);
  });

  it("finds a forked page through its linear index after the child moved it", () => {
    const { m, p, mm } = setup();
    const a = mmapPrivate(p, 8 * PAGE);
    p.writeStamp(a, 8 * PAGE, 1);
    const far = mmapPrivate(p, 64 * PAGE) + 16 * PAGE;
    const c = p.fork();
    const b = c.mm.mremap(a, 8 * PAGE, 8 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, far);
    expect(b).toBe(far);
    expect(pteAt(c.mm, a + PAGE)).toBeNull();
    expect(pteAt(c.mm, b + PAGE)!.pfn).toBe(pteAt(mm, a + PAGE)!.pfn);
    const args = new MigrateVma(mm, a + PAGE, a + 2 * PAGE, 1, MIGRATE_VMA_SELECT_SYSTEM);
    migrateVmaSetup(args);
    // try_to_migrate reached the child's mapping at its new address.
    expect(pteAt(c.mm, b + PAGE)!.flags & ENTRY_KIND_MASK).toBe(ENTRY_MIGRATION);
    migrateVmaPages(args);
    migrateVmaFinalize(args);
    expect(pteAt(c.mm, b + PAGE)!.pfn).toBe(pteAt(mm, a + PAGE)!.pfn);
    c.exit();
    p.exit();
    expectNoFrameReferenced(m);
  });

  it("maps nothing past the end of a shared mapping's object after a grow: a touch there is SIGBUS", () => {
    const { p, mm } = setup();
    const s = mmapShared(p, 4 * PAGE);
    p.writeStamp(s, 4 * PAGE, 1);
    expect(mm.mremap(s, 4 * PAGE, 8 * PAGE, 0)).toBe(s);
    expect(thrown(() => p.readPageHash(s + 5 * PAGE)).message).toMatch(/SIGBUS/);
    expect(pteAt(mm, s + 5 * PAGE)).toBeNull();
    // The pages inside the object are still there, read through fault-around.
    expect(p.readPageHash(s + 3 * PAGE)).not.toBe(0);
  });

  it("keeps the moved VMA's anon_vma and page offset, so it merges only where the offsets line up", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 8 * PAGE);
    p.writeStamp(a, 8 * PAGE, 1);
    const before = mm.findVma(a)!;
    const far = mm.mmap({ addr: 0x1000_0000_0000, length: 64 * PAGE, prot: RW, flags: PRIVATE });
    expect(far).toBe(0x1000_0000_0000);
    mm.munmap(far + 8 * PAGE, 8 * PAGE);
    // Moved next to an unrelated VMA (whose pgoff does not continue it): no merge.
    mm.mremap(a + 4 * PAGE, 4 * PAGE, 4 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, far + 4 * PAGE);
    const moved = mm.findVma(far + 4 * PAGE)!;
    expect(moved.anonVma).toBe(before.anonVma);
    expect(moved.pgoff).toBe((a + 4 * PAGE) / PAGE);
    expect(moved.start).toBe(far + 4 * PAGE);
    expect(mm.findVma(far)!.end).toBe(far + 4 * PAGE);
    // Moved back where it came from: one VMA again.
    mm.mremap(far + 4 * PAGE, 4 * PAGE, 4 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, a + 4 * PAGE);
    const back = mm.findVma(a)!;
    expect([back.start, back.end]).toEqual([a, a + 8 * PAGE]);
    expect(p.readPageHash(a + 5 * PAGE)).not.toBe(0);
  });

  it("unlinks the anon_vma of a VMA that MREMAP_DONTUNMAP emptied whole", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 8 * PAGE);
    p.writeStamp(a, 8 * PAGE, 1);
    const id = mm.findVma(a)!.anonVma;
    const n = mm.mremap(a, 8 * PAGE, 8 * PAGE, MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
    expect(mm.findVma(n)!.anonVma).toBe(id);
    expect(mm.findVma(a)!.anonVma).toBe(0);
    p.touch(a, PAGE, true);
    expect(mm.findVma(a)!.anonVma).not.toBe(0);
  });

  it("rejects bad arguments with the kernel's errno and changes nothing", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 8 * PAGE);
    p.writeStamp(a, 8 * PAGE, 1);
    expect(thrown(() => mm.mremap(a + 1, PAGE, PAGE, 0)).errno).toBe("EINVAL");
    expect(thrown(() => mm.mremap(a, PAGE, PAGE, 8)).errno).toBe("EINVAL");
    expect(thrown(() => mm.mremap(a, PAGE, 0, 0)).errno).toBe("EINVAL");
    expect(thrown(() => mm.mremap(a, PAGE, PAGE, MREMAP_FIXED, a + 16 * PAGE)).errno).toBe("EINVAL");
    expect(thrown(() => mm.mremap(a, 0, PAGE, MREMAP_MAYMOVE)).errno).toBe("EINVAL");
    expect(thrown(() => mm.mremap(a + 64 * PAGE, PAGE, 2 * PAGE, MREMAP_MAYMOVE)).errno).toBe("EFAULT");
    expect(thrown(() => mm.mremap(a, 16 * PAGE, 32 * PAGE, MREMAP_MAYMOVE)).errno).toBe("EFAULT");
    expect(thrown(() => mm.mremap(a, 4 * PAGE, 8 * PAGE, 0)).errno).toBe("ENOMEM");
    for (let i = 0; i < 8; i++) expect(pteAt(mm, a + i * PAGE)).not.toBeNull();
  });
});

describe("MADV_COLLAPSE", () => {
  it("sends CLEAR over the 2 MiB it collapses and copies the contents into new frames", () => {
    const digests = (["tag", "bytes"] as const).map((mode) => {
      const { m, p, mm } = setup(mode);
      const a = mmapPrivate(p, 4 * HPAGE_PMD_SIZE);
      const h = a + ((HPAGE_PMD_SIZE - (a % HPAGE_PMD_SIZE)) % HPAGE_PMD_SIZE);
      p.writeStamp(h, 64 * PAGE, 5);
      p.readPageHash(h + 100 * PAGE);
      const old = pteAt(mm, h)!.pfn;
      const hashes = [0, 63, 64, 100].map((i) => p.readPageHash(h + i * PAGE));
      mm.madvise(h, HPAGE_PMD_SIZE, MADV_HUGEPAGE);
      const fake = new RecordingFakeNotifier();
      mm.notifiers.insert(h, HPAGE_PMD_SIZE, fake);
      mm.madvise(h, HPAGE_PMD_SIZE, MADV_COLLAPSE);
      expect(fake.events).toEqual([[CLEAR, h, h + HPAGE_PMD_SIZE]]);
      const pmd = hugePmdAt(mm, h)!;
      expect(pmd.pfn).not.toBe(old);
      expect([0, 63, 64, 100].map((i) => p.readPageHash(h + i * PAGE))).toEqual(hashes);
      expect(mm.rssAnon).toBe(512);
      const d = contentDigest(mm);
      p.exit();
      expectNoFrameReferenced(m);
      return d;
    });
    expect(digests[0]).toBe(digests[1]);
  });

  it("gives the collapsing process its own copy after fork; the other keeps the old pages", () => {
    const { m, p, mm } = setup();
    const h = mmapHuge(p);
    mm.madvise(h, HPAGE_PMD_SIZE, 15); // NOHUGEPAGE: 4 KiB pages first
    p.writeStamp(h, 16 * PAGE, 6);
    mm.madvise(h, HPAGE_PMD_SIZE, MADV_HUGEPAGE);
    const c = p.fork();
    const old = pteAt(c.mm, h)!.pfn;
    c.mm.madvise(h, HPAGE_PMD_SIZE, MADV_COLLAPSE);
    expect(hugePmdAt(c.mm, h)).not.toBeNull();
    expect(pteAt(mm, h)!.pfn).toBe(old);
    expect(m.pool.mapcount[old]).toBe(1);
    expect(c.readPageHash(h + 3 * PAGE)).toBe(p.readPageHash(h + 3 * PAGE));
    c.exit();
    p.exit();
    expectNoFrameReferenced(m);
  });

  it("fails with EAGAIN and leaves the pages mapped when one has an extra reference", () => {
    const { m, p, mm } = setup();
    const h = mmapHuge(p);
    mm.madvise(h, HPAGE_PMD_SIZE, 15);
    p.writeStamp(h, 4 * PAGE, 1);
    mm.madvise(h, HPAGE_PMD_SIZE, MADV_HUGEPAGE);
    const pinned = pteAt(mm, h + PAGE)!.pfn;
    m.pool.get(pinned);
    expect(thrown(() => mm.madvise(h, HPAGE_PMD_SIZE, MADV_COLLAPSE)).errno).toBe("EAGAIN");
    expect(pteAt(mm, h + PAGE)!.pfn).toBe(pinned);
    m.pool.put(pinned);
    mm.madvise(h, HPAGE_PMD_SIZE, MADV_COLLAPSE);
    expect(hugePmdAt(mm, h)).not.toBeNull();
  });
});
