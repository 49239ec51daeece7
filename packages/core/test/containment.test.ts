import { ENTRY_DEVICE_PRIVATE, ENTRY_PRESENT, entryOwner, hex, MmuNotifyEvent } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { type Device, DriverError, HmmError, type HmmSystem } from "../src/index.js";
import { PAGE, type RecordingFakeDriver, ScribblingFakeDriver, ThrowingFakeDriver } from "./fakes.js";
import {
  addFake,
  cpuEntry,
  expectBytes,
  expectCoherent,
  expectNoLeaks,
  makeSystem,
  mmapHuge,
  mmapPrivate,
  randomBytes,
  thrown,
} from "./helpers.js";

const N = 16;

/**
 * A process with 16 written pages (plus a THP window) mirrored by a healthy gpu0 that also holds
 * pages 8-9 in its memory, and a ThrowingFakeDriver on gpu1 configured by `config`.
 */
function setup(config: Record<string, unknown>) {
  const sys = makeSystem();
  const { core, machine } = sys;
  const { dev: good, drv: goodDrv } = addFake<RecordingFakeDriver>(core, "gpu0");
  const { dev: bad, drv: badDrv } = addFake(core, "gpu1", ThrowingFakeDriver, config, "throwing-fake");
  const p = machine.createProcess();
  const a = mmapPrivate(p, N * PAGE);
  const data = randomBytes(N * PAGE, 81);
  p.write(a, data);
  core.deviceFault(good, p, a, a + 8 * PAGE, true);
  expect(core.migrateToDevice(good, p, a + 8 * PAGE, a + 10 * PAGE).migrated).toBe(2);
  return { sys, core, machine, good, goodDrv, bad, badDrv, p, a, data };
}

/** The DriverError names device, driver, callback and address, and carries the driver's error. */
function expectDriverError(e: unknown, bad: Device, drv: ThrowingFakeDriver, callback: string, va: number) {
  expect(e).toBeInstanceOf(DriverError);
  expect(e).toBeInstanceOf(HmmError);
  const d = e as DriverError;
  expect(d.message).toContain(`[driver throwing-fake on gpu1] ${callback} @ ${hex(va)}`);
  expect(d.message).toContain(drv.thrown!.message);
  expect(d.cause).toBe(drv.thrown);
  expect([d.device, d.driver, d.callback, d.address]).toEqual(["gpu1", "throwing-fake", callback, va]);
  expect(d.errno).toBe("EIO");
  expect(bad.state).toBe("failed");
  expect(bad.failure).toBe(d);
  expect(bad.stats.driverFailures).toBe(1);
}

/** After the failure: bad device detached and empty; data intact; gpu0 keeps working; no leaks. */
function expectContained(s: ReturnType<typeof setup>, sys: HmmSystem = s.sys) {
  const { core, good, goodDrv, bad, p, a, data } = s;
  core.reap();
  expect(bad.memory.used).toBe(0);
  expect(core.translations(bad)).toEqual([]);
  expect(p.mm.notifiers.size).toBe(1); // only gpu0's interval notifier is left
  for (let i = 0; i < N; i++) {
    const e = cpuEntry(p.mm, a + i * PAGE);
    if (e !== null && e.kind === ENTRY_DEVICE_PRIVATE) expect(entryOwner(e.flags)).toBe(good.ownerId);
  }
  // The failed device refuses further work with its DriverError.
  expect(thrown(() => core.deviceFault(bad, p, a, a + PAGE, false))).toBe(bad.failure);
  expect(thrown(() => core.migrateToDevice(bad, p, a, a + PAGE))).toBe(bad.failure);
  // gpu0 was not disturbed: its device pages are still there and it keeps faulting and migrating.
  expect(entryOwner(cpuEntry(p.mm, a + 8 * PAGE)!.flags)).toBe(good.ownerId);
  expect(core.deviceFault(good, p, a, a + N * PAGE, false).pages).toBe(N);
  expectBytes(goodDrv.deviceRead(p.mm.id, a, N * PAGE), data, "gpu0's view");
  expect(core.migrateToDevice(good, p, a, a + 4 * PAGE).migrated).toBe(4);
  expectCoherent(core, good);
  expectBytes(p.read(a, N * PAGE), data, "CPU view");
  p.exit();
  expectNoLeaks(sys, [good, bad]);
}

describe("fault containment: a throwing driver fails its device only", () => {
  it("a throw from mirrorPte fails the device fault with a DriverError and brings the device's pages home", () => {
    // Pages 12-15 go to gpu1 first (4 mirrorPte calls); the fault's 4th page then throws.
    const s = setup({ throwIn: "mirrorPte", throwAfter: 7 });
    const { core, bad, badDrv, p, a } = s;
    expect(core.migrateToDevice(bad, p, a + 12 * PAGE, a + 16 * PAGE).migrated).toBe(4);
    expect(bad.memory.used).toBe(4);
    const e = thrown(() => core.deviceFault(bad, p, a, a + 8 * PAGE, false));
    expectDriverError(e, bad, badDrv, "mirrorPte", a + 3 * PAGE);
    expect(bad.memory.used).toBe(0);
    for (let i = 12; i < 16; i++) expect(cpuEntry(p.mm, a + i * PAGE)!.kind).toBe(ENTRY_PRESENT);
    // The core brought them home with its own copy: the failed driver was not asked.
    expect(badDrv.copiesFromDevice).toEqual([]);
    expectContained(s);
  });

  it("a throw from mirrorPte while a migration reports its pages brings every migrated page home", () => {
    const s = setup({ throwIn: "mirrorPte" });
    const { core, bad, badDrv, p, a } = s;
    // Pages 8-9 are on gpu0 and are not taken: the migrated pages form two runs, 0-7 and 10-15.
    const e = thrown(() => core.migrateToDevice(bad, p, a, a + N * PAGE));
    expectDriverError(e, bad, badDrv, "mirrorPte", a);
    core.reap();
    expect(bad.memory.used).toBe(0);
    for (const i of [0, 7, 10, 15]) expect(cpuEntry(p.mm, a + i * PAGE)!.kind).toBe(ENTRY_PRESENT);
    expectContained(s);
  });

  it("a throw from mirrorPmd names the PMD's address", () => {
    const s = setup({ throwIn: "mirrorPmd" });
    const { core, bad, badDrv, p } = s;
    const h = mmapHuge(p, 1);
    p.write(h, randomBytes(PAGE, 82));
    expect(cpuEntry(p.mm, h)!.huge).toBe(true);
    const e = thrown(() => core.deviceFault(bad, p, h + 3 * PAGE, h + 4 * PAGE, false));
    expectDriverError(e, bad, badDrv, "mirrorPmd", h);
    expectContained(s);
  });

  it("a throw from mirrorPtes names the first page of the array", () => {
    const s = setup({ throwIn: "mirrorPtes", callbackMode: "array" });
    const { core, bad, badDrv, p, a } = s;
    expect(bad.callbackMode).toBe("array");
    const e = thrown(() => core.deviceFault(bad, p, a + 2 * PAGE, a + 6 * PAGE, true));
    expectDriverError(e, bad, badDrv, "mirrorPtes", a + 2 * PAGE);
    expectContained(s);
  });

  it("a throw from invalidate during a CPU munmap does not disturb the munmap; the device is emptied when it returns", () => {
    // gpu1's first invalidation (its own migration's MIGRATE) succeeds; the munmap's UNMAP throws.
    const s = setup({ throwIn: "invalidate", throwAfter: 1 });
    const { core, goodDrv, bad, badDrv, p, a } = s;
    expect(core.migrateToDevice(bad, p, a + 12 * PAGE, a + 14 * PAGE).migrated).toBe(2);
    core.deviceFault(bad, p, a, a + 4 * PAGE, false);
    const filler = mmapPrivate(p, 4 * PAGE);
    p.write(filler, new Uint8Array([1]));
    const before = goodDrv.invalidations.length;
    p.mm.munmap(filler, 4 * PAGE);
    expect(p.mm.findVma(filler)).toBeNull();
    // gpu0 saw the munmap's UNMAP, then the MIGRATE of each of gpu1's pages brought home.
    expect(goodDrv.invalidations.slice(before).map((i) => [i.event, i.start])).toEqual([
      [MmuNotifyEvent.UNMAP, filler],
      [MmuNotifyEvent.MIGRATE, a + 12 * PAGE],
      [MmuNotifyEvent.MIGRATE, a + 13 * PAGE],
    ]);
    expectDriverError(bad.failure, bad, badDrv, "invalidate", filler);
    // Detaching finishes outside the notifier, as soon as the munmap has returned.
    expect(bad.memory.used).toBe(0);
    expectBytes(p.read(a + 12 * PAGE, 2 * PAGE), s.data.subarray(12 * PAGE, 14 * PAGE));
    expectContained(s);
  });

  it("a throw from invalidate inside the device's own migration fails the migration and restores every page", () => {
    const s = setup({ throwIn: "invalidate" });
    const { core, bad, badDrv, p, a, data } = s;
    const e = thrown(() => core.migrateToDevice(bad, p, a + 10 * PAGE, a + 14 * PAGE));
    expectDriverError(e, bad, badDrv, "invalidate", a + 10 * PAGE);
    for (let i = 10; i < 14; i++) expect(cpuEntry(p.mm, a + i * PAGE)!.kind).toBe(ENTRY_PRESENT);
    expect(badDrv.copiesToDevice).toEqual([]);
    expectBytes(p.read(a + 10 * PAGE, 4 * PAGE), data.subarray(10 * PAGE, 14 * PAGE));
    expectContained(s);
  });

  it("a throw from copyToDevice mid-migration migrates nothing of that piece and fails the migration", () => {
    // Two pages migrate fine; the next migration throws on its third copy.
    const s = setup({ throwIn: "copyToDevice", throwAfter: 4 });
    const { core, bad, badDrv, p, a, data } = s;
    expect(core.migrateToDevice(bad, p, a + 12 * PAGE, a + 14 * PAGE).migrated).toBe(2);
    const e = thrown(() => core.migrateToDevice(bad, p, a, a + 8 * PAGE));
    expectDriverError(e, bad, badDrv, "copyToDevice", a + 2 * PAGE);
    for (let i = 0; i < 8; i++) expect(cpuEntry(p.mm, a + i * PAGE)!.kind).toBe(ENTRY_PRESENT);
    for (let i = 12; i < 14; i++) expect(cpuEntry(p.mm, a + i * PAGE)!.kind).toBe(ENTRY_PRESENT);
    expect(bad.memory.used).toBe(0);
    expectBytes(p.read(a, 8 * PAGE), data.subarray(0, 8 * PAGE));
    expectContained(s);
  });

  it("a throw from copyFromDevice on a CPU fault still brings the page home with the right data", () => {
    const s = setup({ throwIn: "copyFromDevice" });
    const { core, bad, badDrv, p, a, data } = s;
    expect(core.migrateToDevice(bad, p, a + 12 * PAGE, a + 16 * PAGE).migrated).toBe(4);
    // The CPU touches page 13: the driver's copy throws, the core copies instead.
    expectBytes(p.read(a + 13 * PAGE, PAGE), data.subarray(13 * PAGE, 14 * PAGE));
    expectDriverError(bad.failure, bad, badDrv, "copyFromDevice", a + 13 * PAGE);
    expect(bad.memory.used).toBe(0);
    for (let i = 12; i < 16; i++) expect(cpuEntry(p.mm, a + i * PAGE)!.kind).toBe(ENTRY_PRESENT);
    expectContained(s);
  });

  it("a throw from copyFromDevice in an explicit migrateToRam still returns every page", () => {
    const s = setup({ throwIn: "copyFromDevice", throwAfter: 1 });
    const { core, bad, badDrv, p, a, data } = s;
    expect(core.migrateToDevice(bad, p, a + 12 * PAGE, a + 16 * PAGE).migrated).toBe(4);
    expect(core.migrateToRam(bad, p, a + 12 * PAGE, a + 16 * PAGE).migrated).toBe(4);
    expectDriverError(bad.failure, bad, badDrv, "copyFromDevice", a + 13 * PAGE);
    expectBytes(p.read(a + 12 * PAGE, 4 * PAGE), data.subarray(12 * PAGE));
    expectContained(s);
  });

  it("a driver overwriting the arrays it is given cannot change the CPU page table", () => {
    const sys = makeSystem();
    const { core, machine } = sys;
    const { dev, drv } = addFake(core, "gpu0", ScribblingFakeDriver);
    const p = machine.createProcess();
    const a = mmapPrivate(p, 8 * PAGE);
    const data = randomBytes(8 * PAGE, 83);
    p.write(a, data);
    const before = Array.from({ length: 8 }, (_, i) => cpuEntry(p.mm, a + i * PAGE));
    core.deviceFault(dev, p, a, a + 8 * PAGE, false);
    core.migrateToDevice(dev, p, a + 6 * PAGE, a + 8 * PAGE);
    expect(drv.mirrorCalls[0].pfns).toEqual(before.map((e) => e!.pfn));
    expect(Array.from({ length: 6 }, (_, i) => cpuEntry(p.mm, a + i * PAGE))).toEqual(before.slice(0, 6));
    expect(cpuEntry(p.mm, a + 6 * PAGE)!.pfn).toBe(drv.mirrorCalls[1].pfns[0]);
    expectBytes(p.read(a, 8 * PAGE), data);
    p.exit();
    expectNoLeaks(sys, [dev]);
  });
});
