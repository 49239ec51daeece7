import { inject, injectable } from "tsyringe";
import { describe, expect, it } from "vitest";
import { type DeviceConfig, type DeviceContext, HmmError, PluginError, TOKENS } from "../src/index.js";
import { fakePlugin, RecordingFakeDriver } from "./fakes.js";
import { makeSystem, thrown } from "./helpers.js";

/** A subclass that forgot its own @injectable() and constructor: tsyringe would call `new X()`. */
class UninjectedSubclassFakeDriver extends RecordingFakeDriver {}

/** The same with @injectable() but no constructor of its own: still `new X()`. */
@injectable()
class InjectableSubclassWithoutConstructorFakeDriver extends RecordingFakeDriver {}

/** A constructor that fails after the core registered the device's resources. */
@injectable()
class ThrowingConstructorFakeDriver extends RecordingFakeDriver {
  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
  ) {
    super(ctx, config);
    throw new Error("probe failed");
  }
}

/** How many pagemap owner ids are free (a machine has 255). */
function freeOwners(machine: ReturnType<typeof makeSystem>["machine"]): number {
  const ids: number[] = [];
  try {
    for (;;) ids.push(machine.registerDevicePagemap({ name: "probe" } as never));
  } catch {
    // all taken
  }
  for (const id of ids) machine.unregisterDevicePagemap(id);
  return ids.length;
}

describe("a failing addDevice leaves no trace", () => {
  const failures: [string, (sys: ReturnType<typeof makeSystem>) => unknown][] = [
    [
      "a driver constructor that throws",
      (s) => {
        const e = thrown(() => s.core.addDevice(fakePlugin(ThrowingConstructorFakeDriver), { name: "gpu0" }));
        expect((e as Error).message).toContain("probe failed");
        throw e;
      },
    ],
    [
      "a bad device config",
      (s) => s.core.addDevice(fakePlugin(RecordingFakeDriver), { name: "gpu0", memoryPages: -5 }),
    ],
    [
      "an unknown device config key",
      (s) => s.core.addDevice(fakePlugin(RecordingFakeDriver), { name: "gpu0", memorypages: 8 } as never),
    ],
    [
      "a callback form the driver lacks",
      (s) => s.core.addDevice(fakePlugin(RecordingFakeDriver), { name: "gpu0", callbackMode: "array" }),
    ],
    [
      "a driver class without its injections",
      (s) => s.core.addDevice(fakePlugin(UninjectedSubclassFakeDriver), { name: "gpu0" }),
    ],
  ];
  for (const [what, add] of failures) {
    it(`${what}: no stats entry, no pagemap owner, no device`, () => {
      const sys = makeSystem();
      const owners = freeOwners(sys.machine);
      expect(thrown(() => add(sys))).toBeInstanceOf(HmmError);
      expect([...sys.stats.devices.keys()]).toEqual([]);
      expect(sys.core.devices.size).toBe(0);
      expect(freeOwners(sys.machine)).toBe(owners);
      // The name is free for a correct device afterwards.
      expect(sys.core.addDevice(fakePlugin(RecordingFakeDriver), { name: "gpu0" }).state).toBe("active");
      expect([...sys.stats.devices.keys()]).toEqual(["gpu0"]);
    });
  }
});

describe("plugin validation catches lost constructor injections", () => {
  for (const cls of [UninjectedSubclassFakeDriver, InjectableSubclassWithoutConstructorFakeDriver]) {
    it(`${cls.name} is refused at addDevice, naming the class and its base's parameters`, () => {
      const { core } = makeSystem();
      const e = thrown(() => core.addDevice(fakePlugin(cls, "sub-fake"), { name: "gpu0" }));
      expect(e).toBeInstanceOf(PluginError);
      const m = (e as Error).message;
      expect(m).toContain(`driver class ${cls.name} has no constructor injections of its own`);
      expect(m).toContain("its base class RecordingFakeDriver takes injected parameters 0 (ctx), 1 (config)");
      expect(m).toContain(`new ${cls.name}()`);
    });
  }
});
