import { contentDigest, Machine, ZERO_PFN } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import {
  apiVersionCompatible,
  cpuOpSteps,
  cpuTouchSteps,
  type Device,
  DriverError,
  HmmError,
  type HmmSystem,
  Scheduler,
  SNAPSHOT_MAX_PAGES,
} from "../src/index.js";
import { HostileFakeDriver, PAGE, type RecordingFakeDriver } from "./fakes.js";
import {
  addFake,
  expectBytes,
  expectCoherent,
  expectNoLeaks,
  makeSystem,
  mmapPrivate,
  randomBytes,
  thrown,
} from "./helpers.js";

const N = 8;

function setup() {
  const sys = makeSystem();
  const { core, machine } = sys;
  const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
  const p = machine.createProcess();
  const a = mmapPrivate(p, N * PAGE);
  const data = randomBytes(N * PAGE, 97);
  p.write(a, data);
  core.deviceFault(dev, p, a, a + 4 * PAGE, false);
  core.migrateToDevice(dev, p, a + 6 * PAGE, a + 8 * PAGE);
  return { sys, core, machine, dev, drv, p, a, data };
}

/** Everything a rejected call must leave unchanged. */
function state(sys: HmmSystem, dev: Device, p: ReturnType<typeof setup>["p"], a: number) {
  const snap = sys.core.snapshot(dev, p, a, a + N * PAGE);
  dev.stats.snapshots--;
  return {
    digest: contentDigest(p.mm),
    pfns: Array.from(snap.pfns),
    flags: Array.from(snap.flags),
    frames: sys.machine.usedFrames,
    deviceFrames: dev.memory.used,
    notifiers: p.mm.notifiers.size,
    stats: JSON.stringify([...sys.stats.devices].map(([k, v]) => [k, v.snapshot()])),
    translations: sys.core.translations(dev).length,
    devices: [...sys.core.devices.keys()],
  };
}

describe("every public core entry checks its arguments", () => {
  const s0 = () => setup();
  type S = ReturnType<typeof setup>;
  const CASES: [string, (s: S) => unknown, RegExp][] = [
    [
      "deviceFault with {} for the address space",
      (s) => s.core.deviceFault(s.dev, {} as never, s.a, s.a + PAGE, false),
      /deviceFault: 'mm' must be an Mm or a Process, got an object/,
    ],
    [
      "deviceFault with null for the address space",
      (s) => s.core.deviceFault(s.dev, null as never, s.a, s.a + PAGE, false),
      /deviceFault: 'mm' must be an Mm or a Process, got null/,
    ],
    [
      "deviceFault with a NaN start",
      (s) => s.core.deviceFault(s.dev, s.p, Number.NaN, s.a + PAGE, false),
      /deviceFault: 'start' must be a non-negative integer address, got NaN/,
    ],
    [
      "deviceFault with a string start",
      (s) => s.core.deviceFault(s.dev, s.p, String(s.a) as never, s.a + PAGE, false),
      /deviceFault: 'start' must be a non-negative integer address, got "\d+" \(a string\)/,
    ],
    [
      "deviceFault with a fractional end",
      (s) => s.core.deviceFault(s.dev, s.p, s.a, s.a + 1.5, false),
      /deviceFault: 'end' must be a non-negative integer address, got \d+\.5/,
    ],
    [
      "deviceFault with a negative start",
      (s) => s.core.deviceFault(s.dev, s.p, -PAGE, s.a, false),
      /deviceFault: 'start' must be a non-negative integer address, got -4096/,
    ],
    [
      "deviceFault with a non-canonical end",
      (s) => s.core.deviceFault(s.dev, s.p, s.a, 2 ** 47, false),
      /deviceFault: 'end' 0x8000_0000_0000 is outside user space/,
    ],
    [
      "deviceFault with an unaligned start",
      (s) => s.core.deviceFault(s.dev, s.p, s.a + 12, s.a + PAGE, false),
      /deviceFault: 'start' 0x[0-9a-f_]+00c is not page aligned/,
    ],
    [
      "deviceFault with an empty range",
      (s) => s.core.deviceFault(s.dev, s.p, s.a, s.a, false),
      /deviceFault: empty range \[0x/,
    ],
    [
      "deviceFault with write a string",
      (s) => s.core.deviceFault(s.dev, s.p, s.a, s.a + PAGE, "yes" as never),
      /deviceFault: 'write' must be a boolean, got "yes" \(a string\)/,
    ],
    [
      "deviceFault with write 1",
      (s) => s.core.deviceFault(s.dev, s.p, s.a, s.a + PAGE, 1 as never),
      /deviceFault: 'write' must be a boolean, got 1/,
    ],
    [
      "deviceFaultSteps with write undefined",
      (s) => s.core.deviceFaultSteps(s.dev, s.p, s.a, s.a + PAGE, undefined as never),
      /deviceFaultSteps: 'write' must be a boolean, got undefined/,
    ],
    [
      "deviceFault with {} for the device",
      (s) => s.core.deviceFault({} as never, s.p, s.a, s.a + PAGE, false),
      /deviceFault: 'dev' must be a Device returned by this core's addDevice, got an object/,
    ],
    [
      "snapshot with a NaN end",
      (s) => s.core.snapshot(s.dev, s.p, s.a, Number.NaN),
      /snapshot: 'end' must be a non-negative integer address, got NaN/,
    ],
    [
      "snapshotProt with a string for the address space",
      (s) => s.core.snapshotProt(s.dev, "p" as never, s.a, s.a + PAGE),
      /snapshotProt: 'mm' must be an Mm or a Process, got "p"/,
    ],
    [
      "makeExclusive with a negative end",
      (s) => s.core.makeExclusive(s.dev, s.p, s.a, -1),
      /makeExclusive: 'end' must be a non-negative integer address, got -1/,
    ],
    [
      "migrateToDevice with a string start",
      (s) => s.core.migrateToDevice(s.dev, s.p, "0" as never, s.a),
      /migrateToDevice: 'start' must be a non-negative integer address/,
    ],
    [
      "migrateToDeviceSteps with an unaligned end",
      (s) => s.core.migrateToDeviceSteps(s.dev, s.p, s.a, s.a + 5),
      /migrateToDeviceSteps: 'end' 0x[0-9a-f_]+ is not page aligned/,
    ],
    [
      "migrateToRam with an address space of undefined",
      (s) => s.core.migrateToRam(s.dev, undefined as never, s.a, s.a + PAGE),
      /migrateToRam: 'mm' must be an Mm or a Process, got undefined/,
    ],
    [
      "evict with NaN pages",
      (s) => s.core.evict(s.dev, Number.NaN),
      /evict: 'npages' must be an integer from 0 to 256, got NaN/,
    ],
    [
      "evict with -5 pages",
      (s) => s.core.evict(s.dev, -5),
      /evict: 'npages' must be an integer from 0 to 256, got -5/,
    ],
    ["translations of {}", (s) => s.core.translations({} as never), /translations: 'dev' must be a Device/],
    [
      "removeDevice of a number",
      (s) => s.core.removeDevice(7 as never),
      /removeDevice: 'dev' must be a Device/,
    ],
    [
      "bind with a Machine for the address space",
      (s) => s.core.bind(s.dev, s.machine as never),
      /bind: 'mm' must be an Mm or a Process, got a Machine/,
    ],
    ["unbind with {}", (s) => s.core.unbind(s.dev, {} as never), /unbind: 'mm' must be an Mm or a Process/],
    [
      "device with a number",
      (s) => s.core.device(3 as never),
      /device: 'name' must be a device name \(a string\), got 3/,
    ],
    [
      "snapshot of more than SNAPSHOT_MAX_PAGES pages",
      (s) => s.core.snapshot(s.dev, s.p, 0, 2 ** 40),
      /snapshot: \[0x0, 0x100_0000_0000\) is 268435456 pages, more than the 1048576 one call may cover/,
    ],
  ];
  for (const [what, call, message] of CASES) {
    it(`${what} is an HmmError naming the operation, the argument and the value, and changes nothing`, () => {
      const s = s0();
      const before = state(s.sys, s.dev, s.p, s.a);
      const e = thrown(() => call(s));
      expect(e).toBeInstanceOf(HmmError);
      expect((e as HmmError).errno).toBe("EINVAL");
      expect((e as Error).message).toMatch(message);
      expect(state(s.sys, s.dev, s.p, s.a)).toEqual(before);
      expect(s.dev.state).toBe("active");
      s.p.exit();
      expectNoLeaks(s.sys, [s.dev]);
    });
  }

  it("a snapshot of exactly SNAPSHOT_MAX_PAGES pages is allowed", () => {
    const s = s0();
    const snap = s.core.snapshot(s.dev, s.p, 0, SNAPSHOT_MAX_PAGES * PAGE);
    expect(snap.flags.length).toBe(SNAPSHOT_MAX_PAGES);
  });
});

describe("objects of another system are refused at every core entry", () => {
  it("an address space of another Machine, a device of another HmmCore, on the same or another machine", () => {
    const s = setup();
    const otherMachine = new Machine({ memoryBytes: 16 * 1024 * 1024 });
    const q = otherMachine.createProcess();
    const b = mmapPrivate(q, 4 * PAGE);
    q.write(b, new Uint8Array([5]));
    const sameMachineCore = makeSystem();
    const foreign = addFake(sameMachineCore.core, "gpu0").dev;
    const before = state(s.sys, s.dev, s.p, s.a);
    const qDigest = contentDigest(q.mm);
    const calls: [string, () => unknown][] = [
      ["deviceFault", () => s.core.deviceFault(s.dev, q, b, b + PAGE, false)],
      ["snapshot", () => s.core.snapshot(s.dev, q.mm, b, b + PAGE)],
      ["migrateToDevice", () => s.core.migrateToDevice(s.dev, q, b, b + PAGE)],
      ["migrateToRam", () => s.core.migrateToRam(s.dev, q, b, b + PAGE)],
      ["makeExclusive", () => s.core.makeExclusive(s.dev, q, b, b + PAGE)],
      ["bind", () => s.core.bind(s.dev, q)],
    ];
    for (const [op, call] of calls) {
      const e = thrown(call);
      expect(e, op).toBeInstanceOf(HmmError);
      expect((e as HmmError).code, op).toBe("FOREIGN_OBJECT");
      expect((e as Error).message).toContain(
        `${op}: 'mm' (address space ${q.mm.id}) belongs to another Machine`,
      );
    }
    const devCalls: [string, () => unknown][] = [
      ["deviceFault", () => s.core.deviceFault(foreign, s.p, s.a, s.a + PAGE, false)],
      ["migrateToDevice", () => s.core.migrateToDevice(foreign, s.p, s.a, s.a + PAGE)],
      ["snapshot", () => s.core.snapshot(foreign, s.p, s.a, s.a + PAGE)],
      ["evict", () => s.core.evict(foreign, 1)],
      ["removeDevice", () => s.core.removeDevice(foreign)],
      ["translations", () => s.core.translations(foreign)],
    ];
    for (const [op, call] of devCalls) {
      const e = thrown(call);
      expect((e as HmmError).code, op).toBe("FOREIGN_OBJECT");
      expect((e as Error).message).toContain(`${op}: device gpu0 belongs to another HmmCore`);
    }
    expect(state(s.sys, s.dev, s.p, s.a)).toEqual(before);
    expect(contentDigest(q.mm)).toBe(qDigest);
    expect(q.mm.notifiers.size).toBe(0);
    expect(foreign.state).toBe("active");
    expect(foreign.bindings.size).toBe(0);
    q.exit();
    expect(otherMachine.usedFrames).toBe(0);
    s.p.exit();
    expectNoLeaks(s.sys, [s.dev]);
  });
});

describe("the DMA engine is checked against the copy in progress", () => {
  function hostile() {
    const sys = makeSystem();
    const { core, machine } = sys;
    const { dev: good } = addFake<RecordingFakeDriver>(core, "gpu0");
    const { dev, drv } = addFake(core, "gpu1", HostileFakeDriver, {}, "hostile-fake");
    const p = machine.createProcess();
    const a = mmapPrivate(p, N * PAGE);
    const data = randomBytes(N * PAGE, 99);
    p.write(a, data);
    // A page that maps the shared zero page (read, never written).
    const z = mmapPrivate(p, PAGE);
    p.read(z, 1);
    core.deviceFault(good, p, a, a + N * PAGE, false);
    return { sys, core, machine, good, dev, drv, p, a, z, data };
  }
  type H = ReturnType<typeof hostile>;
  const MISUSES: [string, string, (h: H, args: readonly number[]) => void, RegExp, (h: H) => void][] = [
    [
      "overwriting the shared zero page",
      "copyFromDevice",
      (h, [, , dpfn]) => h.drv.ctx.dma.deviceToSystem(dpfn, ZERO_PFN),
      /DMA deviceToSystem\(\d+, 0\) does not match the migration in progress \(copyFromDevice was given dpfn \d+, spfn \d+\)/,
      (h) => h.core.migrateToRam(h.dev, h.p, h.a, h.a + 2 * PAGE),
    ],
    [
      "a device pfn out of range",
      "copyToDevice",
      (h, [, , spfn]) => h.drv.ctx.dma.systemToDevice(spfn, 256 + 3),
      /device pfn 259 is not a frame of this device \(0\.\.255\)/,
      (h) => h.core.migrateToDevice(h.dev, h.p, h.a, h.a + 2 * PAGE),
    ],
    [
      "a system pfn out of range",
      "copyToDevice",
      (_h, [, , , dpfn]) => _h.drv.ctx.dma.systemToDevice(1e9, dpfn),
      /system pfn 1000000000 is not a frame of this machine/,
      (h) => h.core.migrateToDevice(h.dev, h.p, h.a, h.a + 2 * PAGE),
    ],
    [
      "a fractional pfn",
      "copyToDevice",
      (h, [, , spfn, dpfn]) => h.drv.ctx.dma.systemToDevice(spfn + 0.5, dpfn),
      /system pfn \d+\.5 is not a frame of this machine/,
      (h) => h.core.migrateToDevice(h.dev, h.p, h.a, h.a + 2 * PAGE),
    ],
    [
      "a NaN pfn",
      "copyToDevice",
      (h) => h.drv.ctx.dma.zeroDevicePage(Number.NaN),
      /device pfn NaN is not a frame of this device/,
      (h) => h.core.migrateToDevice(h.dev, h.p, h.a, h.a + 2 * PAGE),
    ],
    [
      "another device frame",
      "copyToDevice",
      (h, [, , spfn, dpfn]) => h.drv.ctx.dma.systemToDevice(spfn, dpfn === 0 ? 1 : 0),
      /does not match the migration in progress \(copyToDevice was given spfn/,
      (h) => h.core.migrateToDevice(h.dev, h.p, h.a, h.a + 2 * PAGE),
    ],
    [
      "DMA outside a copy callback",
      "mirrorPte",
      (h) => h.drv.ctx.dma.zeroDevicePage(0),
      /DMA zeroDevicePage\(0\) outside a copy callback/,
      (h) => h.core.deviceFault(h.dev, h.p, h.a, h.a + PAGE, false),
    ],
  ];
  for (const [what, cb, misuse, message, trigger] of MISUSES) {
    it(`${what} from ${cb} fails the device with a DriverError (DRIVER_DMA) and writes nothing`, () => {
      const h = hostile();
      if (cb === "copyFromDevice") h.core.migrateToDevice(h.dev, h.p, h.a, h.a + 2 * PAGE);
      h.drv.arm(cb, (_d, args) => {
        try {
          misuse(h, args);
        } catch {
          // a driver that swallows the refusal still fails
        }
      });
      let escaped: unknown = null;
      try {
        trigger(h);
      } catch (e) {
        escaped = e;
      }
      if (escaped !== null) expect(escaped).toBe(h.dev.failure);
      expect(h.dev.state).toBe("failed");
      expect(h.dev.failure).toBeInstanceOf(DriverError);
      expect(h.dev.failure!.code).toBe("DRIVER_DMA");
      expect(h.dev.failure!.message).toMatch(message);
      expect(h.dev.memory.used).toBe(0);
      expect(h.machine.pool.content.hash(ZERO_PFN)).toBe(0);
      expectBytes(h.p.read(h.z, PAGE), new Uint8Array(PAGE), "the zero page");
      expectBytes(h.p.read(h.a, N * PAGE), h.data);
      expectCoherent(h.core, h.good);
      h.p.exit();
      expectNoLeaks(h.sys, [h.good, h.dev]);
    });
  }
});

describe("a runaway translations iterator is cut off", () => {
  it("an endless translations generator fails the device at the bound instead of running forever", () => {
    const s = setup();
    const { dev: bad, drv } = addFake(s.core, "gpu1", HostileFakeDriver, {}, "hostile-fake");
    s.core.deviceFault(bad, s.p, s.a, s.a + 2 * PAGE, false);
    drv.arm("translations", () =>
      (function* () {
        for (;;) yield { mmId: s.p.mm.id, va: s.a, pfn: 1, order: 0, writable: false, devicePrivate: false };
      })(),
    );
    expect(s.core.translations(bad)).toEqual([]);
    expect(bad.state).toBe("failed");
    expect(bad.failure!.code).toBe("DRIVER_LIMIT");
    // One mapping of 8 pages is bound, plus the margin of 1024.
    expect(bad.failure!.message).toContain("translations: yielded more than 1032 translations");
    expect(s.dev.state).toBe("active");
  });
});

describe("the scheduler's and CPU threads' entries check their arguments", () => {
  const CASES: [string, (s: ReturnType<typeof setup>) => unknown, RegExp][] = [
    [
      "cpuTouchSteps with {} for the process",
      () => cpuTouchSteps({} as never, 0, PAGE, false),
      /cpuTouchSteps: 'proc' must be a Process, got an object/,
    ],
    [
      "cpuTouchSteps with a NaN address",
      (s) => cpuTouchSteps(s.p, Number.NaN, PAGE, false),
      /cpuTouchSteps: 'va' must be an integer from 0 to/,
    ],
    [
      "cpuTouchSteps with a string length",
      (s) => cpuTouchSteps(s.p, s.a, "4096" as never, false),
      /cpuTouchSteps: 'len' must be an integer/,
    ],
    [
      "cpuTouchSteps with write 1",
      (s) => cpuTouchSteps(s.p, s.a, PAGE, 1 as never),
      /cpuTouchSteps: 'write' must be a boolean, got 1/,
    ],
    [
      "cpuOpSteps with no function",
      () => cpuOpSteps("munmap", null as never),
      /cpuOpSteps: 'op' must be a function, got null/,
    ],
    [
      "cpuOpSteps with a bad lock mode",
      (s) => cpuOpSteps("munmap", () => 0, { mm: s.p.mm, mode: "shared" as never }),
      /cpuOpSteps: 'mmapLock.mode' must be "read" or "write"/,
    ],
    [
      "a Scheduler with a NaN seed",
      () => new Scheduler(Number.NaN),
      /Scheduler: 'seed' must be an integer, got NaN/,
    ],
    [
      "spawning a task that is not a step generator",
      () => new Scheduler(1).spawn("t", (() => 0) as never),
      /Scheduler.spawn: 'steps' of task 't' must be a step generator/,
    ],
    [
      "running with negative maxSteps",
      () => new Scheduler(1).run(-1),
      /Scheduler.run: 'maxSteps' must be a non-negative integer, got -1/,
    ],
  ];
  for (const [what, call, message] of CASES) {
    it(`${what} is an HmmError EINVAL at the call, before any step runs`, () => {
      const s = setup();
      const before = state(s.sys, s.dev, s.p, s.a);
      const e = thrown(() => call(s));
      expect(e).toBeInstanceOf(HmmError);
      expect((e as HmmError).errno).toBe("EINVAL");
      expect((e as Error).message).toMatch(message);
      expect(state(s.sys, s.dev, s.p, s.a)).toEqual(before);
    });
  }

  it("apiVersionCompatible answers false for a version that is not a string", () => {
    expect(apiVersionCompatible(1 as never)).toBe(false);
    expect(apiVersionCompatible("^1.0.0")).toBe(true);
  });
});
