import { describe, expect, it } from "vitest";
import {
  DEFAULT_MACHINE_CONFIG,
  MAX_MEMORY_BYTES,
  Machine,
  type MachineConfig,
  MachineConfigError,
  MmError,
  TASK_SIZE,
} from "../src/index.js";
import { MiB, thrown } from "./helpers.js";

function rejected(config: unknown): MachineConfigError {
  const e = thrown(() => new Machine(config as Partial<MachineConfig>));
  expect(e).toBeInstanceOf(MachineConfigError);
  expect(e).toBeInstanceOf(MmError);
  expect(e.errno).toBe("EINVAL");
  expect(e.code).toBe("BAD_CONFIG");
  return e as MachineConfigError;
}

describe("Machine options", () => {
  it("an unknown key is refused with the option it was most likely meant to be", () => {
    const e = rejected({ memorybytes: 64 * MiB });
    expect(e.message).toBe(
      "EINVAL: machine config: 'memorybytes' is not an option; did you mean 'memoryBytes'?",
    );
    expect(rejected({ zeroPages: false }).message).toContain("did you mean 'zeroPage'?");
    expect(rejected({ faultAround: 4096 }).issues[0].key).toBe("faultAround");
  });

  it("a key like no option lists the options there are", () => {
    const e = rejected({ machne: {} });
    expect(e.message).toContain("'machne' is not an option (options: memoryBytes, contentMode");
  });

  it("a value of the wrong form names the key, the expected form and the value given", () => {
    expect(rejected({ contentMode: "byte" }).message).toContain(
      `'contentMode' must be "bytes" or "tag", got "byte"`,
    );
    expect(rejected({ memoryBytes: "64M" }).message).toContain(
      `'memoryBytes' must be a whole number of bytes, got "64M"`,
    );
    expect(rejected({ zeroPage: 1 }).message).toContain("'zeroPage' must be true or false, got 1");
    expect(rejected({ memoryBytes: 5 * MiB }).message).toContain("must be a multiple of 2 MiB");
  });

  it("mmapBase beyond TASK_SIZE and mmapMinAddr at or above mmapBase are refused", () => {
    expect(rejected({ mmapBase: 2 ** 48 }).message).toContain("'mmapBase' must lie in (0, TASK_SIZE");
    expect(rejected({ mmapBase: TASK_SIZE + 2 * MiB }).issues[0].key).toBe("mmapBase");
    expect(rejected({ mmapMinAddr: 0x7f00_0000_0000 }).message).toContain(
      "'mmapMinAddr' must be below mmapBase",
    );
    expect(rejected({ mmapMinAddr: 100 }).message).toContain("page aligned");
  });

  it("memoryBytes above what the frame arrays may hold is refused before anything is allocated", () => {
    expect(rejected({ memoryBytes: 2 ** 50 }).message).toContain("'memoryBytes' must be at most 256 GiB");
    expect(rejected({ memoryBytes: MAX_MEMORY_BYTES + 2 * MiB }).issues[0].key).toBe("memoryBytes");
    expect(rejected({ maxMapCount: 2 ** 31 }).issues[0].key).toBe("maxMapCount");
  });

  it("every problem of one config is reported at once, without the schema library's dump", () => {
    const e = rejected({ thp: "sometimes", machne: 1, faultAroundBytes: 3000 });
    expect(e.issues.map((i) => i.key).sort()).toEqual(["faultAroundBytes", "machne", "thp"]);
    expect(e.message).not.toContain("{");
    expect(e.message.split("; ")).toHaveLength(3);
  });

  it("a config that is not an object is refused; a key given as undefined takes its default", () => {
    expect(rejected(null).message).toContain("must be an object, got null");
    expect(rejected("tag").message).toContain('got "tag"');
    const m = new Machine({ memoryBytes: 8 * MiB, zeroPage: undefined });
    expect(m.config.zeroPage).toBe(DEFAULT_MACHINE_CONFIG.zeroPage);
    expect(m.config.maxMapCount).toBe(65530);
    expect(m.config.mmapMinAddr).toBe(65536);
    expect(Object.isFrozen(m.config)).toBe(true);
  });
});
