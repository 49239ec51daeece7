import { MADV_DONTNEED, type Process } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import {
  DEVICE_ATOMIC,
  DEVICE_READ,
  DeviceAccesses,
  type DeviceRunResult,
  DriverError,
  type HmmError,
  MAX_FAULT_ROUNDS,
  Scheduler,
} from "../src/index.js";
import {
  IdleHandlerFakeDriver,
  PAGE,
  ReenteringTranslateFakeDriver,
  StaleTranslatingFakeDriver,
  StepHandlerFakeDriver,
  ThrowingTranslatingFakeDriver,
  TranslatingFakeDriver,
} from "./fakes.js";
import { addFake, MiB, makeSystem, mmapPrivate } from "./helpers.js";

function setup(pages = 64, config: Record<string, unknown> = {}, driver = TranslatingFakeDriver) {
  const sys = makeSystem();
  const p: Process = sys.machine.createProcess();
  const base = mmapPrivate(p, pages * PAGE);
  const { dev, drv } = addFake(sys.core, "dev0", driver as never, config);
  return { ...sys, p, base, dev, drv: drv as TranslatingFakeDriver };
}

describe("HmmCore.runDevice: the device access path", () => {
  it("reads see what the CPU wrote, writes reach the CPU, in both content modes", () => {
    for (const contentMode of ["bytes", "tag"] as const) {
      const sys = makeSystem({ contentMode });
      const p = sys.machine.createProcess();
      const base = mmapPrivate(p, 16 * PAGE);
      const { dev } = addFake(sys.core, "dev0", TranslatingFakeDriver);
      for (let i = 0; i < 8; i++) p.writeStamp(base + i * PAGE, PAGE, 1000 + i);
      const acc = new DeviceAccesses();
      for (let i = 0; i < 8; i++) acc.read(base + i * PAGE);
      for (let i = 8; i < 16; i++) acc.write(base + i * PAGE, 2000 + i);
      const r = sys.core.runDevice(dev, p.mm, acc);
      expect(r.completed).toBe(16);
      for (let i = 0; i < 8; i++) expect(acc.seen[i]).toBe(p.readPageHash(base + i * PAGE));
      expect(acc.seen[0]).not.toBe(0);
      // The device's writes are what the CPU now reads: the same hash as a CPU stamp of the same value.
      const q = mmapPrivate(p, PAGE);
      for (let i = 8; i < 16; i++) {
        p.writeStamp(q, PAGE, 2000 + i);
        expect(p.readPageHash(base + i * PAGE)).toBe(p.readPageHash(q));
      }
      expect(dev.stats.accesses).toBe(16);
      expect(dev.stats.remoteAccesses).toBe(16);
      expect(dev.stats.translationMisses).toBe(16);
    }
  });

  it("a burst of 512 faults arrives in 2 batches of 256, then every access hits", () => {
    const s = setup(512);
    const acc = new DeviceAccesses();
    for (let i = 0; i < 512; i++) acc.read(s.base + i * PAGE);
    const r = s.core.runDevice(s.dev, s.p.mm, acc);
    expect(r.batches).toBe(2);
    expect(r.faults).toBe(512);
    expect(s.dev.stats.faultBatches).toBe(2);
    expect(r.replays).toBe(512);
    // ... and a second run of the same stream hits everywhere.
    const r2 = s.core.runDevice(s.dev, s.p.mm, acc);
    expect(r2.faults).toBe(0);
    expect(s.dev.stats.translationHits).toBe(512 + 512);
  });

  it("a wave of 3,000 stalled accesses (more than the stall lists start with) all complete", () => {
    const s = setup(3000, { faultBuffer: 4096 });
    const acc = new DeviceAccesses();
    for (let i = 0; i < 3000; i++) acc.write(s.base + i * PAGE, i);
    const r = s.core.runDevice(s.dev, s.p.mm, acc);
    expect(r.batches).toBe(1);
    expect(r.replays).toBe(3000);
    expect(r.completed).toBe(3000);
  });

  it("the fault buffer size comes from the device config", () => {
    const s = setup(100, { faultBuffer: 32 });
    const acc = new DeviceAccesses();
    for (let i = 0; i < 100; i++) acc.write(s.base + i * PAGE, i);
    const r = s.core.runDevice(s.dev, s.p.mm, acc);
    expect(r.batches).toBe(4); // 32 + 32 + 32 + 4
    expect(r.completed).toBe(100);
  });

  it("waves: faults of one wave are serviced before the next wave issues", () => {
    const s = setup(64);
    const acc = new DeviceAccesses();
    for (let i = 0; i < 64; i++) acc.read(s.base + i * PAGE);
    const r = s.core.runDevice(s.dev, s.p.mm, acc, { wave: 16 });
    expect(r.batches).toBe(4);
    expect(r.completed).toBe(64);
  });

  it("duplicate faults to one page are all raised; the default handler faults the page once", () => {
    const s = setup(4);
    const acc = new DeviceAccesses();
    for (let i = 0; i < 32; i++) acc.read(s.base);
    const r = s.core.runDevice(s.dev, s.p.mm, acc);
    expect(r.faults).toBe(32);
    expect(s.dev.stats.deviceFaults).toBe(1);
    expect(r.completed).toBe(32);
  });

  it("an access with no VMA is cancelled (EFAULT); the rest complete", () => {
    const s = setup(4);
    const acc = new DeviceAccesses();
    acc.read(s.base);
    acc.read(s.base + 64 * MiB);
    acc.write(s.base + PAGE, 7);
    const r = s.core.runDevice(s.dev, s.p.mm, acc);
    expect(r.completed).toBe(2);
    expect(r.cancelled).toBe(1);
    expect(r.errors).toEqual([{ index: 1, va: s.base + 64 * MiB, kind: DEVICE_READ, errno: "EFAULT" }]);
    expect(acc.done[1]).toBe(2);
    expect(s.dev.state).toBe("active");
  });

  it("a write to a read-only mapping is cancelled with EPERM", () => {
    const s = setup(4);
    s.p.mm.mprotect(s.base, 4 * PAGE, 1);
    const acc = new DeviceAccesses();
    acc.push(s.base, DEVICE_ATOMIC, 1);
    acc.read(s.base + PAGE);
    const r = s.core.runDevice(s.dev, s.p.mm, acc);
    expect(r.errors.map((e) => e.errno)).toEqual(["EPERM"]);
    expect(r.completed).toBe(1);
  });

  it("atomics need a writable translation, return the old contents and store their stamp", () => {
    const s = setup(2);
    s.p.writeStamp(s.base, PAGE, 5);
    const old = s.p.readPageHash(s.base);
    const acc = new DeviceAccesses();
    acc.push(s.base, DEVICE_ATOMIC, 9);
    s.core.runDevice(s.dev, s.p.mm, acc);
    expect(acc.seen[0]).toBe(old);
    const q = mmapPrivate(s.p, PAGE);
    s.p.writeStamp(q, PAGE, 9);
    expect(s.p.readPageHash(s.base)).toBe(s.p.readPageHash(q));
  });

  it("a driver without translate cannot run accesses (EOPNOTSUPP, named)", async () => {
    const sys = makeSystem();
    const p = sys.machine.createProcess();
    const { RecordingFakeDriver } = await import("./fakes.js");
    const { dev } = addFake(sys.core, "dev0", RecordingFakeDriver);
    const acc = new DeviceAccesses();
    acc.read(mmapPrivate(p, PAGE));
    expect(() => sys.core.runDevice(dev, p.mm, acc)).toThrow(/no translate callback/);
    try {
      sys.core.runDevice(dev, p.mm, acc);
    } catch (e) {
      expect((e as HmmError).errno).toBe("EOPNOTSUPP");
    }
  });

  it("bad arguments are refused with the option named", () => {
    const s = setup(1);
    const acc = new DeviceAccesses();
    expect(() => s.core.runDevice(s.dev, s.p.mm, acc, { wave: 0 })).toThrow(/options.wave/);
    expect(() => s.core.runDevice(s.dev, s.p.mm, acc, { wavefront: 3 } as never)).toThrow(
      /unknown option 'wavefront'/,
    );
    expect(() => s.core.runDevice(s.dev, s.p.mm, [] as never)).toThrow(/accesses/);
    expect(() => acc.push(-1, DEVICE_READ)).toThrow(/'va'/);
    expect(() => acc.push(0x1000, 7)).toThrow(/'kind'/);
  });

  it("strict checking catches a stale translation (a broken driver that ignores invalidate)", () => {
    const s = setup(4, {}, StaleTranslatingFakeDriver as never);
    s.p.writeStamp(s.base, PAGE, 1);
    const acc = new DeviceAccesses();
    acc.read(s.base);
    s.core.runDevice(s.dev, s.p.mm, acc);
    s.p.mm.madvise(s.base, PAGE, MADV_DONTNEED); // the page is gone; the broken driver still maps it
    const r = s.core.runDevice(s.dev, s.p.mm, acc);
    expect(r.deviceFailure).toBeInstanceOf(DriverError);
    expect((r.deviceFailure as DriverError).code).toBe("DRIVER_STALE");
    expect(r.deviceFailure!.message).toMatch(/stale translation/);
    expect(s.dev.state).toBe("failed");
    expect(r.cancelled).toBe(1);
  });

  it("strict checking catches a writable translation kept after fork write-protected the page", () => {
    const s = setup(4, {}, StaleTranslatingFakeDriver as never);
    const acc = new DeviceAccesses();
    acc.write(s.base, 1);
    expect(s.core.runDevice(s.dev, s.p.mm, acc).completed).toBe(1);
    const child = s.p.fork(); // COW: the parent's PTE is read-only now; the broken driver keeps it writable
    const r = s.core.runDevice(s.dev, s.p.mm, acc);
    expect((r.deviceFailure as DriverError).code).toBe("DRIVER_STALE");
    expect(r.deviceFailure!.message).toMatch(/read-only/);
    // The child's copy was never written through the stale translation.
    const q = mmapPrivate(child, PAGE);
    child.writeStamp(q, PAGE, 1);
    expect(child.readPageHash(s.base)).toBe(child.readPageHash(q));
  });

  it("with verifyTranslations off the same stale read goes through unchecked", () => {
    const s = setup(4, {}, StaleTranslatingFakeDriver as never);
    s.p.writeStamp(s.base, PAGE, 1);
    const acc = new DeviceAccesses();
    acc.read(s.base);
    s.core.runDevice(s.dev, s.p.mm, acc);
    s.p.mm.madvise(s.base, PAGE, MADV_DONTNEED);
    const r = s.core.runDevice(s.dev, s.p.mm, acc, { verifyTranslations: false });
    expect(r.deviceFailure).toBeNull();
    expect(r.completed).toBe(1);
  });

  it("a fault handler that services nothing fails its device after MAX_FAULT_ROUNDS (DRIVER_STUCK)", () => {
    const s = setup(4, {}, IdleHandlerFakeDriver as never);
    const acc = new DeviceAccesses();
    acc.read(s.base);
    const r = s.core.runDevice(s.dev, s.p.mm, acc);
    expect((r.deviceFailure as DriverError).code).toBe("DRIVER_STUCK");
    expect((s.dev.driver as IdleHandlerFakeDriver).handlerCalls).toBe(MAX_FAULT_ROUNDS);
  });

  it("a driver failing in the middle of a batch is contained: nothing written is lost, no frame leaks", () => {
    const sys = makeSystem();
    const p = sys.machine.createProcess();
    const base = mmapPrivate(p, 64 * PAGE);
    for (let i = 0; i < 64; i++) p.writeStamp(base + i * PAGE, PAGE, 100 + i);
    // Fail in the 41st mirrorPte: inside the first batch's servicing.
    const { dev } = addFake(sys.core, "dev0", ThrowingTranslatingFakeDriver as never, {
      throwIn: "mirrorPte",
      throwAfter: 40,
    });
    const acc = new DeviceAccesses();
    for (let i = 0; i < 64; i++) acc.write(base + i * PAGE, 500 + i);
    const r = sys.core.runDevice(dev, p.mm, acc);
    expect(dev.state).toBe("failed");
    expect(r.completed + r.cancelled).toBe(64);
    // Every page holds either the CPU's stamp or, if the device completed that write, the device's.
    const q = mmapPrivate(p, PAGE);
    for (let i = 0; i < 64; i++) {
      p.writeStamp(q, PAGE, acc.done[i] === 1 ? 500 + i : 100 + i);
      expect(p.readPageHash(base + i * PAGE)).toBe(p.readPageHash(q));
    }
    p.exit();
    expect(sys.machine.usedFrames).toBe(0);
  });

  it("a translate that throws fails its device; the run ends with the rest cancelled", () => {
    const sys = makeSystem();
    const p = sys.machine.createProcess();
    const base = mmapPrivate(p, 8 * PAGE);
    const { dev } = addFake(sys.core, "dev0", ThrowingTranslatingFakeDriver as never, {
      throwIn: "translate",
      throwAfter: 3,
    });
    const acc = new DeviceAccesses();
    for (let i = 0; i < 8; i++) acc.read(base + i * PAGE);
    const r = sys.core.runDevice(dev, p.mm, acc);
    expect(r.deviceFailure!.message).toMatch(/translate/);
    expect(r.completed).toBe(0);
    expect(r.cancelled).toBe(8);
    expect(r.errors[0].errno).toBe("ENODEV");
  });

  it("a fault handler may be a step generator; its cancellations cancel exactly those accesses", () => {
    const sys = makeSystem();
    const p = sys.machine.createProcess();
    const base = mmapPrivate(p, 8 * PAGE);
    const { dev, drv } = addFake(sys.core, "dev0", StepHandlerFakeDriver as never, {
      lane: base + 6 * PAGE,
      faultBuffer: 4,
    });
    const acc = new DeviceAccesses();
    for (let i = 0; i < 8; i++) acc.write(base + i * PAGE, i + 1);
    const sched = new Scheduler(3);
    sched.spawn("dev", sys.core.runDeviceSteps(dev, p.mm, acc));
    sched.run();
    const r = sched.result<DeviceRunResult>("dev");
    expect((drv as unknown as StepHandlerFakeDriver).batchSizes).toEqual([4, 4]);
    expect(r.completed).toBe(6);
    expect(r.errors.map((e) => [e.index, e.errno])).toEqual([
      [6, "EPERM"],
      [7, "EPERM"],
    ]);
    // The handler's deviceFault steps ran inside the device task: their preemption points are in the trace.
    expect(sched.trace.some((t) => t.startsWith("dev@fault:"))).toBe(true);
    // Its six deviceFault calls were made inside batches: the cost model charges the two batches.
    expect(dev.stats.deviceFaults).toBe(6);
    expect(dev.stats.batchedDeviceFaults).toBe(6);
    expect(sys.cost.estimate(dev.stats).terms.faultService).toBe(
      2 * sys.cost.constants.faultServiceUs * 1000,
    );
  });

  it("translate may not call into mm: the call is refused (EDEADLK) and the device fails even if the driver catches it", () => {
    const s = setup(4, {}, ReenteringTranslateFakeDriver as never);
    const acc = new DeviceAccesses();
    acc.read(s.base);
    const r = s.core.runDevice(s.dev, s.p.mm, acc);
    expect((s.dev.driver as ReenteringTranslateFakeDriver).caught).toMatchObject({ errno: "EDEADLK" });
    expect((r.deviceFailure as DriverError).code).toBe("DRIVER_REENTRY");
    expect(s.p.mm.vmas.find(s.base)).not.toBeNull(); // the munmap did not happen
  });

  it("under the scheduler, device waves interleave with a CPU thread and data stays right", () => {
    const s = setup(128);
    const acc = new DeviceAccesses();
    for (let i = 0; i < 64; i++) acc.write(s.base + i * PAGE, 300 + i);
    const sched = new Scheduler(7);
    sched.spawn("dev", s.core.runDeviceSteps(s.dev, s.p.mm, acc, { wave: 8 }));
    sched.spawn(
      "cpu",
      (function* () {
        for (let i = 64; i < 128; i++) {
          s.p.writeStamp(s.base + i * PAGE, PAGE, 900 + i);
          yield "cpu:write";
        }
        s.p.mm.madvise(s.base, 8 * PAGE, MADV_DONTNEED);
        yield "cpu:madvise";
      })(),
    );
    sched.run();
    const r = sched.result<{ completed: number }>("dev");
    expect(r.completed).toBe(64);
    expect(sched.trace.some((t) => t.startsWith("dev@device:replay"))).toBe(true);
    const q = mmapPrivate(s.p, PAGE);
    for (let i = 8; i < 128; i++) {
      s.p.writeStamp(q, PAGE, i < 64 ? 300 + i : 900 + i);
      expect(s.p.readPageHash(s.base + i * PAGE)).toBe(s.p.readPageHash(q));
    }
  });
});
