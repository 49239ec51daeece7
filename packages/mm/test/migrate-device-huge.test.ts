import { describe, expect, it } from "vitest";
import {
  ContentStore,
  contentDigest,
  type DevicePagemapOps,
  ENTRY_DEVICE_PRIVATE,
  ENTRY_KIND_MASK,
  ENTRY_MIGRATION,
  ENTRY_PRESENT,
  ENTRY_WRITE,
  entryOwner,
  HPAGE_PMD_NR,
  HPAGE_PMD_SIZE,
  MADV_DONTNEED,
  Machine,
  MIGRATE_PFN_COMPOUND,
  MIGRATE_PFN_DEVICE,
  MIGRATE_PFN_MIGRATE,
  MIGRATE_PFN_VALID,
  MIGRATE_PFN_WRITE,
  MIGRATE_VMA_SELECT_COMPOUND,
  MIGRATE_VMA_SELECT_DEVICE_PRIVATE,
  MIGRATE_VMA_SELECT_SYSTEM,
  MigrateVma,
  type Mm,
  migrateVmaFinalize,
  migrateVmaPages,
  migrateVmaSetup,
  PROT_READ,
  type Process,
  VM_FAULT_SIGBUS,
  type Vma,
} from "../src/index.js";
import { expectNoFrameReferenced, hugePmdAt, mmapHuge, PAGE, pteAt } from "./helpers.js";

const NR = HPAGE_PMD_NR;

/**
 * A fake owner of device memory for mm's own tests (no HMM core): 4 blocks of 512 device frames,
 * a refcount per folio at its head, order-9 folios per block, contents in a ContentStore. CPU
 * faults on its pages are recorded and answered with SIGBUS.
 */
class FakeDevicePagemap implements DevicePagemapOps<Mm> {
  readonly name = "fake-device";
  readonly refs = new Int32Array(4 * NR);
  readonly huge = new Uint8Array(4);
  readonly content = new ContentStore("bytes", 4 * NR);
  readonly faults: { va: number; dpfn: number }[] = [];
  readonly splits: number[] = [];
  private nextBlock = 0;
  private nextSmall = 3 * NR;

  head(d: number): number {
    return this.huge[(d / NR) | 0] ? d - (d % NR) : d;
  }
  allocHuge(): number {
    const b = this.nextBlock++;
    this.huge[b] = 1;
    this.refs[b * NR] = 1;
    return b * NR;
  }
  alloc(): number {
    const d = this.nextSmall++;
    this.refs[d] = 1;
    return d;
  }
  migrateToRam(_mm: Mm, _vma: Vma, va: number, dpfn: number): number {
    this.faults.push({ va, dpfn });
    return VM_FAULT_SIGBUS;
  }
  pageGet(dpfn: number, nr = 1): void {
    this.refs[this.head(dpfn)] += nr;
  }
  pagePut(dpfn: number): void {
    const h = this.head(dpfn);
    if (--this.refs[h] === 0 && this.huge[(h / NR) | 0]) this.huge[(h / NR) | 0] = 0;
  }
  folioRefs(dpfn: number): number {
    return this.refs[this.head(dpfn)];
  }
  folioSplit(dpfn: number): boolean {
    const h = this.head(dpfn);
    const b = (h / NR) | 0;
    if (!this.huge[b]) return true;
    if (this.refs[h] !== 1) return false;
    this.huge[b] = 0;
    this.refs.fill(1, h, h + NR);
    this.splits.push(h);
    return true;
  }
  pageHash(dpfn: number): number {
    return this.content.hash(dpfn);
  }
  /** Frames (of the 4 blocks) with references. */
  get framesInUse(): number {
    let n = 0;
    for (let d = 0; d < this.refs.length; d++) {
      if (this.refs[d] === 0) continue;
      n += this.huge[(d / NR) | 0] && d % NR === 0 ? NR : 1;
    }
    return n;
  }
}

/** Byte equality without vitest's slow deep comparison of large arrays. */
function expectSameBytes(actual: Uint8Array, expected: Uint8Array): void {
  expect(actual.length).toBe(expected.length);
  expect(Buffer.compare(actual, expected)).toBe(0);
}

/** The 2 MiB of the device folio headed by `head`. */
function readDevice(dev: FakeDevicePagemap, head: number): Uint8Array {
  const out = new Uint8Array(HPAGE_PMD_SIZE);
  for (let j = 0; j < NR; j++) dev.content.readBytes(head + j, 0, out, j * PAGE, PAGE);
  return out;
}

function setup() {
  const m = new Machine({ contentMode: "bytes", thp: "madvise", memoryBytes: 32 * 1024 * 1024 });
  const dev = new FakeDevicePagemap();
  const owner = m.registerDevicePagemap(dev);
  const p = m.createProcess();
  return { m, dev, owner, p };
}

function thpWithData(p: Process): { base: number; data: Uint8Array } {
  const base = mmapHuge(p);
  const data = new Uint8Array(HPAGE_PMD_SIZE);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 12)) & 255;
  p.write(base, data);
  expect(hugePmdAt(p.mm, base)!.flags & ENTRY_KIND_MASK).toBe(ENTRY_PRESENT);
  return { base, data };
}

/** Migrate the THP at `base` to one order-9 device folio of `dev`; returns its head. */
function migrateThpToDevice(p: Process, dev: FakeDevicePagemap, owner: number, base: number): number {
  const pool = p.machine.pool;
  const args = new MigrateVma(
    p.mm,
    base,
    base + HPAGE_PMD_SIZE,
    owner,
    MIGRATE_VMA_SELECT_SYSTEM | MIGRATE_VMA_SELECT_COMPOUND,
  );
  migrateVmaSetup(args);
  const head = dev.allocHuge();
  for (let j = 0; j < NR; j++) pool.content.copyTo(args.src[0] + j, dev.content, head + j);
  args.dst[0] = head;
  args.dstFlags[0] = MIGRATE_PFN_VALID | MIGRATE_PFN_DEVICE | MIGRATE_PFN_COMPOUND;
  migrateVmaPages(args);
  migrateVmaFinalize(args);
  return head;
}

describe("migrate_vma with MIGRATE_VMA_SELECT_COMPOUND", () => {
  it("collects a PMD-mapped THP as one compound entry behind a PMD migration entry, and installs an order-9 device-private PMD", () => {
    const { m, dev, owner, p } = setup();
    const { base, data } = thpWithData(p);
    const digest = contentDigest(p.mm);
    const head = m.pool.folioHead(hugePmdAt(p.mm, base)!.pfn);
    const args = new MigrateVma(
      p.mm,
      base,
      base + HPAGE_PMD_SIZE,
      owner,
      MIGRATE_VMA_SELECT_SYSTEM | MIGRATE_VMA_SELECT_COMPOUND,
    );
    migrateVmaSetup(args);
    expect(args.cpages).toBe(1);
    expect(args.src[0]).toBe(head);
    expect(args.srcFlags[0]).toBe(
      MIGRATE_PFN_VALID | MIGRATE_PFN_MIGRATE | MIGRATE_PFN_COMPOUND | MIGRATE_PFN_WRITE,
    );
    expect([...new Set(args.srcFlags.subarray(1))]).toEqual([0]);
    const mig = hugePmdAt(p.mm, base)!;
    expect([mig.flags & ENTRY_KIND_MASK, mig.pfn, mig.flags & ENTRY_WRITE]).toEqual([
      ENTRY_MIGRATION,
      head,
      ENTRY_WRITE,
    ]);
    expect(m.pool.refcount[head]).toBe(1); // the migration's reference; the PMD's went with it
    expect(contentDigest(p.mm)).toBe(digest);
    const dhead = dev.allocHuge();
    for (let j = 0; j < NR; j++) m.pool.content.copyTo(head + j, dev.content, dhead + j);
    args.dst[0] = dhead;
    args.dstFlags[0] = MIGRATE_PFN_VALID | MIGRATE_PFN_DEVICE | MIGRATE_PFN_COMPOUND;
    migrateVmaPages(args);
    expect(args.srcFlags[0] & MIGRATE_PFN_MIGRATE).toBe(MIGRATE_PFN_MIGRATE);
    migrateVmaFinalize(args);
    const e = hugePmdAt(p.mm, base)!;
    expect([e.flags & ENTRY_KIND_MASK, entryOwner(e.flags), e.pfn]).toEqual([
      ENTRY_DEVICE_PRIVATE,
      owner,
      dhead,
    ]);
    expect(e.flags & ENTRY_WRITE).toBe(ENTRY_WRITE);
    expect(dev.refs[dhead]).toBe(1);
    expect(m.usedFrames).toBe(0);
    expect([p.mm.rssAnon, p.mm.rssDevice]).toEqual([0, NR]);
    expect(contentDigest(p.mm)).toBe(digest);
    // A CPU fault reaches the owner with the faulting page of the folio.
    expect(() => p.read(base + 5 * PAGE + 1, 1)).toThrow(/SIGBUS/);
    expect(dev.faults).toEqual([{ va: base + 5 * PAGE, dpfn: dhead + 5 }]);
    expectSameBytes(readDevice(dev, dhead), data);
  });

  it("a pmd_none hole is one compound entry with SELECT_COMPOUND and 512 entries without it", () => {
    const { owner, p } = setup();
    const base = mmapHuge(p);
    const a = new MigrateVma(
      p.mm,
      base,
      base + HPAGE_PMD_SIZE,
      owner,
      MIGRATE_VMA_SELECT_SYSTEM | MIGRATE_VMA_SELECT_COMPOUND,
    );
    migrateVmaSetup(a);
    expect([a.cpages, a.srcFlags[0], a.srcFlags[1]]).toEqual([
      1,
      MIGRATE_PFN_MIGRATE | MIGRATE_PFN_COMPOUND,
      0,
    ]);
    migrateVmaPages(a);
    migrateVmaFinalize(a);
    const b = new MigrateVma(p.mm, base, base + HPAGE_PMD_SIZE, owner, MIGRATE_VMA_SELECT_SYSTEM);
    migrateVmaSetup(b);
    expect(b.cpages).toBe(NR);
    // Nor is a range that does not cover the whole PMD compound.
    const c = new MigrateVma(
      p.mm,
      base,
      base + HPAGE_PMD_SIZE - PAGE,
      owner,
      MIGRATE_VMA_SELECT_SYSTEM | MIGRATE_VMA_SELECT_COMPOUND,
    );
    migrateVmaSetup(c);
    expect(c.cpages).toBe(NR - 1);
  });

  it("a compound source given base-page destinations is split first (migrate_vma_split_unmapped_folio)", () => {
    const { m, dev, owner, p } = setup();
    const { base, data } = thpWithData(p);
    const args = new MigrateVma(
      p.mm,
      base,
      base + HPAGE_PMD_SIZE,
      owner,
      MIGRATE_VMA_SELECT_SYSTEM | MIGRATE_VMA_SELECT_COMPOUND,
    );
    migrateVmaSetup(args);
    const head = args.src[0];
    for (let j = 0; j < NR; j++) {
      const d = dev.alloc();
      if (j >= NR / 2) break; // the driver ran out after half
      m.pool.content.copyTo(head + j, dev.content, d);
      args.dst[j] = d;
      args.dstFlags[j] = MIGRATE_PFN_VALID | MIGRATE_PFN_DEVICE;
    }
    migrateVmaPages(args);
    expect(args.srcFlags[0] & MIGRATE_PFN_COMPOUND).toBe(0);
    expect(args.src[7]).toBe(head + 7);
    migrateVmaFinalize(args);
    expect(hugePmdAt(p.mm, base)).toBeNull();
    for (const j of [0, NR / 2 - 1])
      expect(pteAt(p.mm, base + j * PAGE)!.flags & ENTRY_KIND_MASK).toBe(ENTRY_DEVICE_PRIVATE);
    for (const j of [NR / 2, NR - 1]) expect(pteAt(p.mm, base + j * PAGE)!.pfn).toBe(head + j);
    expect(m.pool.isLarge(head)).toBe(false);
    expect(m.usedFrames).toBe(NR / 2);
    expect([p.mm.rssAnon, p.mm.rssDevice]).toEqual([NR / 2, NR / 2]);
    expectSameBytes(p.read(base + (NR / 2) * PAGE, HPAGE_PMD_SIZE / 2), data.subarray(HPAGE_PMD_SIZE / 2));
  });

  it("a partial MADV_DONTNEED while the PMD migration entry is in place splits it; finalize restores the rest as PTEs", () => {
    const { m, owner, p } = setup();
    const { base, data } = thpWithData(p);
    const args = new MigrateVma(
      p.mm,
      base,
      base + HPAGE_PMD_SIZE,
      owner,
      MIGRATE_VMA_SELECT_SYSTEM | MIGRATE_VMA_SELECT_COMPOUND,
    );
    migrateVmaSetup(args);
    const head = args.src[0];
    p.mm.madvise(base, 16 * PAGE, MADV_DONTNEED);
    expect(hugePmdAt(p.mm, base)).toBeNull();
    expect(pteAt(p.mm, base + 16 * PAGE)!.flags & ENTRY_KIND_MASK).toBe(ENTRY_MIGRATION);
    expect(pteAt(p.mm, base)).toBeNull();
    expect(p.mm.rssAnon).toBe(NR - 16);
    migrateVmaPages(args); // no destination: nothing migrates
    migrateVmaFinalize(args);
    expect(pteAt(p.mm, base + 16 * PAGE)!.pfn).toBe(head + 16);
    expect(pteAt(p.mm, base + 16 * PAGE)!.flags & ENTRY_KIND_MASK).toBe(ENTRY_PRESENT);
    expect(m.pool.refcount[head]).toBe(NR - 16);
    expectSameBytes(p.read(base + 16 * PAGE, HPAGE_PMD_SIZE - 16 * PAGE), data.subarray(16 * PAGE));
    p.exit();
    expectNoFrameReferenced(m);
  });

  it("fork copies a device-private PMD read-only into both with one more folio reference; exit drops them", () => {
    const { m, dev, owner, p } = setup();
    const { base } = thpWithData(p);
    const dhead = migrateThpToDevice(p, dev, owner, base);
    const c = p.fork();
    for (const q of [p, c]) {
      const e = hugePmdAt(q.mm, base)!;
      expect([e.flags & ENTRY_KIND_MASK, e.pfn, e.flags & ENTRY_WRITE]).toEqual([
        ENTRY_DEVICE_PRIVATE,
        dhead,
        0,
      ]);
    }
    expect(dev.refs[dhead]).toBe(2);
    expect(c.mm.rssDevice).toBe(NR);
    c.exit();
    expect(dev.refs[dhead]).toBe(1);
    p.exit();
    expect(dev.framesInUse).toBe(0);
    expectNoFrameReferenced(m);
  });

  it("splitting a device-private PMD splits its folio when that PMD is its only user; a shared folio gains 511 references", () => {
    const { m, dev, owner, p } = setup();
    const { base } = thpWithData(p);
    const dhead = migrateThpToDevice(p, dev, owner, base);
    p.mm.munmap(base + HPAGE_PMD_SIZE / 2, HPAGE_PMD_SIZE / 2);
    expect(dev.splits).toEqual([dhead]);
    expect(dev.framesInUse).toBe(NR / 2);
    expect(pteAt(p.mm, base + PAGE)!.pfn).toBe(dhead + 1);
    expect(p.mm.rssDevice).toBe(NR / 2);
    const second = thpWithData(p);
    const h2 = migrateThpToDevice(p, dev, owner, second.base);
    const c = p.fork();
    c.mm.mprotect(second.base, PAGE, PROT_READ);
    expect(dev.folioRefs(h2)).toBe(2 + NR - 1);
    expect(hugePmdAt(p.mm, second.base)!.pfn).toBe(h2);
    c.exit();
    p.exit();
    expect(dev.framesInUse).toBe(0);
    expectNoFrameReferenced(m);
  });

  it("a device-private PMD migrates home whole into a THP with SELECT_DEVICE_PRIVATE|COMPOUND", () => {
    const { m, dev, owner, p } = setup();
    const { base, data } = thpWithData(p);
    const dhead = migrateThpToDevice(p, dev, owner, base);
    const args = new MigrateVma(
      p.mm,
      base,
      base + HPAGE_PMD_SIZE,
      owner,
      MIGRATE_VMA_SELECT_DEVICE_PRIVATE | MIGRATE_VMA_SELECT_COMPOUND,
    );
    migrateVmaSetup(args);
    expect(args.srcFlags[0]).toBe(
      MIGRATE_PFN_VALID | MIGRATE_PFN_MIGRATE | MIGRATE_PFN_DEVICE | MIGRATE_PFN_COMPOUND | MIGRATE_PFN_WRITE,
    );
    expect(hugePmdAt(p.mm, base)!.flags & ENTRY_KIND_MASK).toBe(ENTRY_MIGRATION);
    const thp = m.pool.tryAllocHuge();
    for (let j = 0; j < NR; j++) dev.content.copyTo(dhead + j, m.pool.content, thp + j);
    args.dst[0] = thp;
    args.dstFlags[0] = MIGRATE_PFN_VALID | MIGRATE_PFN_COMPOUND;
    migrateVmaPages(args);
    migrateVmaFinalize(args);
    const e = hugePmdAt(p.mm, base)!;
    expect([e.flags & ENTRY_KIND_MASK, e.pfn]).toEqual([ENTRY_PRESENT, thp]);
    expect(dev.framesInUse).toBe(0);
    expect([p.mm.rssAnon, p.mm.rssDevice]).toEqual([NR, 0]);
    expectSameBytes(p.read(base, HPAGE_PMD_SIZE), data);
    p.exit();
    expectNoFrameReferenced(m);
  });
});
