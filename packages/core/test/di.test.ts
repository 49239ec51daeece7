import { Machine } from "@hmmkit/mm";
import { inject, injectable } from "tsyringe";
import { describe, expect, it } from "vitest";
import {
  CostModel,
  createHmm,
  type DeviceConfig,
  type DeviceContext,
  HmmCore,
  HmmStats,
  TOKENS,
} from "../src/index.js";
import { fakePlugin, MirrorFakeBase, PAGE, RecordingFakeDriver } from "./fakes.js";
import { addFake, makeSystem, mmapPrivate, thrown } from "./helpers.js";

/** Takes everything a driver may ask for, to check what it is given. */
@injectable()
class InjectionProbeFakeDriver extends MirrorFakeBase {
  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
    @inject(TOKENS.Machine) readonly machine: Machine,
    @inject(TOKENS.Stats) readonly hmmStats: HmmStats,
  ) {
    super(ctx, config);
  }
  mirrorPte(mmId: number, va: number, pfn: number, flags: number): void {
    this.recordPte(mmId, va, pfn, flags);
  }
}

/** A constructor that throws. */
@injectable()
class ExplodingFakeDriver extends RecordingFakeDriver {
  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
  ) {
    super(ctx, config);
    throw new Error("no such hardware");
  }
}

/** Forgot its @inject decorators: the container cannot know what to pass. */
@injectable()
class UndecoratedFakeDriver extends MirrorFakeBase {
  constructor(ctx: DeviceContext, config: DeviceConfig) {
    super(ctx, config);
  }
  mirrorPte(): void {}
}

describe("dependency injection", () => {
  it("a driver receives its DeviceContext and DeviceConfig, with extra config keys untouched", () => {
    const { core, machine } = makeSystem();
    const dev = core.addDevice(fakePlugin(InjectionProbeFakeDriver, "probe-fake"), {
      name: "gpu0",
      memoryPages: 32,
      tlbEntries: 48,
      vendor: { id: 0x10de },
    });
    const drv = dev.driver as InjectionProbeFakeDriver;
    expect(drv.ctx).toBe(dev.context);
    expect(drv.ctx.name).toBe("gpu0");
    expect(drv.ctx.ownerId).toBe(dev.ownerId);
    expect(drv.ctx.memory).toBe(dev.memory);
    expect(drv.ctx.memory.npages).toBe(32);
    expect(drv.ctx.stats).toBe(dev.stats);
    expect(drv.ctx.machine).toBe(machine);
    expect(drv.config.tlbEntries).toBe(48);
    expect(drv.config.vendor).toEqual({ id: 0x10de });
    expect(drv.config).toBe(drv.ctx.config);
    expect(Object.isFrozen(drv.config)).toBe(true);
    // Services of the root container reach the driver through its child container.
    expect(drv.machine).toBe(machine);
    expect(drv.hmmStats).toBe(core.stats);
    // The DMA engine moves bytes between system frames and this device's frames, inside the
    // copy callbacks of a migration.
    const p = machine.createProcess();
    const a = mmapPrivate(p, PAGE);
    p.write(a, new Uint8Array([9, 8, 7]));
    expect(core.migrateToDevice(dev, p, a, a + PAGE).migrated).toBe(1);
    const dpfn = drv.copiesToDevice[0].dpfn;
    const out = new Uint8Array(3);
    drv.ctx.memory.content.readBytes(dpfn, 0, out, 0, 3);
    expect(Array.from(out)).toEqual([9, 8, 7]);
    expect(Array.from(p.read(a, 3))).toEqual([9, 8, 7]);
    expect(drv.copiesFromDevice).toHaveLength(1);
  });

  it("each device gets its own child container: two devices of the same plugin get different contexts", () => {
    const { core } = makeSystem();
    const a = addFake<RecordingFakeDriver>(core, "gpu0", RecordingFakeDriver, { memoryPages: 8, lane: 0 });
    const b = addFake<RecordingFakeDriver>(core, "gpu1", RecordingFakeDriver, { memoryPages: 16, lane: 1 });
    expect(a.drv).not.toBe(b.drv);
    expect(a.drv.ctx).not.toBe(b.drv.ctx);
    expect([a.drv.ctx.name, b.drv.ctx.name]).toEqual(["gpu0", "gpu1"]);
    expect(a.drv.ctx.ownerId).not.toBe(b.drv.ctx.ownerId);
    expect(a.drv.ctx.memory).not.toBe(b.drv.ctx.memory);
    expect([a.drv.config.lane, b.drv.config.lane]).toEqual([0, 1]);
    expect([a.drv.ctx.memory.npages, b.drv.ctx.memory.npages]).toEqual([8, 16]);
    // The device's services are not visible in the root container.
    const { container } = makeSystem();
    expect(container.isRegistered(TOKENS.DeviceContext)).toBe(false);
  });

  it("the core is resolved from its own root container under TOKENS.HmmCore, with the system's services", () => {
    const sys = createHmm({ machine: { memoryBytes: 16 << 20 } });
    expect(sys.core).toBeInstanceOf(HmmCore);
    expect(sys.container.resolve(TOKENS.HmmCore)).toBe(sys.core);
    expect(sys.container.resolve(TOKENS.Machine)).toBe(sys.machine);
    expect(sys.container.resolve(TOKENS.Stats)).toBe(sys.stats);
    expect(sys.container.resolve(TOKENS.CostModel)).toBe(sys.cost);
    expect(sys.core.machine).toBe(sys.machine);
    expect(sys.core.stats).toBe(sys.stats);
    expect(sys.stats).toBeInstanceOf(HmmStats);
    expect(sys.cost).toBeInstanceOf(CostModel);
    expect(sys.core.config.evictBatchPages).toBe(512);
    // Two systems never share a core, a machine or a container.
    const other = createHmm({ machine: { memoryBytes: 16 << 20 } });
    expect(other.core).not.toBe(sys.core);
    expect(other.container).not.toBe(sys.container);
    expect(other.container.resolve(TOKENS.HmmCore)).toBe(other.core);
  });

  it("createHmm takes an existing machine, core settings and a parent container", () => {
    const machine = new Machine({ memoryBytes: 16 << 20 });
    const parent = createHmm({ machine: { memoryBytes: 16 << 20 } });
    const sys = createHmm({ machine, config: { evictBatchPages: 8 }, parent: parent.container });
    expect(sys.machine).toBe(machine);
    expect(sys.core.config.evictBatchPages).toBe(8);
    expect(sys.core.config.defaultDeviceMemoryPages).toBe(262_144);
    // The child resolves its own core, not the parent's.
    expect(sys.container.resolve(TOKENS.HmmCore)).toBe(sys.core);
    expect(sys.core).not.toBe(parent.core);
    expect(parent.container.resolve(TOKENS.HmmCore)).toBe(parent.core);
    // Device memory defaults to the core setting.
    const small = createHmm({ machine: { memoryBytes: 16 << 20 }, config: { defaultDeviceMemoryPages: 64 } });
    expect(small.core.addDevice(fakePlugin(RecordingFakeDriver), { name: "g" }).memory.npages).toBe(64);
  });

  it("a driver constructor that throws, or one without @inject decorators, is a clear error and registers nothing", () => {
    const { core, machine } = makeSystem();
    const e1 = thrown(() =>
      core.addDevice(fakePlugin(ExplodingFakeDriver, "exploding-fake"), { name: "gpu0" }),
    );
    expect((e1 as Error).message).toContain("plugin 'exploding-fake': could not construct driver for gpu0");
    expect((e1 as Error).message).toContain("no such hardware");
    expect((e1 as Error & { cause: Error }).cause.message).toBe("no such hardware");
    const e2 = thrown(() =>
      core.addDevice(fakePlugin(UndecoratedFakeDriver, "undecorated-fake"), { name: "gpu0" }),
    );
    expect((e2 as Error).message).toContain(
      "driver class UndecoratedFakeDriver: constructor parameter 0 (ctx) has no @inject(TOKEN)",
    );
    expect(core.devices.size).toBe(0);
    // No pagemap owner leaked: 255 owners are still available (the 256th registration fails).
    for (let i = 0; i < 255; i++) machine.registerDevicePagemap({ name: `x${i}` } as never);
    expect(() => machine.registerDevicePagemap({ name: "one-too-many" } as never)).toThrow(/255/);
  });

  it("device names are checked: missing, malformed and duplicate names are refused", () => {
    const { core } = makeSystem();
    const plugin = fakePlugin(RecordingFakeDriver);
    expect(thrown(() => core.addDevice(plugin, {} as DeviceConfig))).toMatchObject({ errno: "EINVAL" });
    expect(thrown(() => core.addDevice(plugin, { name: "0gpu" }))).toMatchObject({ code: "BAD_CONFIG" });
    core.addDevice(plugin, { name: "gpu0" });
    expect(thrown(() => core.addDevice(plugin, { name: "gpu0" }))).toMatchObject({ errno: "EEXIST" });
    expect(core.device("gpu0").name).toBe("gpu0");
    expect(thrown(() => core.device("gpu9"))).toMatchObject({ errno: "ENODEV" });
  });
});
