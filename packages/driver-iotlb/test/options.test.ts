import { type HmmError, validatePlugin } from "@hmmkit/core";
import { describe, expect, it } from "vitest";
import defaultPlugin, {
  DEFAULT_IOTLB_OPTIONS,
  IotlbDriver,
  parseIotlbOptions,
  plugin,
} from "../src/index.js";
import { addIotlb, makeSystem } from "./helpers.js";

/** The error addDevice throws for an iotlb device with `config`. */
function refusal(config: Record<string, unknown>): HmmError {
  const sys = makeSystem();
  try {
    addIotlb(sys.core, config);
  } catch (e) {
    expect(sys.core.devices.size).toBe(0);
    return e as HmmError;
  }
  throw new Error(`expected ${JSON.stringify(config)} to be refused`);
}

describe("iotlb plugin and options", () => {
  it("the plugin descriptor is valid, per-pte, and the default export", () => {
    expect(validatePlugin(plugin, "@hmmkit/driver-iotlb")).toBe(plugin);
    expect(defaultPlugin).toBe(plugin);
    expect(plugin.name).toBe("iotlb");
    expect(plugin.design).toBe("per-pte");
    expect(plugin.driver).toBe(IotlbDriver);
    expect([...(plugin.configKeys ?? [])].sort()).toEqual([
      "faultWindow",
      "hugeEntries",
      "tlbEntries",
      "tlbWays",
    ]);
  });

  it("defaults: 64 entries, 4 ways (16 sets), a one-page fault window, huge entries on", () => {
    const sys = makeSystem();
    const { drv } = addIotlb(sys.core);
    expect(drv.options).toEqual(DEFAULT_IOTLB_OPTIONS);
    expect(DEFAULT_IOTLB_OPTIONS).toEqual({ tlbEntries: 64, tlbWays: 4, faultWindow: 1, hugeEntries: true });
    expect(drv.tlb.sets).toBe(16);
  });

  it.each([
    [{ tlbEntries: 0 }, "'tlbEntries' must be an integer from 1 to 65536 (default 64), got 0"],
    [{ tlbEntries: 64.5 }, "'tlbEntries' must be an integer from 1 to 65536 (default 64), got 64.5"],
    [
      { tlbEntries: "64" },
      "'tlbEntries' must be an integer from 1 to 65536 (default 64), got \"64\" (a string)",
    ],
    [{ tlbWays: 3 }, "'tlbWays' 3 does not divide 'tlbEntries' 64 into whole sets"],
    [{ tlbWays: 128 }, "'tlbWays' 128 does not divide 'tlbEntries' 64"],
    [{ tlbEntries: 48, tlbWays: 4 }, "gives 12 sets, which is not a power of two"],
    [{ faultWindow: 3 }, "'faultWindow' must be a power of two from 1 to 512 pages (default 1), got 3"],
    [{ faultWindow: 1024 }, "'faultWindow' must be a power of two from 1 to 512 pages (default 1), got 1024"],
    [{ hugeEntries: "yes" }, "'hugeEntries' must be a boolean (default true), got \"yes\" (a string)"],
  ])("refuses %o, naming the key and the value", (config, message) => {
    const e = refusal(config);
    expect(e.errno).toBe("EINVAL");
    expect(e.message).toContain("device config iotlb0 (plugin 'iotlb')");
    expect(e.message).toContain(message);
  });

  it("lists every bad key at once", () => {
    const e = refusal({ tlbEntries: -1, faultWindow: 0 });
    expect(e.message).toMatch(/'tlbEntries' must be .*got -1/);
    expect(e.message).toMatch(/'faultWindow' must be .*got 0/);
  });

  it("an undeclared key is refused by the core with a suggestion", () => {
    const e = refusal({ tlbWay: 2 });
    expect(e.message).toContain("unknown key 'tlbWay' (did you mean 'tlbWays'?)");
  });

  it("parseIotlbOptions gives BAD_CONFIG errors and accepts a fully associative or direct-mapped TLB", () => {
    expect(() => parseIotlbOptions({ name: "x", tlbWays: 0 })).toThrow(/'tlbWays' must be/);
    try {
      parseIotlbOptions({ name: "x", tlbWays: 0 });
    } catch (e) {
      expect((e as HmmError).code).toBe("BAD_CONFIG");
    }
    expect(parseIotlbOptions({ tlbEntries: 32, tlbWays: 32 }).tlbWays).toBe(32);
    expect(parseIotlbOptions({ tlbEntries: 32, tlbWays: 1 }).tlbWays).toBe(1);
  });
});
