import { ENTRY_PRESENT, MmError, MmuNotifyEvent, TASK_SIZE } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { DeviceMemory, runSteps } from "../src/index.js";
import { PAGE, type RecordingFakeDriver, ThrowingFakeDriver } from "./fakes.js";
import {
  addFake,
  cpuEntry,
  expectBytes,
  expectErrno,
  expectNoLeaks,
  MiB,
  makeSystem,
  mmapPrivate,
  randomBytes,
  thrown,
} from "./helpers.js";

describe("device removal", () => {
  it("removing a device brings every page home with its driver's copyFromDevice, then calls release", () => {
    const sys = makeSystem();
    const { core, machine } = sys;
    const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
    const { dev: other, drv: otherDrv } = addFake<RecordingFakeDriver>(core, "gpu1");
    const p = machine.createProcess();
    const n = 16;
    const a = mmapPrivate(p, n * PAGE);
    const data = randomBytes(n * PAGE, 101);
    p.write(a, data);
    expect(core.migrateToDevice(dev, p, a, a + 8 * PAGE).migrated).toBe(8);
    expect(core.migrateToDevice(other, p, a + 8 * PAGE, a + n * PAGE).migrated).toBe(8);
    const child = p.fork(); // the device pages are now shared by two processes
    const notifiers = p.mm.notifiers.size;
    drv.clearRecords();

    core.removeDevice(dev);

    // hmm-tests migrate_release: every page came home through the driver, once per device frame.
    expect(drv.copiesFromDevice.map((c) => c.va).sort((x, y) => x - y)).toEqual(
      Array.from({ length: 8 }, (_, i) => a + i * PAGE),
    );
    expect(drv.released).toBe(1);
    expect(dev.state).toBe("removed");
    expect(dev.memory.used).toBe(0);
    for (let i = 0; i < 8; i++) {
      expect(cpuEntry(p.mm, a + i * PAGE)!.kind).toBe(ENTRY_PRESENT);
      expect(cpuEntry(child.mm, a + i * PAGE)!.kind).toBe(ENTRY_PRESENT);
    }
    expect(p.mm.notifiers.size).toBe(notifiers - 1);
    expect(core.devices.has("gpu0")).toBe(false);
    expectErrno(() => core.device("gpu0"), "ENODEV");
    expectErrno(() => core.deviceFault(dev, p, a, a + PAGE, false), "ENODEV");
    expectErrno(() => core.migrateToDevice(dev, p, a, a + PAGE), "ENODEV");
    expect(() => machine.devicePagemap(dev.ownerId)).toThrow(MmError);
    // The other device was not touched.
    expect(otherDrv.copiesFromDevice).toEqual([]);
    expect(other.memory.used).toBe(8);
    expect(otherDrv.released).toBe(0);
    expectBytes(child.read(a, n * PAGE), data, "child");
    expectBytes(p.read(a, n * PAGE), data, "parent");
    // Removing again does nothing; the name can be used again.
    core.removeDevice(dev);
    expect(drv.released).toBe(1);
    expect(addFake(core, "gpu0").dev.state).toBe("active");
    child.exit();
    p.exit();
    expectNoLeaks(sys, [dev, other]);
  });

  for (const window of ["migrate:collected", "migrate:copied"]) {
    it(`a device removed while a migration to it is in flight (after ${window}) rolls the migration back: ENODEV, sources restored`, () => {
      const sys = makeSystem();
      const { core, machine } = sys;
      const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
      const p = machine.createProcess();
      const n = 4;
      const a = mmapPrivate(p, n * PAGE);
      const data = randomBytes(n * PAGE, 103);
      p.write(a, data);
      const frames = Array.from({ length: n }, (_, i) => cpuEntry(p.mm, a + i * PAGE)!.pfn);
      const m = core.migrateToDeviceSteps(dev, p, a, a + n * PAGE);
      let step = m.next();
      while (step.value !== window) step = m.next();
      const removed = core.removeDevice(dev);
      expect(removed.framesInUse).toBe(window === "migrate:copied" ? n : 0);
      expect(drv.released).toBe(1);
      drv.clearRecords();
      expectErrno(() => runSteps(m), "ENODEV");
      // The pagemap stayed registered while the migration held frames, and went when the
      // migration ended and freed them.
      expect(core.deviceByOwner(dev.ownerId)).toBeUndefined();
      expect(() => machine.devicePagemap(dev.ownerId)).toThrow(MmError);
      // Nothing reached the released driver; every page is back where it was.
      expect(drv.mirrorCalls).toEqual([]);
      if (window === "migrate:collected") expect(drv.copiesToDevice).toEqual([]);
      expect(dev.memory.used).toBe(0);
      for (let i = 0; i < n; i++) {
        const e = cpuEntry(p.mm, a + i * PAGE)!;
        expect(e.kind).toBe(ENTRY_PRESENT);
        expect(e.pfn).toBe(frames[i]);
      }
      expectBytes(p.read(a, n * PAGE), data);
      p.exit();
      expectNoLeaks(sys, [dev]);
    });
  }

  it("removing a device whose pages cannot come home for lack of system memory is EBUSY and leaves it attached", () => {
    const sys = makeSystem({ memoryBytes: 4 * MiB });
    const { core, machine } = sys;
    const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
    const p = machine.createProcess();
    const n = 8;
    const a = mmapPrivate(p, n * PAGE);
    const data = randomBytes(n * PAGE, 104);
    p.write(a, data);
    expect(core.migrateToDevice(dev, p, a, a + n * PAGE).migrated).toBe(n);
    // Fill system memory to the last frame.
    const fill = mmapPrivate(p, machine.pool.freeFrames * PAGE);
    let filled = 0;
    while (machine.pool.freeFrames > 0) p.write(fill + filled++ * PAGE, new Uint8Array([1]));
    const e = expectErrno(() => core.removeDevice(dev), "EBUSY");
    expect(e.message).toContain(`${n} of its pages could not be brought home`);
    expect(dev.state).toBe("active");
    expect(core.device("gpu0")).toBe(dev);
    expect(drv.released).toBe(0);
    expect(dev.memory.used).toBe(n);
    p.mm.munmap(fill, filled * PAGE);
    expect(core.removeDevice(dev)).toEqual({ framesInUse: 0 });
    expect(dev.state).toBe("removed");
    expectBytes(p.read(a, n * PAGE), data);
    expect(core.deviceByOwner(dev.ownerId)).toBeUndefined();
  });

  it("a device removed while a device fault is between walk and commit fails that fault with ENODEV", () => {
    const { core, machine } = makeSystem();
    const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
    const p = machine.createProcess();
    const a = mmapPrivate(p, 4 * PAGE);
    const f = core.deviceFaultSteps(dev, p, a, a + 4 * PAGE, true);
    expect(f.next().value).toBe("fault:walk→commit");
    core.removeDevice(dev);
    expectErrno(() => runSteps(f), "ENODEV");
    expect(drv.mirrorCalls).toEqual([]);
  });

  it("a failed device is removed without calling its driver again", () => {
    const { core, machine } = makeSystem();
    const { dev, drv } = addFake(core, "gpu0", ThrowingFakeDriver, { throwIn: "mirrorPte" }, "throwing-fake");
    const p = machine.createProcess();
    const a = mmapPrivate(p, PAGE);
    p.write(a, new Uint8Array([1]));
    thrown(() => core.deviceFault(dev, p, a, a + PAGE, false));
    expect(dev.state).toBe("failed");
    core.removeDevice("gpu0");
    expect(dev.state).toBe("removed");
    expect(drv.released).toBe(0);
    expect(core.devices.size).toBe(0);
  });
});

describe("driver errors outside the data path", () => {
  it("a throw from release during removal is recorded; the removal completes", () => {
    const { core, machine } = makeSystem();
    const { dev, drv } = addFake(core, "gpu0", ThrowingFakeDriver, { throwIn: "release" }, "throwing-fake");
    const p = machine.createProcess();
    const a = mmapPrivate(p, 2 * PAGE);
    const data = randomBytes(2 * PAGE, 102);
    p.write(a, data);
    core.migrateToDevice(dev, p, a, a + 2 * PAGE);
    core.removeDevice(dev);
    expect(dev.state).toBe("removed");
    expect(dev.failure!.message).toBe(`EIO: [driver throwing-fake on gpu0] release: ${drv.thrown!.message}`);
    expect(dev.failure!.address).toBeNull();
    expect(drv.copiesFromDevice).toHaveLength(2);
    expectBytes(p.read(a, 2 * PAGE), data);
  });

  it("a throw from translations fails the device and reports no translations", () => {
    const { core, machine } = makeSystem();
    const { dev, drv } = addFake(
      core,
      "gpu0",
      ThrowingFakeDriver,
      { throwIn: "translations" },
      "throwing-fake",
    );
    const p = machine.createProcess();
    const a = mmapPrivate(p, PAGE);
    core.deviceFault(dev, p, a, a + PAGE, true);
    expect(core.translations(dev)).toEqual([]);
    expect(dev.state).toBe("failed");
    expect(dev.failure!.callback).toBe("translations");
    expect(dev.failure!.message).toBe(
      `EIO: [driver throwing-fake on gpu0] translations: ${drv.thrown!.message}`,
    );
  });
});

describe("process exit", () => {
  it("process exit sends RELEASE over the whole address space, after which the device is unbound", () => {
    const sys = makeSystem();
    const { core, machine } = sys;
    const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
    const p = machine.createProcess();
    const q = machine.createProcess();
    const a = mmapPrivate(p, 8 * PAGE);
    const b = mmapPrivate(q, 8 * PAGE);
    core.deviceFault(dev, p, a, a + 4 * PAGE, true);
    core.deviceFault(dev, q, b, b + 4 * PAGE, true);
    expect(core.migrateToDevice(dev, p, a + 4 * PAGE, a + 8 * PAGE).migrated).toBe(4);
    drv.clearRecords();

    p.exit();

    const mine = drv.invalidations.filter((v) => v.mmId === p.mm.id);
    expect(mine.filter((v) => v.event === MmuNotifyEvent.RELEASE)).toEqual([
      { mmId: p.mm.id, start: 0, end: TASK_SIZE, event: MmuNotifyEvent.RELEASE, owner: null },
    ]);
    expect(mine.at(-1)!.event).toBe(MmuNotifyEvent.RELEASE);
    expect(drv.invalidations.some((v) => v.mmId === q.mm.id)).toBe(false);
    expect(drv.mirrored(p.mm.id)).toBe(0);
    expect(drv.mirrored(q.mm.id)).toBe(4);
    expect(dev.bindings.has(p.mm.id)).toBe(false);
    expect(dev.bindings.has(q.mm.id)).toBe(true);
    expect(dev.memory.used).toBe(0);
    expectErrno(() => core.deviceFault(dev, p, a, a + PAGE, false), "EFAULT");
    q.exit();
    expectNoLeaks(sys, [dev]);
  });
});

describe("device memory", () => {
  it("frames are refcounted: allocated with one reference, freed at zero, and misuse is an error", () => {
    const mem = new DeviceMemory(3, "bytes");
    const f = [mem.alloc(), mem.alloc(), mem.alloc()];
    expect(new Set(f).size).toBe(3);
    expect(mem.alloc()).toBe(-1);
    expect([mem.used, mem.free]).toEqual([3, 0]);
    mem.get(f[1]);
    mem.put(f[1]);
    expect(mem.used).toBe(3);
    mem.put(f[1]);
    expect([mem.used, mem.free]).toEqual([2, 1]);
    expect(() => mem.get(f[1])).toThrow(/is free/);
    expect(() => mem.put(f[1])).toThrow(/negative/);
    expect(() => new DeviceMemory(0, "bytes")).toThrow(/at least one page/);
  });

  it("eviction candidates are installed frames, oldest allocation first", () => {
    const mem = new DeviceMemory(8, "tag");
    const f = Array.from({ length: 5 }, () => mem.alloc());
    for (const d of [f[3], f[0], f[4]]) mem.noteInstalled(d, 1, d * PAGE);
    expect(mem.oldestInUse(8)).toEqual([f[0], f[3], f[4]]);
    expect(mem.oldestInUse(2)).toEqual([f[0], f[3]]);
    mem.put(f[0]);
    expect(mem.oldestInUse(8)).toEqual([f[3], f[4]]);
    const again = mem.alloc();
    mem.noteInstalled(again, 1, 0);
    expect(mem.oldestInUse(8)).toEqual([f[3], f[4], again]);
  });
});

describe("unbinding a device from an address space", () => {
  it("unbind removes the device's notifier and tells the driver; its pages stay on the device and come home on CPU fault", () => {
    const sys = makeSystem();
    const { core, machine } = sys;
    const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
    const p = machine.createProcess();
    const n = 8;
    const a = mmapPrivate(p, n * PAGE);
    const data = randomBytes(n * PAGE, 105);
    p.write(a, data);
    expect(core.migrateToDevice(dev, p, a, a + n * PAGE).migrated).toBe(n);
    const notifiers = p.mm.notifiers.size;
    core.unbind(dev, p);
    expect(drv.unbound).toEqual([p.mm.id]);
    expect(drv.mirrored(p.mm.id)).toBe(0);
    expect(p.mm.notifiers.size).toBe(notifiers - 1);
    expect(dev.bindings.has(p.mm.id)).toBe(false);
    expect(dev.memory.used).toBe(n);
    drv.clearRecords();
    // No invalidation reaches the unbound driver; the CPU still gets its data back through it.
    expectBytes(p.read(a, n * PAGE), data);
    expect(drv.invalidations).toEqual([]);
    expect(drv.copiesFromDevice).toHaveLength(n);
    expect(dev.memory.used).toBe(0);
    core.unbind(dev, p);
    expect(drv.unbound).toEqual([p.mm.id]);
    // A later fault binds it again.
    core.deviceFault(dev, p, a, a + n * PAGE, false);
    expect(dev.bindings.has(p.mm.id)).toBe(true);
    p.mm.munmap(a, n * PAGE);
    expect(drv.invalidations.some((v) => v.event === MmuNotifyEvent.UNMAP)).toBe(true);
    p.exit();
    expectNoLeaks(sys, [dev]);
  });

  it("core.mmById finds a live address space by the id callbacks carry, and device.driver is the driver instance", () => {
    const { core, machine } = makeSystem();
    const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
    const p = machine.createProcess();
    const c = p.fork();
    expect(core.mmById(p.mm.id)).toBe(p.mm);
    expect(core.mmById(c.mm.id)).toBe(c.mm);
    expect(dev.driver).toBe(drv);
    c.exit();
    expect(core.mmById(c.mm.id)).toBeUndefined();
  });
});
