import { MmError } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { CostModel, createHmm, H100_UVM_PROFILE, HmmError } from "../src/index.js";
import { fakePlugin, RecordingFakeDriver } from "./fakes.js";
import { makeSystem, thrown } from "./helpers.js";

/** The BAD_CONFIG HmmError `fn` throws; returns its message. */
function badConfig(fn: () => unknown): string {
  const e = thrown(fn);
  expect(e).toBeInstanceOf(HmmError);
  expect((e as HmmError).code).toBe("BAD_CONFIG");
  expect((e as HmmError).errno).toBe("EINVAL");
  return (e as Error).message;
}

const add = (config: Record<string, unknown>) => () =>
  makeSystem().core.addDevice(fakePlugin(RecordingFakeDriver), { name: "gpu0", ...config } as never);

describe("options are validated strictly, with readable errors", () => {
  it("a typo in createHmm's options is refused with a did-you-mean", () => {
    expect(badConfig(() => createHmm({ machne: {} } as never))).toBe(
      "EINVAL: createHmm options: unknown key 'machne' (did you mean 'machine'?); known keys: machine, config, cost, parent",
    );
  });

  it("a typo in HmmConfig is refused with a did-you-mean", () => {
    expect(badConfig(() => createHmm({ config: { evictBatchPage: 4 } as never }))).toContain(
      "createHmm options 'config': unknown key 'evictBatchPage' (did you mean 'evictBatchPages'?)",
    );
  });

  for (const v of [Number.NaN, 0, -5, 1.5, "8"]) {
    it(`evictBatchPages of ${String(v)} is refused instead of silently disabling eviction`, () => {
      expect(badConfig(() => createHmm({ config: { evictBatchPages: v as never } }))).toMatch(
        /createHmm options 'config': 'evictBatchPages' must be pages evicted at once: an integer from 1 .*, got /,
      );
    });
  }

  it("a typo in a device config is refused with a did-you-mean, naming the device and plugin", () => {
    expect(badConfig(add({ memorypages: 8 }))).toContain(
      "device config gpu0 (plugin 'recording-fake'): unknown key 'memorypages' (did you mean 'memoryPages'?)",
    );
  });

  it('evictOnPressure: "false" is refused instead of leaving eviction on', () => {
    expect(badConfig(add({ evictOnPressure: "false" }))).toContain(
      `'evictOnPressure' must be a boolean, got "false" (a string)`,
    );
  });

  it("every bad key of a device config is listed, one line each", () => {
    const m = badConfig(add({ memoryPages: 0, callbackMode: "fast", pmdCalback: true }));
    expect(m).toContain(
      "'memoryPages' must be device memory: an integer number of 4 KiB pages from 1 to 33554432, got 0",
    );
    expect(m).toContain(`'callbackMode' must be "auto", "per-pte" or "array", got "fast" (a string)`);
    expect(m).toContain("unknown key 'pmdCalback' (did you mean 'pmdCallback'?)");
  });

  it("a device name that is not a string is refused", () => {
    expect(badConfig(add({ name: 42 }))).toContain("'name' must be the device name: a string of letters");
  });

  it("keys a plugin declares in configKeys reach the driver; others are refused", () => {
    const { core } = makeSystem();
    const plugin = { ...fakePlugin(RecordingFakeDriver), configKeys: ["lanes"] };
    const dev = core.addDevice(plugin, { name: "gpu0", lanes: 4 });
    expect(dev.config.lanes).toBe(4);
    expect(badConfig(() => core.addDevice(plugin, { name: "gpu1", lane: 4 }))).toContain(
      "unknown key 'lane' (did you mean 'lanes'?)",
    );
  });

  it("cost overrides: null, a constant named toString, and a string value are refused", () => {
    expect(badConfig(() => createHmm({ cost: { overrides: null as never } }))).toContain(
      "'overrides' must be an object of cost constants (faultServiceUs,",
    );
    expect(badConfig(() => createHmm({ cost: { overrides: { toString: 1 } as never } }))).toContain(
      "unknown key 'overrides.toString'",
    );
    expect(badConfig(() => createHmm({ cost: { overrides: { pageMapUs: "1" as never } } }))).toContain(
      `'overrides.pageMapUs' must be a finite number >= 0, got "1" (a string)`,
    );
    expect(badConfig(() => createHmm({ cost: { profle: H100_UVM_PROFILE } as never }))).toContain(
      "unknown key 'profle' (did you mean 'profile'?)",
    );
    // The model itself refuses an inherited name too.
    const e = thrown(() => new CostModel(H100_UVM_PROFILE, { toString: 1 } as never));
    expect((e as MmError).message).toMatch(/unknown constant 'toString'/);
  });

  it("the machine's own options are left to Machine's validation", () => {
    const e = thrown(() => createHmm({ machine: { memoryByte: 1 << 26 } as never }));
    expect(e).toBeInstanceOf(MmError);
    expect((e as MmError).code).toBe("BAD_CONFIG");
    expect((e as Error).message).toContain("memoryByte");
  });

  it("a correct configuration is accepted unchanged", () => {
    const { core, cost } = createHmm({
      machine: { memoryBytes: 1 << 26 },
      config: { evictBatchPages: 64, defaultDeviceMemoryPages: 128 },
      cost: { overrides: { pageMapUs: 0.4 } },
    });
    expect(core.config.evictBatchPages).toBe(64);
    expect(cost.constants.pageMapUs).toBe(0.4);
    const dev = core.addDevice(fakePlugin(RecordingFakeDriver), {
      name: "gpu0",
      callbackMode: "per-pte",
      pmdCallback: false,
      evictOnPressure: false,
    });
    expect(dev.memory.npages).toBe(128);
  });
});
