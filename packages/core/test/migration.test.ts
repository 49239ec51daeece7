import {
  ENTRY_DEVICE_PRIVATE,
  ENTRY_PRESENT,
  ENTRY_WRITE,
  entryOwner,
  HPAGE_PMD_SIZE,
  hex,
  MmuNotifyEvent,
  PROT_NONE,
  PROT_READ,
} from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import {
  HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL,
  HMM_DMIRROR_PROT_NONE,
  HMM_DMIRROR_PROT_READ,
  HMM_DMIRROR_PROT_WRITE,
  HMM_PFN_DEVICE_PRIVATE,
  HMM_PFN_WRITE,
} from "../src/index.js";
import { KernelStyleFakeDriver, PAGE, type RecordingFakeDriver } from "./fakes.js";
import {
  addFake,
  cpuEntry,
  expectBytes,
  expectCoherent,
  expectErrno,
  expectNoLeaks,
  expectZeros,
  makeSystem,
  mmapHuge,
  mmapPrivate,
  RW,
  randomBytes,
  SHARED,
} from "./helpers.js";

function setup(memoryPages = 256, config = {}) {
  const sys = makeSystem({}, { config });
  const { dev, drv } = addFake<RecordingFakeDriver>(sys.core, "gpu0", undefined, { memoryPages });
  const p = sys.machine.createProcess();
  return { sys, ...sys, dev, drv, p };
}

/** Every page of [a, a + n pages) is a device-private entry of `owner` in `mm`. */
function expectOnDevice(
  p: { mm: Parameters<typeof cpuEntry>[0] },
  a: number,
  n: number,
  owner: number,
): void {
  for (let i = 0; i < n; i++) {
    const e = cpuEntry(p.mm, a + i * PAGE);
    expect(e?.kind, `page ${i}`).toBe(ENTRY_DEVICE_PRIVATE);
    expect(entryOwner(e!.flags)).toBe(owner);
  }
}

describe("migration to device memory and back", () => {
  it("hmm-tests migrate: pages migrated to the device keep their bytes and a CPU read brings each home", () => {
    const { sys, core, dev, drv, p } = setup();
    const n = 64;
    const a = mmapPrivate(p, n * PAGE);
    const data = randomBytes(n * PAGE, 41);
    p.write(a, data);
    const src = Array.from({ length: n }, (_, i) => cpuEntry(p.mm, a + i * PAGE)!.pfn);
    expect(core.migrateToDevice(dev, p, a, a + n * PAGE)).toEqual({
      selected: n,
      migrated: n,
      allocFailed: 0,
    });
    expect(drv.copiesToDevice.map((c) => c.spfn)).toEqual(src);
    expectOnDevice(p, a, n, dev.ownerId);
    expect(dev.memory.used).toBe(n);
    expect(p.mm.rssDevice).toBe(n);
    expect(p.mm.rssAnon).toBe(0);
    // The driver was told the new (device) frames; reading through them gives the CPU's bytes.
    for (let i = 0; i < n; i++) {
      const e = drv.entry(p.mm.id, a + i * PAGE)!;
      expect(e.pfn).toBe(cpuEntry(p.mm, a + i * PAGE)!.pfn);
      expect(e.flags & (HMM_PFN_DEVICE_PRIVATE | HMM_PFN_WRITE)).toBe(HMM_PFN_DEVICE_PRIVATE | HMM_PFN_WRITE);
    }
    expectBytes(drv.deviceRead(p.mm.id, a, n * PAGE), data, "device view");
    expect(dev.stats.migratedToDevice).toBe(n);
    expect(dev.stats.bytesToDevice).toBe(n * PAGE);
    expect(dev.stats.zeroFilledToDevice).toBe(0);

    expectBytes(p.read(a, n * PAGE), data, "CPU after migrate back on fault");
    expect(drv.copiesFromDevice).toHaveLength(n);
    expect(dev.stats.cpuFaultsOnDevicePages).toBe(n);
    expect(dev.stats.migratedToRam).toBe(n);
    expect(dev.stats.bytesToRam).toBe(n * PAGE);
    expect(dev.memory.used).toBe(0);
    expect(p.mm.rssDevice).toBe(0);
    expect(cpuEntry(p.mm, a)!.kind).toBe(ENTRY_PRESENT);
    expect(cpuEntry(p.mm, a)!.flags & ENTRY_WRITE).toBe(ENTRY_WRITE);
    expectCoherent(core, dev);
    p.exit();
    expectNoLeaks(sys, [dev]);
  });

  it("an explicit migrateToRam brings every page home with the driver's copy and no CPU fault", () => {
    const { sys, core, dev, drv, p } = setup();
    const n = 32;
    const a = mmapPrivate(p, n * PAGE);
    const data = randomBytes(n * PAGE, 42);
    p.write(a, data);
    core.migrateToDevice(dev, p, a, a + n * PAGE);
    const faults = sys.machine.stats.faults;
    expect(core.migrateToRam(dev, p, a, a + n * PAGE)).toEqual({ selected: n, migrated: n, allocFailed: 0 });
    expect(sys.machine.stats.faults).toBe(faults);
    expect(dev.stats.cpuFaultsOnDevicePages).toBe(0);
    expect(drv.copiesFromDevice.map((c) => c.va)).toEqual(Array.from({ length: n }, (_, i) => a + i * PAGE));
    expect(dev.memory.used).toBe(0);
    expect(drv.mirrored(p.mm.id)).toBe(0);
    for (let i = 0; i < n; i++) expect(cpuEntry(p.mm, a + i * PAGE)!.kind).toBe(ENTRY_PRESENT);
    expectBytes(p.read(a, n * PAGE), data);
    // Nothing left on the device: a second call moves nothing.
    expect(core.migrateToRam(dev, p, a, a + n * PAGE)).toEqual({ selected: 0, migrated: 0, allocFailed: 0 });
    p.exit();
    expectNoLeaks(sys, [dev]);
  });

  it("hmm-tests migrate_fault: after a CPU read of half the range, migrating again puts every page back on the device", () => {
    const { core, dev, p } = setup();
    const n = 32;
    const a = mmapPrivate(p, n * PAGE);
    const data = randomBytes(n * PAGE, 43);
    p.write(a, data);
    core.migrateToDevice(dev, p, a, a + n * PAGE);
    expectBytes(p.read(a, (n / 2) * PAGE), data.subarray(0, (n / 2) * PAGE));
    expect(dev.memory.used).toBe(n / 2);
    // Only the pages in system memory are selected; those already on this device stay.
    expect(core.migrateToDevice(dev, p, a, a + n * PAGE)).toEqual({
      selected: n / 2,
      migrated: n / 2,
      allocFailed: 0,
    });
    expectOnDevice(p, a, n, dev.ownerId);
    const prot = core.snapshotProt(dev, p, a, a + n * PAGE);
    expect(prot.every((b) => b === (HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE))).toBe(true);
    expectBytes(p.read(a, n * PAGE), data);
  });

  it("holes and the zero page are zero-filled on the device even when the device frame held old data", () => {
    const { core, dev, drv, p } = setup(16);
    // Leave stale bytes in device frames: migrate data there and bring it home again.
    const junk = mmapPrivate(p, 12 * PAGE);
    p.write(junk, randomBytes(12 * PAGE, 44));
    core.migrateToDevice(dev, p, junk, junk + 12 * PAGE);
    core.migrateToRam(dev, p, junk, junk + 12 * PAGE);
    drv.clearRecords();
    const a = mmapPrivate(p, 12 * PAGE);
    p.read(a + 4 * PAGE, 4 * PAGE); // pages 4-7: the zero page; 0-3 stay none
    const data = randomBytes(4 * PAGE, 45);
    p.write(a + 8 * PAGE, data);
    expect(core.migrateToDevice(dev, p, a, a + 12 * PAGE)).toEqual({
      selected: 12,
      migrated: 12,
      allocFailed: 0,
    });
    expect(drv.copiesToDevice.slice(0, 8).every((c) => c.spfn === -1)).toBe(true);
    expect(drv.copiesToDevice.slice(8).every((c) => c.spfn > 0)).toBe(true);
    expect(dev.stats.zeroFilledToDevice).toBe(8);
    for (const c of drv.copiesToDevice.slice(0, 8)) expect(dev.memory.content.hash(c.dpfn)).toBe(0);
    expectOnDevice(p, a, 12, dev.ownerId);
    // New entries for holes are writable because the VMA is.
    expect(cpuEntry(p.mm, a)!.flags & ENTRY_WRITE).toBe(ENTRY_WRITE);
    expectZeros(drv.deviceRead(p.mm.id, a, 8 * PAGE), "device view of holes");
    expectZeros(p.read(a, 8 * PAGE), "CPU view of holes");
    expectBytes(p.read(a + 8 * PAGE, 4 * PAGE), data);
  });

  it("hmm-tests migrate_anon_huge_empty / _zero: an untouched or huge-zero-page THP window migrates as zero-filled pages", () => {
    const { core, dev, drv, p } = setup(1024);
    for (const touch of [false, true]) {
      const a = mmapHuge(p, 1);
      p.mm.mprotect(a, HPAGE_PMD_SIZE, PROT_READ);
      if (touch) {
        expectZeros(p.read(a, 8));
        expect(cpuEntry(p.mm, a)!.huge).toBe(true);
      }
      drv.clearRecords();
      expect(core.migrateToDevice(dev, p, a, a + HPAGE_PMD_SIZE)).toEqual({
        selected: 512,
        migrated: 512,
        allocFailed: 0,
      });
      expect(drv.copiesToDevice.every((c) => c.spfn === -1)).toBe(true);
      const prot = core.snapshotProt(dev, p, a, a + HPAGE_PMD_SIZE);
      // Read-only VMA: the device entries are read-only.
      expect(prot.every((b) => b === (HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_READ))).toBe(
        true,
      );
      expectZeros(drv.deviceRead(p.mm.id, a, HPAGE_PMD_SIZE));
      expectZeros(p.read(a, HPAGE_PMD_SIZE));
    }
  });

  it("hmm-tests migrate_multiple: ten rounds of migrate and CPU read keep the data", () => {
    const { sys, core, dev, p } = setup();
    for (let round = 0; round < 10; round++) {
      const n = 16;
      const a = mmapPrivate(p, n * PAGE);
      const data = randomBytes(n * PAGE, 100 + round);
      p.write(a, data);
      expect(core.migrateToDevice(dev, p, a, a + n * PAGE).migrated).toBe(n);
      expectBytes(p.read(a, n * PAGE), data, `round ${round}`);
      p.mm.munmap(a, n * PAGE);
    }
    expect(dev.stats.migratedToDevice).toBe(160);
    expect(dev.stats.migratedToRam).toBe(160);
    p.exit();
    expectNoLeaks(sys, [dev]);
  });

  it("device memory is freed when the process exits or unmaps device-resident pages", () => {
    const { sys, core, dev, drv, p } = setup(1024);
    const a = mmapHuge(p, 1);
    const data = randomBytes(HPAGE_PMD_SIZE, 46);
    p.write(a, data);
    expect(core.migrateToDevice(dev, p, a, a + HPAGE_PMD_SIZE).migrated).toBe(512);
    expect(dev.memory.used).toBe(512);
    // hmm-tests migrate_partial_unmap_fault: unmap half, the rest still reads back.
    p.mm.munmap(a + HPAGE_PMD_SIZE / 4, HPAGE_PMD_SIZE / 2);
    expect(dev.memory.used).toBe(256);
    expect(drv.copiesFromDevice).toHaveLength(0);
    expectBytes(p.read(a, HPAGE_PMD_SIZE / 4), data.subarray(0, HPAGE_PMD_SIZE / 4));
    expect(dev.memory.used).toBe(128);
    p.exit();
    expectNoLeaks(sys, [dev]);
  });

  it("hmm-tests migrate_shared: a MAP_SHARED mapping is never migrated", () => {
    const { core, dev, drv, p } = setup();
    const n = 8;
    const a = p.mm.mmap({ length: 2 * n * PAGE, prot: RW, flags: SHARED });
    const data = randomBytes(n * PAGE, 47);
    p.write(a, data); // first half populated, second half untouched
    expect(core.migrateToDevice(dev, p, a, a + 2 * n * PAGE)).toEqual({
      selected: 0,
      migrated: 0,
      allocFailed: 0,
    });
    expect(drv.copiesToDevice).toEqual([]);
    expect(dev.memory.used).toBe(0);
    expect(cpuEntry(p.mm, a)!.kind).toBe(ENTRY_PRESENT);
    expect(cpuEntry(p.mm, a + n * PAGE)).toBeNull();
    expectBytes(p.read(a, n * PAGE), data);
  });

  it("hmm-tests migrate_mixed: no-read VMAs and holes are EINVAL, another device's page is not taken", () => {
    const { core, machine } = makeSystem();
    const { dev: gpu0 } = addFake<RecordingFakeDriver>(core, "gpu0");
    const { dev: gpu1, drv: d1 } = addFake<RecordingFakeDriver>(core, "gpu1");
    const p = machine.createProcess();
    const a = mmapPrivate(p, 6 * PAGE, PROT_NONE);
    expectErrno(() => core.migrateToDevice(gpu1, p, a, a + 6 * PAGE), "EINVAL");
    p.mm.munmap(a + PAGE, PAGE);
    expectErrno(() => core.migrateToDevice(gpu1, p, a, a + 3 * PAGE), "EINVAL");
    p.mm.mprotect(a + 2 * PAGE, PAGE, PROT_READ);
    expectZeros(p.read(a + 2 * PAGE, 4));
    p.mm.mprotect(a + 3 * PAGE, 3 * PAGE, RW);
    const data = randomBytes(3 * PAGE, 48);
    p.write(a + 3 * PAGE, data);
    p.mm.mprotect(a + 3 * PAGE, PAGE, PROT_READ);
    expect(d1.copiesToDevice).toEqual([]);
    expect(core.migrateToDevice(gpu1, p, a + 2 * PAGE, a + 6 * PAGE)).toEqual({
      selected: 4,
      migrated: 4,
      allocFailed: 0,
    });
    expectOnDevice(p, a + 2 * PAGE, 4, gpu1.ownerId);
    // Read-only pages stay read-only on the device; writable ones stay writable.
    expect(cpuEntry(p.mm, a + 3 * PAGE)!.flags & ENTRY_WRITE).toBe(0);
    expect(cpuEntry(p.mm, a + 4 * PAGE)!.flags & ENTRY_WRITE).toBe(ENTRY_WRITE);
    expect(core.migrateToDevice(gpu0, p, a + 5 * PAGE, a + 6 * PAGE)).toEqual({
      selected: 0,
      migrated: 0,
      allocFailed: 0,
    });
    expect(entryOwner(cpuEntry(p.mm, a + 5 * PAGE)!.flags)).toBe(gpu1.ownerId);
    expect(gpu0.memory.used).toBe(0);
    expect(core.snapshotProt(gpu0, p, a + 5 * PAGE, a + 6 * PAGE)[0]).toBe(HMM_DMIRROR_PROT_NONE);
    expectBytes(p.read(a + 3 * PAGE, 3 * PAGE), data);
  });

  it("a migration that runs into a PROT_NONE VMA or a hole migrates the VMAs before it, reports them, then is EINVAL", () => {
    const { core, dev, drv, p } = setup();
    const n = 4;
    const a = mmapPrivate(p, 3 * n * PAGE);
    const data = randomBytes(3 * n * PAGE, 49);
    p.write(a, data);
    p.mm.mprotect(a + n * PAGE, n * PAGE, PROT_NONE);
    const e = expectErrno(() => core.migrateToDevice(dev, p, a, a + 3 * n * PAGE), "EINVAL");
    expect(e.message).toContain(hex(a + n * PAGE));
    // dmirror_migrate_to_device loops per VMA and stops at the first unreadable one.
    expectOnDevice(p, a, n, dev.ownerId);
    expect(drv.mirrored(p.mm.id)).toBe(n);
    expect(cpuEntry(p.mm, a + n * PAGE)!.kind).toBe(ENTRY_PRESENT);
    expect(cpuEntry(p.mm, a + 2 * n * PAGE)!.kind).toBe(ENTRY_PRESENT);
    expect(dev.memory.used).toBe(n);
    expectCoherent(core, dev);
    // The same for migrateToRam over a hole, and for a migration to the device over one.
    p.mm.munmap(a + n * PAGE, n * PAGE);
    expect(core.migrateToDevice(dev, p, a + 2 * n * PAGE, a + 3 * n * PAGE).migrated).toBe(n);
    expectErrno(() => core.migrateToRam(dev, p, a, a + 3 * n * PAGE), "EINVAL");
    expect(cpuEntry(p.mm, a)!.kind).toBe(ENTRY_PRESENT);
    expectOnDevice(p, a + 2 * n * PAGE, n, dev.ownerId);
    expectBytes(p.read(a, n * PAGE), data.subarray(0, n * PAGE));
    expectBytes(p.read(a + 2 * n * PAGE, n * PAGE), data.subarray(2 * n * PAGE));
  });

  it("hmm-tests double_map: two devices read the same pages; the one that did not migrate them brings them home", () => {
    const { core, machine } = makeSystem();
    const { dev: gpu0, drv: d0 } = addFake<RecordingFakeDriver>(core, "gpu0");
    const { dev: gpu1, drv: d1 } = addFake<RecordingFakeDriver>(core, "gpu1");
    const p = machine.createProcess();
    const n = 6;
    const a = mmapPrivate(p, n * PAGE);
    const data = randomBytes(n * PAGE, 54);
    p.write(a, data);
    p.mm.mprotect(a, n * PAGE, PROT_READ);
    for (const [dev, drv] of [
      [gpu0, d0],
      [gpu1, d1],
    ] as const) {
      expect(core.deviceFault(dev, p, a, a + n * PAGE, false).pages).toBe(n);
      expectBytes(drv.deviceRead(p.mm.id, a, n * PAGE), data);
    }
    expect(core.migrateToDevice(gpu1, p, a, a + n * PAGE).migrated).toBe(n);
    expect(d0.mirrored(p.mm.id)).toBe(0);
    expectBytes(d1.deviceRead(p.mm.id, a, n * PAGE), data, "gpu1 after migrate");
    const r = core.deviceFault(gpu0, p, a, a + n * PAGE, false);
    expect(r.cpuFaults).toBe(n);
    expect(d1.copiesFromDevice).toHaveLength(n);
    expect(gpu1.memory.used).toBe(0);
    expectBytes(d0.deviceRead(p.mm.id, a, n * PAGE), data, "gpu0 after");
    expectCoherent(core, gpu0);
    expectCoherent(core, gpu1);
  });

  it("hmm-tests hmm_cow_in_device: a device page shared after fork comes home correctly for parent and child", () => {
    const { sys, core, dev, drv, p } = setup();
    const n = 4;
    const a = mmapPrivate(p, n * PAGE);
    const data = randomBytes(n * PAGE, 49);
    p.write(a, data);
    expect(core.migrateToDevice(dev, p, a, a + n * PAGE).migrated).toBe(n);
    const child = p.fork();
    // Both map the same device frames, read-only; the device mirrors the child's view.
    for (let i = 0; i < n; i++) {
      expect(cpuEntry(child.mm, a + i * PAGE)!.pfn).toBe(cpuEntry(p.mm, a + i * PAGE)!.pfn);
      expect(cpuEntry(child.mm, a + i * PAGE)!.flags & ENTRY_WRITE).toBe(0);
    }
    core.deviceFault(dev, child, a, a + n * PAGE, false);
    expect(drv.entry(child.mm.id, a)!.flags & HMM_PFN_DEVICE_PRIVATE).toBe(HMM_PFN_DEVICE_PRIVATE);
    // The parent writes: each page comes home (for both processes), then COW gives the parent a copy.
    const mine = randomBytes(n * PAGE, 50);
    p.write(a, mine);
    expect(dev.memory.used).toBe(0);
    const prot = core.snapshotProt(dev, p, a, a + n * PAGE);
    expect(Array.from(prot)).toEqual(Array(n).fill(HMM_DMIRROR_PROT_WRITE));
    // The child's entries moved too: its mirror must not keep the freed device frames.
    expectCoherent(core, dev);
    for (let i = 0; i < n; i++) expect(cpuEntry(child.mm, a + i * PAGE)!.kind).toBe(ENTRY_PRESENT);
    expectBytes(child.read(a, n * PAGE), data, "child");
    expectBytes(p.read(a, n * PAGE), mine, "parent");
    child.exit();
    p.exit();
    expectNoLeaks(sys, [dev]);
  });

  it("migrating a page shared after fork moves it for both processes and invalidates the other process's mirrors", () => {
    const { sys, core, dev, drv, p } = setup();
    const { dev: gpu1, drv: d1 } = addFake<RecordingFakeDriver>(core, "gpu1");
    const n = 4;
    const a = mmapPrivate(p, n * PAGE);
    const data = randomBytes(n * PAGE, 51);
    p.write(a, data);
    const child = p.fork();
    core.deviceFault(gpu1, child, a, a + n * PAGE, false);
    expect(d1.mirrored(child.mm.id)).toBe(n);
    expect(core.migrateToDevice(dev, p, a, a + n * PAGE).migrated).toBe(n);
    expectOnDevice(child, a, n, dev.ownerId);
    expect(d1.mirrored(child.mm.id)).toBe(0);
    expectCoherent(core, gpu1);
    expectCoherent(core, dev);
    expectBytes(drv.deviceRead(p.mm.id, a, n * PAGE), data);
    expectBytes(child.read(a, n * PAGE), data, "child");
    expectBytes(p.read(a, n * PAGE), data, "parent");
    child.exit();
    p.exit();
    expectNoLeaks(sys, [dev, gpu1]);
  });
});

describe("eviction under device memory pressure", () => {
  it("a device with little memory evicts its oldest pages when migrating more, and no data is lost", () => {
    const { sys, core, dev, drv, p } = setup(8, { evictBatchPages: 4 });
    const n = 12;
    const a = mmapPrivate(p, n * PAGE);
    const data = randomBytes(n * PAGE, 52);
    p.write(a, data);
    expect(core.migrateToDevice(dev, p, a, a + 8 * PAGE).migrated).toBe(8);
    expect(dev.memory.free).toBe(0);
    drv.clearRecords();
    expect(core.migrateToDevice(dev, p, a + 8 * PAGE, a + n * PAGE).migrated).toBe(4);
    expect(dev.stats.evictions).toBe(4);
    // The four oldest went home through the driver's copy; the rest are on the device.
    expect(drv.copiesFromDevice.map((c) => c.va)).toEqual([0, 1, 2, 3].map((i) => a + i * PAGE));
    for (let i = 0; i < 4; i++) expect(cpuEntry(p.mm, a + i * PAGE)!.kind).toBe(ENTRY_PRESENT);
    expectOnDevice(p, a + 4 * PAGE, 8, dev.ownerId);
    expectCoherent(core, dev);
    expectBytes(drv.deviceRead(p.mm.id, a + 4 * PAGE, 8 * PAGE), data.subarray(4 * PAGE));
    expectBytes(p.read(a, n * PAGE), data);
    p.exit();
    expectNoLeaks(sys, [dev]);
  });

  it("a device with less memory than one eviction batch (512 pages) evicts all it has when full", () => {
    const sys = makeSystem();
    const { dev } = addFake(sys.core, "gpu0", undefined, { memoryPages: 4 });
    const p = sys.machine.createProcess();
    const a = mmapPrivate(p, 6 * PAGE);
    const data = randomBytes(6 * PAGE, 54);
    p.write(a, data);
    expect(sys.core.migrateToDevice(dev, p, a, a + 4 * PAGE).migrated).toBe(4);
    expect(sys.core.migrateToDevice(dev, p, a + 4 * PAGE, a + 6 * PAGE).migrated).toBe(2);
    expect(dev.stats.evictions).toBe(4);
    expectOnDevice(p, a + 4 * PAGE, 2, dev.ownerId);
    expectBytes(p.read(a, 6 * PAGE), data);
    p.exit();
    expectNoLeaks(sys, [dev]);
  });

  it("with evictOnPressure: false, pages that do not fit stay in system memory", () => {
    const sys = makeSystem();
    const { dev } = addFake(sys.core, "gpu0", undefined, { memoryPages: 4, evictOnPressure: false });
    const p = sys.machine.createProcess();
    const a = mmapPrivate(p, 8 * PAGE);
    const data = randomBytes(8 * PAGE, 53);
    p.write(a, data);
    expect(sys.core.migrateToDevice(dev, p, a, a + 8 * PAGE)).toEqual({
      selected: 8,
      migrated: 4,
      allocFailed: 4,
    });
    expect(dev.stats.evictions).toBe(0);
    expectOnDevice(p, a, 4, dev.ownerId);
    for (let i = 4; i < 8; i++) expect(cpuEntry(p.mm, a + i * PAGE)!.kind).toBe(ENTRY_PRESENT);
    expectBytes(p.read(a, 8 * PAGE), data);
  });
});

describe("drivers that skip their own MIGRATE invalidations (as lib/test_hmm.c does)", () => {
  it("stay coherent through migration to the device, CPU faults, migrateToRam, eviction and fork when they drop translations in copyFromDevice", () => {
    const sys = makeSystem({}, { config: { evictBatchPages: 2 } });
    const { core, machine } = sys;
    const { dev, drv } = addFake(core, "gpu0", KernelStyleFakeDriver, { memoryPages: 8 });
    const p = machine.createProcess();
    const n = 12;
    const a = mmapPrivate(p, n * PAGE);
    const data = randomBytes(n * PAGE, 55);
    p.write(a, data);
    core.deviceFault(dev, p, a, a + n * PAGE, false);
    expect(core.migrateToDevice(dev, p, a, a + 8 * PAGE).migrated).toBe(8);
    // It skipped the MIGRATE, so coherence rests on the core reporting the device frames.
    expect(drv.invalidations.some((v) => v.event === MmuNotifyEvent.MIGRATE)).toBe(true);
    expectCoherent(core, dev);
    expectBytes(p.read(a, PAGE), data.subarray(0, PAGE)); // CPU fault: page 0 home
    expectCoherent(core, dev);
    core.migrateToRam(dev, p, a + PAGE, a + 2 * PAGE);
    expectCoherent(core, dev);
    expect(core.migrateToDevice(dev, p, a + 8 * PAGE, a + n * PAGE).migrated).toBe(4); // evicts
    expect(dev.stats.evictions).toBeGreaterThan(0);
    expectCoherent(core, dev);
    const child = p.fork();
    core.deviceFault(dev, child, a, a + n * PAGE, false);
    expectBytes(p.read(a, n * PAGE), data); // every shared device page comes home for both
    expectCoherent(core, dev);
    core.deviceFault(dev, child, a, a + n * PAGE, false);
    expectBytes(drv.deviceRead(child.mm.id, a, n * PAGE), data, "device view of the child");
    child.exit();
    p.exit();
    expectNoLeaks(sys, [dev]);
  });

  it("keep a stale device frame if they skip their own MIGRATE and do not drop it when the page goes home", () => {
    const { core, machine } = makeSystem();
    const { dev } = addFake(core, "gpu0", KernelStyleFakeDriver, { eraseOnCopyBack: false });
    const p = machine.createProcess();
    const a = mmapPrivate(p, PAGE);
    p.write(a, new Uint8Array([1]));
    core.migrateToDevice(dev, p, a, a + PAGE);
    core.migrateToRam(dev, p, a, a + PAGE);
    const stale = core.translations(dev).filter((t) => t.devicePrivate);
    expect(stale).toHaveLength(1);
    expect(cpuEntry(p.mm, a)!.kind).toBe(ENTRY_PRESENT);
  });
});

describe("injected allocation failures (HMM_DMIRROR_FLAG_FAIL_ALLOC)", () => {
  it("failNextAlloc makes one device-frame allocation of the next migration fail: that page stays, then the flag is clear", () => {
    const { core, dev, p } = setup();
    const n = 8;
    const a = mmapPrivate(p, n * PAGE);
    const data = randomBytes(n * PAGE, 55);
    p.write(a, data);
    dev.failNextAlloc();
    expect(core.migrateToDevice(dev, p, a, a + n * PAGE)).toEqual({
      selected: n,
      migrated: n - 1,
      allocFailed: 1,
    });
    expect(cpuEntry(p.mm, a)!.kind).toBe(ENTRY_PRESENT);
    expectOnDevice(p, a + PAGE, n - 1, dev.ownerId);
    expect(core.migrateToDevice(dev, p, a, a + n * PAGE)).toEqual({
      selected: 1,
      migrated: 1,
      allocFailed: 0,
    });
    expectOnDevice(p, a, n, dev.ownerId);
    expectBytes(p.read(a, n * PAGE), data);
  });

  it("failNextAlloc before migrateToRam leaves one page on the device; a CPU read brings it home", () => {
    const { core, dev, p } = setup();
    const n = 4;
    const a = mmapPrivate(p, n * PAGE);
    const data = randomBytes(n * PAGE, 56);
    p.write(a, data);
    core.migrateToDevice(dev, p, a, a + n * PAGE);
    dev.failNextAlloc();
    expect(core.migrateToRam(dev, p, a, a + n * PAGE)).toEqual({
      selected: n,
      migrated: n - 1,
      allocFailed: 1,
    });
    expectOnDevice(p, a, 1, dev.ownerId);
    expectBytes(p.read(a, n * PAGE), data);
    expect(dev.memory.used).toBe(0);
    expectErrno(() => dev.failNextAlloc(-1), "EINVAL");
  });

  it("an injected failure is not taken by eviction: with evictOnPressure the page still stays in system memory", () => {
    const sys = makeSystem();
    const { dev } = addFake(sys.core, "gpu0", undefined, { memoryPages: 2 });
    const p = sys.machine.createProcess();
    const a = mmapPrivate(p, 2 * PAGE);
    p.write(a, randomBytes(2 * PAGE, 57));
    dev.failNextAlloc();
    expect(sys.core.migrateToDevice(dev, p, a, a + 2 * PAGE)).toEqual({
      selected: 2,
      migrated: 1,
      allocFailed: 1,
    });
    expect(dev.stats.evictions).toBe(0);
  });
});
