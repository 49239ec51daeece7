import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  formatBinarySize,
  parseBinarySize,
  parseWorkloadSpec,
  resolveWorkloadSpec,
  WORKLOAD_KIND_NAMES,
  WORKLOAD_KINDS,
  WorkloadSpecError,
  workloadKindsMarkdown,
} from "../src/index.js";

const MiB = 1024 * 1024;

/** The WorkloadSpecError `text` gives. */
function specError(text: string): WorkloadSpecError {
  try {
    parseWorkloadSpec(text);
  } catch (e) {
    expect(e).toBeInstanceOf(WorkloadSpecError);
    const err = e as WorkloadSpecError;
    expect(err.code).toBe("BAD_SPEC");
    expect(err.errno).toBe("EINVAL");
    expect(err.spec).toBe(text);
    expect(err.message).toContain(JSON.stringify(text));
    return err;
  }
  throw new Error(`expected ${JSON.stringify(text)} to be refused`);
}

describe("sizes with binary units", () => {
  it("B, KiB, MiB, GiB and TiB multiply by powers of 1024 and a plain integer is bytes", () => {
    expect(parseBinarySize("4096")).toBe(4096);
    expect(parseBinarySize("8192B")).toBe(8192);
    expect(parseBinarySize("4KiB")).toBe(4096);
    expect(parseBinarySize("256MiB")).toBe(256 * MiB);
    expect(parseBinarySize("1GiB")).toBe(1024 * MiB);
    expect(parseBinarySize("2TiB")).toBe(2 * 1024 ** 4);
    expect(parseBinarySize("1MB")).toBeNull();
    expect(parseBinarySize("1.5MiB")).toBeNull();
    expect(parseBinarySize("-4KiB")).toBeNull();
  });

  it("a size prints in the largest unit that divides it exactly", () => {
    expect(formatBinarySize(256 * 1024)).toBe("256KiB");
    expect(formatBinarySize(3 * MiB)).toBe("3MiB");
    expect(formatBinarySize(1024 ** 3)).toBe("1GiB");
    expect(formatBinarySize(12288)).toBe("12KiB");
  });
});

describe("parseWorkloadSpec", () => {
  it("fills every default and normalizes the text: every key, in table order, sizes in their unit", () => {
    const s = parseWorkloadSpec("stream:write=0.5,size=256MiB,passes=2");
    expect(s.kind).toBe("stream");
    expect(s.params).toEqual({ size: 256 * MiB, passes: 2, write: 0.5, cpu: 0, init: 1, wave: 0 });
    expect(s.text).toBe("stream:size=256MiB,passes=2,write=0.5,cpu=0,init=1,wave=0");
    expect(parseWorkloadSpec(s.text)).toEqual(s);
  });

  it("a kind alone takes every default, and a plain integer size is bytes", () => {
    expect(parseWorkloadSpec("pingpong").params).toEqual({ size: 4 * MiB, rounds: 8, wave: 0 });
    expect(parseWorkloadSpec(" random: size=1048576 ").params.size).toBe(MiB);
  });

  it("every kind in the table parses with its defaults", () => {
    for (const kind of WORKLOAD_KIND_NAMES) {
      const s = parseWorkloadSpec(kind);
      for (const [k, def] of Object.entries(WORKLOAD_KINDS[kind].keys)) expect(s.params[k]).toBe(def.default);
    }
  });

  it("an unknown kind is named, with a did-you-mean and the list of kinds", () => {
    const e = specError("strem:size=1MiB");
    expect(e.problem).toBe("unknown-kind");
    expect(e.kind).toBe("strem");
    expect(e.message).toContain("unknown kind 'strem' (did you mean 'stream'?)");
    expect(e.message).toContain(`kinds: ${WORKLOAD_KIND_NAMES.join(", ")}`);
    expect(specError("blah").message).not.toContain("did you mean");
  });

  it("an unknown key is named with the kind's keys", () => {
    const e = specError("stream:siz=1MiB");
    expect(e.problem).toBe("unknown-key");
    expect(e.key).toBe("siz");
    expect(e.message).toContain("unknown key 'siz' for kind 'stream' (did you mean 'size'?)");
    expect(e.message).toContain("keys of stream: size, passes, write, cpu, init, wave");
  });

  it("a bad value is named with its key, the value and the form expected", () => {
    const cases: [string, string, string][] = [
      ["stream:size=3KiB", "size", "a positive multiple of 4 KiB"],
      ["stream:size=0", "size", "from 4KiB"],
      ["stream:size=1MB", "size", "binary unit"],
      ["stream:size=1.5MiB", "size", "e.g. 64MiB"],
      ["stream:write=1.5", "write", "a fraction from 0 to 1"],
      ["stream:write=half", "write", "a fraction"],
      ["stream:cpu=0.95", "cpu", "a fraction from 0 to 0.9"],
      ["stream:passes=0", "passes", "an integer from 1 to 4096"],
      ["stream:passes=2.5", "passes", "an integer"],
      ["stream:init=2", "init", "an integer from 0 to 1"],
      ["thp:size=3MiB", "size", "a positive multiple of 2 MiB"],
      ["oversub:factor=0.5", "factor", "a number from 1 to 64"],
      ["churn:size=1MiB,chunk=768KiB", "chunk", "must divide 'size' into at least 2 chunks"],
    ];
    for (const [text, key, form] of cases) {
      const e = specError(text);
      expect(e.problem, text).toBe("bad-value");
      expect(e.key, text).toBe(key);
      expect(e.message, text).toContain(`key '${key}'`);
      expect(e.message, text).toContain(form);
    }
    expect(specError("stream:size=3KiB").message).toContain("got '3KiB'");
  });

  it("syntax errors say what to write: no kind, a key without a value, a key given twice, an empty key", () => {
    expect(specError("").problem).toBe("syntax");
    expect(specError(":size=1MiB").message).toContain("no kind");
    const noValue = specError("stream:size");
    expect(noValue.message).toContain("key 'size' has no value: write size=<a size");
    expect(specError("stream:size=").problem).toBe("syntax");
    expect(specError("stream:passes=1,passes=2").message).toContain("key 'passes' is given twice");
    expect(specError("stream:size=1MiB,,passes=2").message).toContain("empty key");
  });

  it("a parsed spec object is checked again as its text would be", () => {
    const s = parseWorkloadSpec("random:size=2MiB,accesses=100");
    expect(resolveWorkloadSpec(s)).toEqual(s);
    expect(() => resolveWorkloadSpec({ ...s, params: { ...s.params, accesses: 0 } })).toThrow(
      /key 'accesses' of kind 'random' must be an integer from 1/,
    );
    expect(() => resolveWorkloadSpec({ kind: "nope", params: {}, text: "" } as never)).toThrow(
      WorkloadSpecError,
    );
  });
});

describe("the README's kind table", () => {
  it("is the table the code holds (keys, defaults, forms and meanings cannot drift)", () => {
    const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
    expect(readme).toContain(workloadKindsMarkdown());
  });
});
