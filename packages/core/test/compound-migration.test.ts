import {
  type ContentMode,
  contentDigest,
  ENTRY_DEVICE_PRIVATE,
  ENTRY_KIND_MASK,
  ENTRY_PRESENT,
  ENTRY_WRITE,
  entryOwner,
  HPAGE_PMD_SIZE,
  MADV_DONTNEED,
  MADV_FREE,
  MmuNotifyEvent,
  MREMAP_DONTUNMAP,
  MREMAP_FIXED,
  MREMAP_MAYMOVE,
  PROT_READ,
  type Process,
} from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import {
  cpuOpSteps,
  cpuTouchSteps,
  type Device,
  HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL,
  HMM_DMIRROR_PROT_PMD,
  HMM_DMIRROR_PROT_READ,
  HMM_DMIRROR_PROT_WRITE,
  HMM_PFN_DEVICE_PRIVATE,
  HMM_PFN_WRITE,
  type HmmCore,
  hmmPfnToMapOrder,
  Scheduler,
} from "../src/index.js";
import { PAGE, PteOnlyFakeDriver, type RecordingFakeDriver } from "./fakes.js";
import {
  addFake,
  cpuEntry,
  expectBytes,
  expectCoherent,
  expectErrno,
  expectNoLeaks,
  expectZeros,
  MiB,
  makeSystem,
  mmapHuge,
  randomBytes,
} from "./helpers.js";

const NR = 512;
/** DEV_PRIVATE_LOCAL|WRITE|PMD: a writable page of this device's device-private PMD. */
const PROT_DEV_PMD_RW = HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE | HMM_DMIRROR_PROT_PMD;
/** DEV_PRIVATE_LOCAL|WRITE: a writable device-private PTE. */
const PROT_DEV_RW = HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE;

/** A THP system with one device that takes order-9 folios (1024 device pages = 2 blocks unless told). */
function setup(
  opts: { memoryPages?: number; compound?: boolean; mode?: ContentMode; memoryBytes?: number } = {},
) {
  const sys = makeSystem({
    thp: "madvise",
    contentMode: opts.mode ?? "bytes",
    memoryBytes: opts.memoryBytes ?? 64 * MiB,
  });
  const { dev, drv } = addFake<RecordingFakeDriver>(sys.core, "gpu0", undefined, {
    memoryPages: opts.memoryPages ?? 1024,
    compoundMigration: opts.compound ?? true,
  });
  const p = sys.machine.createProcess();
  return { sys, ...sys, dev, drv, p };
}

/** A PMD-aligned THP window written with seeded random bytes; returns its address and data. */
function hugeWithData(p: Process, seed: number, pmds = 1): { base: number; data: Uint8Array } {
  const base = mmapHuge(p, pmds);
  const data = randomBytes(pmds * HPAGE_PMD_SIZE, seed);
  p.write(base, data);
  for (let i = 0; i < pmds; i++) expect(cpuEntry(p.mm, base + i * HPAGE_PMD_SIZE)!.huge).toBe(true);
  return { base, data };
}

/** The PMD at `va` is one device-private PMD of `dev` whose folio starts at a 512-aligned device frame. */
function expectDevicePmd(p: Process, va: number, dev: Device, writable = true): number {
  const e = cpuEntry(p.mm, va)!;
  expect(e.huge).toBe(true);
  expect(e.kind).toBe(ENTRY_DEVICE_PRIVATE);
  expect(entryOwner(e.flags)).toBe(dev.ownerId);
  expect((e.flags & ENTRY_WRITE) !== 0).toBe(writable);
  expect(e.pfn % NR).toBe(0);
  expect(dev.memory.isHuge(e.pfn)).toBe(true);
  return e.pfn;
}

function protBytes(core: HmmCore, dev: Device, p: Process, a: number, n = NR): number[] {
  return [...new Set(core.snapshotProt(dev, p, a, a + n * PAGE))];
}

describe("device-private THP (compoundMigration: whole PMDs as order-9 device folios)", () => {
  it("hmm-tests migrate_anon_huge_fault: a THP migrates as one device-private PMD and a CPU read brings it home as a THP", () => {
    const { sys, core, dev, drv, p } = setup();
    const { base, data } = hugeWithData(p, 33);
    const digest = contentDigest(p.mm);
    const r = core.migrateToDevice(dev, p, base, base + HPAGE_PMD_SIZE);
    expect(r).toEqual({ selected: NR, migrated: NR, allocFailed: 0 });
    const head = expectDevicePmd(p, base, dev);
    expect(dev.memory.used).toBe(NR);
    expect(dev.memory.hugeInUse).toBe(1);
    expect(sys.machine.usedFrames).toBe(0); // the system THP was freed
    expect(p.mm.rssDevice).toBe(NR);
    // One copy per 4 KiB page, into consecutive frames of the one block.
    expect(drv.copiesToDevice.map((c) => c.dpfn)).toEqual(Array.from({ length: NR }, (_, i) => head + i));
    // Reported once, as a PMD with the PMD order and DEVICE_PRIVATE.
    const pmds = drv.mirrorCalls.filter((c) => c.cb === "mirrorPmd");
    expect(pmds.map((c) => [c.va, c.pfn])).toEqual([[base, head]]);
    expect(pmds[0].flags & (HMM_PFN_DEVICE_PRIVATE | HMM_PFN_WRITE)).toBe(
      HMM_PFN_DEVICE_PRIVATE | HMM_PFN_WRITE,
    );
    expect(hmmPfnToMapOrder(pmds[0].flags)).toBe(9);
    expectBytes(drv.deviceRead(p.mm.id, base, HPAGE_PMD_SIZE), data);
    expect(protBytes(core, dev, p, base)).toEqual([PROT_DEV_PMD_RW]);
    const snap = core.snapshot(dev, p, base, base + HPAGE_PMD_SIZE);
    for (let i = 0; i < NR; i++) expect(snap.pfns[i]).toBe(head + i);
    expect(contentDigest(p.mm)).toBe(digest);
    expectCoherent(core, dev);
    // The CPU touches one page in the middle: the whole 2 MiB comes home, PMD-mapped.
    expectBytes(p.read(base + 2048 * 4, 4), data.subarray(2048 * 4, 2048 * 4 + 4));
    const home = cpuEntry(p.mm, base)!;
    expect(home.huge).toBe(true);
    expect(home.kind).toBe(ENTRY_PRESENT);
    expect(home.flags & ENTRY_WRITE).toBe(ENTRY_WRITE);
    expect(dev.stats.compoundToRam).toBe(1);
    expect(drv.copiesFromDevice.length).toBe(NR);
    expect(dev.memory.used).toBe(0);
    expect(p.mm.rssDevice).toBe(0);
    expectBytes(p.read(base, HPAGE_PMD_SIZE), data);
    expect(contentDigest(p.mm)).toBe(digest);
    p.exit();
    expectNoLeaks(sys, [dev]);
  });

  it("hmm-tests migrate_anon_huge_empty: an untouched PMD-aligned 2 MiB hole becomes one zero-filled device-private PMD", () => {
    const { sys, core, dev, drv, p } = setup();
    const base = mmapHuge(p);
    p.mm.mprotect(base, HPAGE_PMD_SIZE, PROT_READ);
    const r = core.migrateToDevice(dev, p, base, base + HPAGE_PMD_SIZE);
    expect(r).toEqual({ selected: NR, migrated: NR, allocFailed: 0 });
    expectDevicePmd(p, base, dev, false);
    expect(drv.copiesToDevice.every((c) => c.spfn === -1)).toBe(true);
    expect(dev.stats.zeroFilledToDevice).toBe(NR);
    expectZeros(drv.deviceRead(p.mm.id, base, HPAGE_PMD_SIZE));
    expect(protBytes(core, dev, p, base)).toEqual([
      HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_READ | HMM_DMIRROR_PROT_PMD,
    ]);
    p.exit();
    expectNoLeaks(sys, [dev]);
  });

  it("hmm-tests migrate_anon_huge_zero: the huge zero page migrates as a hole and reads back as zeros", () => {
    const { sys, core, dev, p } = setup();
    const base = mmapHuge(p);
    expectZeros(p.read(base, 64));
    expect(cpuEntry(p.mm, base)!.huge).toBe(true); // the huge zero page
    const r = core.migrateToDevice(dev, p, base, base + HPAGE_PMD_SIZE);
    expect(r).toEqual({ selected: NR, migrated: NR, allocFailed: 0 });
    expectDevicePmd(p, base, dev);
    expect(dev.stats.zeroFilledToDevice).toBe(NR);
    expectZeros(p.read(base, HPAGE_PMD_SIZE));
    expect(cpuEntry(p.mm, base)!.kind).toBe(ENTRY_PRESENT);
    p.exit();
    expectNoLeaks(sys, [dev]);
  });

  it("hmm-tests migrate_anon_huge_free: MADV_FREE leaves a device-private PMD alone; discarding it frees the device folio at once", () => {
    const { sys, core, dev, drv, p } = setup();
    const { base, data } = hugeWithData(p, 7);
    core.migrateToDevice(dev, p, base, base + HPAGE_PMD_SIZE);
    // madvise_free_huge_pmd skips a non-present PMD: MADV_FREE succeeds and changes nothing.
    p.mm.madvise(base, HPAGE_PMD_SIZE, MADV_FREE);
    expectDevicePmd(p, base, dev);
    expect(protBytes(core, dev, p, base)).toEqual([PROT_DEV_PMD_RW]);
    core.deviceFault(dev, p, base, base + PAGE, false); // its CLEAR dropped the mirror; fault it back
    expectBytes(drv.deviceRead(p.mm.id, base, HPAGE_PMD_SIZE), data);
    drv.clearRecords();
    p.mm.madvise(base, HPAGE_PMD_SIZE, MADV_DONTNEED);
    expect(cpuEntry(p.mm, base)).toBeNull();
    expect(dev.memory.used).toBe(0);
    expect(dev.memory.hugeInUse).toBe(0);
    expect(p.mm.rssDevice).toBe(0);
    expect(drv.invalidations.map((i) => [i.event, i.start, i.end])).toEqual([
      [MmuNotifyEvent.CLEAR, base, base + HPAGE_PMD_SIZE],
    ]);
    expectZeros(p.read(base, PAGE));
    p.exit();
    expectNoLeaks(sys, [dev]);
  });

  it("without compoundMigration the same THP is split and migrated page by page, as before", () => {
    const { sys, core, dev, drv, p } = setup({ compound: false });
    const { base, data } = hugeWithData(p, 33);
    const r = core.migrateToDevice(dev, p, base, base + HPAGE_PMD_SIZE);
    expect(r).toEqual({ selected: NR, migrated: NR, allocFailed: 0 });
    expect(cpuEntry(p.mm, base)!.huge).toBe(false);
    expect(dev.memory.hugeInUse).toBe(0);
    expect(drv.mirrorCalls.some((c) => c.cb === "mirrorPmd")).toBe(false);
    expect(protBytes(core, dev, p, base)).toEqual([PROT_DEV_RW]);
    expectBytes(p.read(base, HPAGE_PMD_SIZE), data);
    p.exit();
    expectNoLeaks(sys, [dev]);
  });

  it("hmm-tests migrate_anon_huge_err: a failed order-9 allocation falls back to 512 device-private PTEs", () => {
    const { sys, core, dev, drv, p } = setup();
    const { base, data } = hugeWithData(p, 36);
    dev.failNextAlloc();
    const r = core.migrateToDevice(dev, p, base, base + HPAGE_PMD_SIZE);
    expect(r).toEqual({ selected: NR, migrated: NR, allocFailed: 0 });
    expect(cpuEntry(p.mm, base)!.huge).toBe(false);
    expect(dev.memory.hugeInUse).toBe(0);
    expect(dev.memory.used).toBe(NR);
    expect(dev.stats.compoundFallbacks).toBe(1);
    expect(protBytes(core, dev, p, base)).toEqual([PROT_DEV_RW]);
    expectBytes(drv.deviceRead(p.mm.id, base, HPAGE_PMD_SIZE), data);
    // ptr[2048] (an int array): page 2 alone comes home.
    expectBytes(p.read(base + 2048 * 4, 4), data.subarray(2048 * 4, 2048 * 4 + 4));
    expect(dev.memory.used).toBe(NR - 1);
    expect(cpuEntry(p.mm, base + 2 * PAGE)!.kind).toBe(ENTRY_PRESENT);
    // A fresh THP migrates whole again (the injected failure was used up), and back.
    const second = hugeWithData(p, 37);
    core.migrateToDevice(dev, p, second.base, second.base + HPAGE_PMD_SIZE);
    expectDevicePmd(p, second.base, dev);
    expect(core.migrateToRam(dev, p, second.base, second.base + HPAGE_PMD_SIZE)).toEqual({
      selected: NR,
      migrated: NR,
      allocFailed: 0,
    });
    expect(cpuEntry(p.mm, second.base)!.huge).toBe(true);
    expectBytes(p.read(second.base, HPAGE_PMD_SIZE), second.data);
    expectBytes(p.read(base, HPAGE_PMD_SIZE), data);
    p.exit();
    expectNoLeaks(sys, [dev]);
  });

  it("a CPU fault with no free system THP splits the device-private PMD and brings only the faulting page home", () => {
    // 8 MiB of RAM: three usable 2 MiB blocks.
    const { sys, core, dev, p } = setup({ memoryBytes: 8 * MiB });
    const { base, data } = hugeWithData(p, 41);
    core.migrateToDevice(dev, p, base, base + HPAGE_PMD_SIZE);
    // Another process takes 4 KiB pages until no whole block is left.
    const hog = sys.machine.createProcess();
    const len = 6 * MiB;
    const h = hog.mm.mmap({ length: len, prot: 3, flags: 0x22 });
    hog.touch(h, len - 256 * PAGE, true);
    expect(sys.machine.pool.freeFrames).toBe(256);
    const before = dev.stats.compoundFallbacks;
    expectBytes(p.read(base + 5 * PAGE, PAGE), data.subarray(5 * PAGE, 6 * PAGE));
    expect(dev.stats.compoundFallbacks).toBe(before + 1);
    expect(cpuEntry(p.mm, base)!.huge).toBe(false);
    expect(cpuEntry(p.mm, base + 5 * PAGE)!.kind).toBe(ENTRY_PRESENT);
    const prot = core.snapshotProt(dev, p, base, base + HPAGE_PMD_SIZE);
    for (let i = 0; i < NR; i++) if (i !== 5) expect(prot[i], `page ${i}`).toBe(PROT_DEV_RW);
    // The device folio was split with the PMD: one frame went back.
    expect(dev.memory.used).toBe(NR - 1);
    expect(dev.memory.hugeInUse).toBe(0);
    hog.exit();
    expectBytes(p.read(base, HPAGE_PMD_SIZE), data);
    p.exit();
    expectNoLeaks(sys, [dev]);
  });

  for (const offset of [0, HPAGE_PMD_SIZE / 4, HPAGE_PMD_SIZE / 2]) {
    it(`hmm-tests migrate_partial_unmap_fault (offset ${offset / 1024} KiB): munmap of half splits the device PMD and frees that half`, () => {
      const { sys, core, dev, drv, p } = setup();
      const { base, data } = hugeWithData(p, 34);
      core.migrateToDevice(dev, p, base, base + HPAGE_PMD_SIZE);
      drv.clearRecords();
      const half = HPAGE_PMD_SIZE / 2;
      p.mm.munmap(base + offset, half);
      expect(drv.invalidations.map((i) => [i.event, i.start - base, i.end - base])).toEqual([
        [MmuNotifyEvent.CLEAR, 0, HPAGE_PMD_SIZE],
        [MmuNotifyEvent.UNMAP, offset, offset + half],
      ]);
      expect(dev.memory.used).toBe(NR / 2);
      expect(p.mm.rssDevice).toBe(NR / 2);
      for (let a = 0; a < HPAGE_PMD_SIZE; a += half / 2) {
        if (a >= offset && a < offset + half) continue;
        expect(cpuEntry(p.mm, base + a)!.kind).toBe(ENTRY_DEVICE_PRIVATE);
        expectBytes(p.read(base + a, half / 2), data.subarray(a, a + half / 2), `at ${a}`);
      }
      expect(dev.memory.used).toBe(0);
      p.exit();
      expectNoLeaks(sys, [dev]);
    });
  }

  for (const before of [false, true])
    for (const dontunmap of [false, true])
      for (const offset of [0, HPAGE_PMD_SIZE / 4, HPAGE_PMD_SIZE / 2]) {
        it(`hmm-tests migrate_remap_fault (migrate ${before ? "after" : "before"} mremap, dontunmap ${dontunmap}, offset ${offset / 1024} KiB): data reads back at the new address`, () => {
          const { sys, core, dev, p } = setup();
          const { base, data } = hugeWithData(p, 60);
          const hole = mmapHuge(p, 2);
          p.mm.munmap(hole, 2 * HPAGE_PMD_SIZE);
          const target = hole + offset;
          const flags = MREMAP_MAYMOVE | MREMAP_FIXED | (dontunmap ? MREMAP_DONTUNMAP : 0);
          let head = -1;
          if (!before) {
            core.migrateToDevice(dev, p, base, base + HPAGE_PMD_SIZE);
            head = expectDevicePmd(p, base, dev);
          }
          expect(p.mm.mremap(base, HPAGE_PMD_SIZE, HPAGE_PMD_SIZE, flags, target)).toBe(target);
          if (!before) {
            const e = cpuEntry(p.mm, target)!;
            expect(e.kind).toBe(ENTRY_DEVICE_PRIVATE);
            // A PMD-aligned move keeps the device-private PMD intact; any other splits it first.
            expect(e.huge).toBe(offset === 0);
            if (offset === 0) expect(e.pfn).toBe(head);
            expect(dev.memory.used).toBe(NR);
          } else {
            expect(core.migrateToDevice(dev, p, target, target + HPAGE_PMD_SIZE).migrated).toBe(NR);
          }
          expectBytes(p.read(target, HPAGE_PMD_SIZE), data);
          if (dontunmap) expectZeros(p.read(base, PAGE));
          p.exit();
          expectNoLeaks(sys, [dev]);
        });
      }

  it("device frames moved by mremap are still found: removing the device brings them home at their new address", () => {
    const { sys, core, dev, p } = setup();
    const a = hugeWithData(p, 61);
    const b = hugeWithData(p, 62);
    core.migrateToDevice(dev, p, a.base, a.base + HPAGE_PMD_SIZE);
    dev.failNextAlloc(); // b goes page by page
    core.migrateToDevice(dev, p, b.base, b.base + HPAGE_PMD_SIZE);
    const hole = mmapHuge(p, 4);
    p.mm.munmap(hole, 4 * HPAGE_PMD_SIZE);
    const flags = MREMAP_MAYMOVE | MREMAP_FIXED;
    p.mm.mremap(a.base, HPAGE_PMD_SIZE, HPAGE_PMD_SIZE, flags, hole);
    p.mm.mremap(b.base, HPAGE_PMD_SIZE, HPAGE_PMD_SIZE, flags, hole + 2 * HPAGE_PMD_SIZE + PAGE);
    expect(dev.memory.used).toBe(2 * NR);
    core.removeDevice(dev);
    expect(dev.memory.used).toBe(0);
    const e = cpuEntry(p.mm, hole)!;
    expect([e.kind, e.huge]).toEqual([ENTRY_PRESENT, true]);
    expectBytes(p.read(hole, HPAGE_PMD_SIZE), a.data);
    expectBytes(p.read(hole + 2 * HPAGE_PMD_SIZE + PAGE, HPAGE_PMD_SIZE), b.data);
    p.exit();
    expectNoLeaks(sys, [dev]);
  });

  it("mprotect of part of a device-private PMD splits it; of all of it keeps the PMD read-only", () => {
    const { sys, core, dev, p } = setup();
    const { base, data } = hugeWithData(p, 5, 2);
    core.migrateToDevice(dev, p, base, base + 2 * HPAGE_PMD_SIZE);
    p.mm.mprotect(base, HPAGE_PMD_SIZE / 2, PROT_READ);
    const prot = core.snapshotProt(dev, p, base, base + HPAGE_PMD_SIZE);
    expect([...new Set(prot.subarray(0, NR / 2))]).toEqual([
      HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_READ,
    ]);
    expect([...new Set(prot.subarray(NR / 2))]).toEqual([PROT_DEV_RW]);
    p.mm.mprotect(base + HPAGE_PMD_SIZE, HPAGE_PMD_SIZE, PROT_READ);
    expectDevicePmd(p, base + HPAGE_PMD_SIZE, dev, false);
    expect(protBytes(core, dev, p, base + HPAGE_PMD_SIZE)).toEqual([
      HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_READ | HMM_DMIRROR_PROT_PMD,
    ]);
    expectBytes(p.read(base, 2 * HPAGE_PMD_SIZE), data);
    p.exit();
    expectNoLeaks(sys, [dev]);
  });

  it("MADV_DONTNEED or a migration home of part of the 2 MiB splits the device PMD; the rest stays on the device", () => {
    const { sys, core, dev, drv, p } = setup();
    const { base, data } = hugeWithData(p, 9, 2);
    core.migrateToDevice(dev, p, base, base + 2 * HPAGE_PMD_SIZE);
    p.mm.madvise(base, 16 * PAGE, MADV_DONTNEED);
    expect(dev.memory.used).toBe(2 * NR - 16);
    expectZeros(p.read(base, 16 * PAGE));
    const b = base + HPAGE_PMD_SIZE;
    drv.clearRecords();
    expect(core.migrateToRam(dev, p, b + PAGE, b + 3 * PAGE)).toEqual({
      selected: 2,
      migrated: 2,
      allocFailed: 0,
    });
    expect(drv.invalidations.map((i) => [i.event, i.start - b, i.end - b])).toEqual([
      [MmuNotifyEvent.MIGRATE, PAGE, 3 * PAGE],
      [MmuNotifyEvent.CLEAR, 0, HPAGE_PMD_SIZE],
    ]);
    expect(cpuEntry(p.mm, b + PAGE)!.kind).toBe(ENTRY_PRESENT);
    expect(cpuEntry(p.mm, b)!.kind).toBe(ENTRY_DEVICE_PRIVATE);
    expect(dev.memory.used).toBe(2 * NR - 16 - 2);
    expectBytes(p.read(base + 16 * PAGE, 2 * HPAGE_PMD_SIZE - 16 * PAGE), data.subarray(16 * PAGE));
    p.exit();
    expectNoLeaks(sys, [dev]);
  });

  it("fork copies a device-private PMD read-only into both; a write then brings the THP home and COW splits it", () => {
    const { sys, core, dev, p } = setup();
    const { base, data } = hugeWithData(p, 12);
    core.migrateToDevice(dev, p, base, base + HPAGE_PMD_SIZE);
    const head = expectDevicePmd(p, base, dev);
    const c = p.fork();
    expectDevicePmd(p, base, dev, false);
    expect(expectDevicePmd(c, base, dev, false)).toBe(head);
    expect(dev.memory.folioRefs(head)).toBe(2);
    expect(c.mm.rssDevice).toBe(NR);
    const ro = HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_READ | HMM_DMIRROR_PROT_PMD;
    expect(protBytes(core, dev, p, base)).toEqual([ro]);
    expect(protBytes(core, dev, c, base)).toEqual([ro]);
    // A device write fault reports the read-only PMD as it is, without faulting it home.
    const w = core.deviceFault(dev, p, base, base + PAGE, true);
    expect(w).toEqual({ pages: NR, cpuFaults: 0, retries: 0, reportedReadOnly: NR });
    expectDevicePmd(p, base, dev, false);
    c.write(base + 3 * PAGE, new Uint8Array([0xab]));
    expect(dev.memory.used).toBe(0);
    expect(cpuEntry(p.mm, base)!.huge).toBe(true); // the parent still maps the THP by its PMD
    expect(cpuEntry(c.mm, base)!.huge).toBe(false); // the child's PMD was split by the COW
    expect(c.read(base + 3 * PAGE, 1)[0]).toBe(0xab);
    expectBytes(p.read(base, HPAGE_PMD_SIZE), data);
    const mine = data.slice();
    mine[3 * PAGE] = 0xab;
    expectBytes(c.read(base, HPAGE_PMD_SIZE), mine);
    c.exit();
    p.exit();
    expectNoLeaks(sys, [dev]);
  });

  it("a device fault on its own device-private PMD reports it with the PMD order without faulting", () => {
    const { core, dev, drv, p } = setup();
    const { base } = hugeWithData(p, 2);
    core.migrateToDevice(dev, p, base, base + HPAGE_PMD_SIZE);
    const head = expectDevicePmd(p, base, dev);
    drv.mirror.clear();
    drv.clearRecords();
    const r = core.deviceFault(dev, p, base + 10 * PAGE, base + 12 * PAGE, true);
    expect(r).toEqual({ pages: NR, cpuFaults: 0, retries: 0, reportedReadOnly: 0 });
    expect(drv.mirrorCalls.map((c) => [c.cb, c.va, c.pfn])).toEqual([["mirrorPmd", base, head]]);
    expect(hmmPfnToMapOrder(drv.mirrorCalls[0].flags)).toBe(9);
    expectCoherent(core, dev);
    // A driver without mirrorPmd gets the 512 pages, each with order 9 and DEVICE_PRIVATE.
    const { dev: d2, drv: pte } = addFake(core, "gpu1", PteOnlyFakeDriver, {
      memoryPages: 1024,
      compoundMigration: true,
    });
    const other = hugeWithData(p, 3);
    core.migrateToDevice(d2, p, other.base, other.base + HPAGE_PMD_SIZE);
    expect(pte.mirrorCalls.length).toBe(NR);
    for (const c of pte.mirrorCalls) {
      expect(hmmPfnToMapOrder(c.flags)).toBe(9);
      expect(c.flags & HMM_PFN_DEVICE_PRIVATE).toBe(HMM_PFN_DEVICE_PRIVATE);
    }
  });

  it("another device's fault on a device-private PMD brings it home as a THP first", () => {
    const { sys, core, dev, p } = setup();
    const { dev: gpu1, drv: other } = addFake<RecordingFakeDriver>(core, "gpu1", undefined, {
      memoryPages: 256,
    });
    const { base, data } = hugeWithData(p, 4);
    core.migrateToDevice(dev, p, base, base + HPAGE_PMD_SIZE);
    expect(core.snapshotProt(gpu1, p, base, base + PAGE)[0]).toBe(0);
    const r = core.deviceFault(gpu1, p, base, base + PAGE, false);
    expect(r.pages).toBe(NR);
    expect(other.mirrorCalls.map((c) => c.cb)).toEqual(["mirrorPmd"]);
    expect(cpuEntry(p.mm, base)!.kind).toBe(ENTRY_PRESENT);
    expect(dev.memory.used).toBe(0);
    expectBytes(other.deviceRead(p.mm.id, base, HPAGE_PMD_SIZE), data);
    p.exit();
    expectNoLeaks(sys, [dev, gpu1]);
  });

  it("a full device evicts its oldest order-9 folio whole to make room for a new one", () => {
    const { sys, core, dev, p } = setup({ memoryPages: 2 * NR });
    const a = hugeWithData(p, 20);
    const b = hugeWithData(p, 21);
    const c = hugeWithData(p, 22);
    core.migrateToDevice(dev, p, a.base, a.base + HPAGE_PMD_SIZE);
    core.migrateToDevice(dev, p, b.base, b.base + HPAGE_PMD_SIZE);
    expect(dev.memory.free).toBe(0);
    core.migrateToDevice(dev, p, c.base, c.base + HPAGE_PMD_SIZE);
    expect(dev.stats.evictions).toBe(NR);
    const home = cpuEntry(p.mm, a.base)!;
    expect([home.kind, home.huge]).toEqual([ENTRY_PRESENT, true]);
    expectDevicePmd(p, b.base, dev);
    expectDevicePmd(p, c.base, dev);
    expect(dev.memory.hugeInUse).toBe(2);
    for (const x of [a, b, c]) expectBytes(p.read(x.base, HPAGE_PMD_SIZE), x.data);
    p.exit();
    expectNoLeaks(sys, [dev]);
  });

  it("removing the device brings its device-private PMDs home as THPs", () => {
    const { sys, core, dev, p } = setup();
    const { base, data } = hugeWithData(p, 8);
    core.migrateToDevice(dev, p, base, base + HPAGE_PMD_SIZE);
    core.removeDevice(dev);
    const e = cpuEntry(p.mm, base)!;
    expect([e.kind, e.huge]).toEqual([ENTRY_PRESENT, true]);
    expect(dev.memory.used).toBe(0);
    expectBytes(p.read(base, HPAGE_PMD_SIZE), data);
    p.exit();
    expectNoLeaks(sys, [dev]);
  });

  for (const mode of ["bytes", "tag"] as const) {
    it(`content digests are the same before, during and after a compound round trip (${mode} mode)`, () => {
      const { sys, core, dev, p } = setup({ mode });
      const base = mmapHuge(p, 2);
      p.writeStamp(base, 2 * HPAGE_PMD_SIZE, 0x5eed);
      p.writeStamp(base + 7 * PAGE, PAGE, 0x1234);
      const digest = contentDigest(p.mm);
      core.migrateToDevice(dev, p, base, base + 2 * HPAGE_PMD_SIZE);
      expectDevicePmd(p, base, dev);
      expect((cpuEntry(p.mm, base + HPAGE_PMD_SIZE)!.flags & ENTRY_KIND_MASK) === ENTRY_DEVICE_PRIVATE).toBe(
        true,
      );
      expect(contentDigest(p.mm)).toBe(digest);
      p.mm.munmap(base + HPAGE_PMD_SIZE + HPAGE_PMD_SIZE / 2, HPAGE_PMD_SIZE / 2);
      const afterUnmap = contentDigest(p.mm);
      core.migrateToRam(dev, p, base, base + HPAGE_PMD_SIZE + HPAGE_PMD_SIZE / 2);
      expect(contentDigest(p.mm)).toBe(afterUnmap);
      expect(cpuEntry(p.mm, base)!.huge).toBe(true);
      p.exit();
      expectNoLeaks(sys, [dev]);
    });
  }

  it("a compound migration racing CPU reads and a partial MADV_DONTNEED ends with the right data for every seed", () => {
    const outcomes = new Set<string>();
    for (let seed = 1; seed <= 24; seed++) {
      const { sys, core, dev, p } = setup();
      const { base, data } = hugeWithData(p, 50, 2);
      const b = base + HPAGE_PMD_SIZE;
      const sched = new Scheduler(seed);
      sched.spawn("migrate", core.migrateToDeviceSteps(dev, p, base, base + 2 * HPAGE_PMD_SIZE));
      sched.spawn("cpu", cpuTouchSteps(p, base + 100 * PAGE, 4 * PAGE, false));
      sched.spawn(
        "dontneed",
        cpuOpSteps("madvise", () => p.mm.madvise(b + 8 * PAGE, 8 * PAGE, MADV_DONTNEED), {
          mm: p.mm,
          mode: "read",
        }),
      );
      sched.run();
      for (const t of ["migrate", "cpu", "dontneed"])
        expect(sched.results.get(t)!.error, `${t} seed ${seed}`).toBeUndefined();
      outcomes.add(`${cpuEntry(p.mm, base)!.kind}/${cpuEntry(p.mm, b)!.huge}`);
      const want = data.slice();
      want.fill(0, HPAGE_PMD_SIZE + 8 * PAGE, HPAGE_PMD_SIZE + 16 * PAGE);
      expectCoherent(core, dev);
      expectBytes(p.read(base, 2 * HPAGE_PMD_SIZE), want, `seed ${seed}`);
      p.exit();
      expectNoLeaks(sys, [dev]);
    }
    // Both orders happened: the CPU read before the migration, and after it (bringing PMD 0 home).
    expect(outcomes.size).toBeGreaterThan(1);
  });

  it("compoundMigration must be a boolean", () => {
    const sys = makeSystem();
    const e = expectErrno(() => addFake(sys.core, "gpu0", undefined, { compoundMigration: "yes" }), "EINVAL");
    expect(e.message).toMatch(/compoundMigration/);
    expect(e.message).toMatch(/a boolean/);
    expect(e.message).toMatch(/"yes"/);
  });
});
