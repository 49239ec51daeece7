import {
  createHmm,
  type DeviceContext,
  HMM_API_VERSION,
  type HmmCore,
  HmmError,
  PluginError,
  TOKENS,
} from "@hmmkit/core";
import { inject, injectable } from "tsyringe";
import { describe, expect, it } from "vitest";
import {
  attachSharedMirror,
  LEGACY_API_VERSION,
  LEGACY_TOKENS,
  SharedMirror,
  sharedMirrorOf,
  validateSharedMirrorPlugin,
} from "../src/index.js";
import { fakeLegacyPlugin, HmmPtReadingFakeDriver } from "./fakes.js";

/** A fake driver whose constructor parameter has no @inject (tsyringe could not build it). */
@injectable()
class UninjectedFakeDriver extends HmmPtReadingFakeDriver {
  constructor(x: unknown) {
    super(x as never, x as never, x as never);
  }
}

/** A fake driver that also implements a per-PTE callback (not allowed in a shared-mirror driver). */
@injectable()
class PerPteCallbackFakeDriver extends HmmPtReadingFakeDriver {
  mirrorPte(): void {}
}

function problems(candidate: unknown): string {
  try {
    validateSharedMirrorPlugin(candidate, "test.ts");
  } catch (e) {
    expect(e).toBeInstanceOf(PluginError);
    return (e as Error).message;
  }
  throw new Error("expected a PluginError");
}

describe("attaching shared-mirror plugins", () => {
  it("the core refuses a shared-mirror plugin in addDevice and points to the legacy layer", () => {
    const { core } = createHmm();
    expect(() => core.addDevice(fakeLegacyPlugin(HmmPtReadingFakeDriver), { name: "x" })).toThrow(
      /attach it through the legacy layer \(@hmmkit\/legacy, attachSharedMirror\)/,
    );
  });

  it("refuses a per-pte plugin, naming HmmCore.addDevice", () => {
    expect(problems({ ...fakeLegacyPlugin(HmmPtReadingFakeDriver), design: "per-pte" })).toMatch(
      /'design' is "per-pte".*HmmCore.addDevice/,
    );
  });

  it("lists every problem of a malformed plugin with the plugin's name and source", () => {
    const msg = problems({
      name: "Bad Name",
      apiVersion: HMM_API_VERSION,
      design: "shared-mirror",
      driver: () => 0,
    });
    expect(msg).toMatch(/plugin 'Bad Name' \(test.ts\) is invalid/);
    expect(msg).toMatch(/'name' must be lower-case/);
    expect(msg).toMatch(/apiVersion '1.0.0' is not compatible with the legacy layer's API 12.0.0/);
    expect(msg).toMatch(/'driver' must be a class, got a function that is not a constructor/);
  });

  it("names each missing callback and a per-PTE callback in a shared-mirror driver", () => {
    class Empty {}
    expect(problems(fakeLegacyPlugin(Empty as never))).toMatch(
      /no 'update' method[\s\S]*no 'copyToDevice'[\s\S]*no 'copyFromDevice'[\s\S]*no 'translate'[\s\S]*no 'translations'/,
    );
    expect(problems(fakeLegacyPlugin(PerPteCallbackFakeDriver))).toMatch(
      /implements 'mirrorPte', a per-PTE callback/,
    );
  });

  it("names a constructor parameter without @inject", () => {
    expect(problems(fakeLegacyPlugin(UninjectedFakeDriver))).toMatch(
      /constructor parameter 0 has no @inject/,
    );
  });

  it("refuses the layer's own config keys and bad options, leaving nothing attached", () => {
    const { core } = createHmm();
    const p = fakeLegacyPlugin(HmmPtReadingFakeDriver);
    expect(() => attachSharedMirror(core, p, { name: "a", callbackMode: "array" })).toThrow(
      /'callbackMode' is set by the legacy layer/,
    );
    expect(() => attachSharedMirror(core, p, { name: "a" }, { delayedPruning: -1 } as never)).toThrow(
      /'delayedPruning'/,
    );
    expect(() => attachSharedMirror(core, p, { name: "a" }, { sharedDirectory: true } as never)).toThrow(
      HmmError,
    );
    expect(core.devices.size).toBe(0);
  });

  it("builds the driver by dependency injection with the device context, config and its SharedMirror", () => {
    const { core } = createHmm();
    @injectable()
    class ConfigReadingFakeDriver extends HmmPtReadingFakeDriver {
      readonly seenConfig: Record<string, unknown>;
      constructor(
        @inject(TOKENS.DeviceContext) ctx: DeviceContext,
        @inject(LEGACY_TOKENS.SharedMirror) sm: SharedMirror,
        @inject(TOKENS.HmmCore) c: HmmCore,
        @inject(TOKENS.DeviceConfig) config: Record<string, unknown>,
      ) {
        super(ctx, sm, c);
        this.seenConfig = config;
      }
    }
    const plugin = { ...fakeLegacyPlugin(ConfigReadingFakeDriver), configKeys: ["tableLevels"] };
    const { device, mirror } = attachSharedMirror(core, plugin, { name: "di0", tableLevels: 4 });
    const drv = mirror.driver as ConfigReadingFakeDriver;
    expect(drv.sm).toBe(mirror);
    expect(mirror).toBeInstanceOf(SharedMirror);
    expect(drv.core).toBe(core);
    expect(drv.ctx.name).toBe("di0");
    expect(drv.seenConfig).toEqual({ name: "di0", tableLevels: 4 });
    expect(sharedMirrorOf(device)).toBe(mirror);
    expect(device.plugin.name).toBe("hmmpt-fake");
    expect(LEGACY_API_VERSION).toBe("12.0.0");
  });
});

describe("SharedMirror arguments", () => {
  it("register and unregister refuse what is not a live address space of the core's machine, naming the operation", () => {
    const { core } = createHmm();
    const { mirror } = attachSharedMirror(core, fakeLegacyPlugin(HmmPtReadingFakeDriver), { name: "a0" });
    const other = createHmm().machine.createProcess();
    expect(() => mirror.register(other)).toThrow(/SharedMirror.register: 'mm' must be a live address space/);
    expect(() => mirror.unregister(null as never)).toThrow(/SharedMirror.unregister/);
    expect(() => mirror.mirror(12345)).toThrow(/no mirror of address space 12345/);
  });
});
