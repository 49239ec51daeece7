import { describe, expect, it } from "vitest";
import {
  apiVersionCompatible,
  type DeviceTranslation,
  HMM_API_VERSION,
  HmmError,
  PluginError,
  validatePlugin,
} from "../src/index.js";
import { ArrayFakeDriver, DualFormFakeDriver, RecordingFakeDriver } from "./fakes.js";
import { makeSystem, thrown } from "./helpers.js";

const good = {
  name: "good-fake",
  apiVersion: HMM_API_VERSION,
  design: "per-pte",
  driver: RecordingFakeDriver,
};

/** The PluginError validatePlugin throws for `candidate`. */
function problemsOf(candidate: unknown, source?: string): PluginError {
  const e = thrown(() => validatePlugin(candidate, source));
  expect(e).toBeInstanceOf(PluginError);
  expect(e).toBeInstanceOf(HmmError);
  expect((e as PluginError).errno).toBe("EINVAL");
  expect((e as PluginError).code).toBe("PLUGIN_INVALID");
  return e as PluginError;
}

class NoMirrorFakeDriver {
  invalidate(): void {}
  copyToDevice(): void {}
  copyFromDevice(): void {}
  *translations(): Iterable<DeviceTranslation> {}
}

class TypoFakeDriver extends NoMirrorFakeDriver {
  mirrorPTE(): void {}
}

class MissingCallbacksFakeDriver {
  mirrorPte(): void {}
}

describe("plugin validation", () => {
  it("a complete plugin is accepted as is, with either callback form", () => {
    expect(validatePlugin(good)).toBe(good);
    const arr = { ...good, driver: ArrayFakeDriver };
    expect(validatePlugin(arr, "pkg")).toBe(arr);
  });

  it("a plugin may name the form 'auto' picks; a form its driver lacks, or an unknown one, is refused", () => {
    const sys = makeSystem();
    const dual = { ...good, name: "dual-fake", driver: DualFormFakeDriver };
    expect(sys.core.addDevice(dual, { name: "d0" }).callbackMode).toBe("per-pte");
    const prefersArray = { ...dual, callbackMode: "array" };
    expect(sys.core.addDevice(prefersArray, { name: "d1" }).callbackMode).toBe("array");
    // The device config still wins.
    expect(sys.core.addDevice(prefersArray, { name: "d2", callbackMode: "per-pte" }).callbackMode).toBe(
      "per-pte",
    );
    expect(problemsOf({ ...good, callbackMode: "array" }).message).toContain(
      `'callbackMode' is "array" but the driver has no 'mirrorPtes'`,
    );
    expect(problemsOf({ ...good, callbackMode: "batched" }).message).toContain(
      `'callbackMode' must be "per-pte" or "array", got "batched"`,
    );
  });

  it("a plugin without a name is refused, and the message names where it came from", () => {
    const e = problemsOf({ ...good, name: undefined }, "./plugins/nameless.js");
    expect(e.message).toContain("plugin ./plugins/nameless.js is invalid");
    expect(e.message).toContain("missing 'name'");
    expect(problemsOf({ ...good, name: "" }).message).toContain("missing 'name'");
    expect(problemsOf({ ...good, name: "My GPU" }).message).toMatch(/'name' must be lower-case.*'My GPU'/);
  });

  it("an apiVersion of another major version, or of a newer minor version, is refused with both versions named", () => {
    const major = problemsOf({ ...good, apiVersion: "2.0.0" }, "pkg-a");
    expect(major.message).toContain("'good-fake' (pkg-a)");
    expect(major.message).toContain(
      `apiVersion '2.0.0' is not compatible with this core's API ${HMM_API_VERSION}`,
    );
    expect(problemsOf({ ...good, apiVersion: "1.1.0" }).message).toContain("apiVersion '1.1.0'");
    expect(problemsOf({ ...good, apiVersion: "0.9.0" }).message).toContain("apiVersion '0.9.0'");
    expect(problemsOf({ ...good, apiVersion: undefined }).message).toContain("missing 'apiVersion'");
    expect(problemsOf({ ...good, apiVersion: "latest" }).message).toContain("apiVersion 'latest'");
  });

  it("an unknown design is refused", () => {
    expect(problemsOf({ ...good, design: "mirror-table" }).message).toContain(
      `'design' must be "per-pte" or "shared-mirror", got "mirror-table"`,
    );
  });

  it("a driver that is not a class is refused with a PluginError, not a crash", () => {
    expect(problemsOf({ ...good, driver: undefined }).message).toContain("missing 'driver'");
    expect(problemsOf({ ...good, driver: {} }).message).toContain("'driver' must be a class, got object");
    expect(problemsOf({ ...good, driver: "RecordingFakeDriver" }).message).toContain(
      "'driver' must be a class, got string",
    );
    expect(problemsOf({ ...good, driver: () => ({}) }).message).toContain(
      "'driver' must be a class, got a function that is not a constructor",
    );
  });

  it("a driver class without invalidate, the copy callbacks or translations is refused, naming each", () => {
    const e = problemsOf({ ...good, driver: MissingCallbacksFakeDriver });
    for (const cb of ["invalidate", "copyToDevice", "copyFromDevice", "translations"])
      expect(e.message).toContain(`driver class MissingCallbacksFakeDriver has no '${cb}' method`);
  });

  it("a driver class with neither mirrorPte nor mirrorPtes is refused", () => {
    expect(problemsOf({ ...good, driver: NoMirrorFakeDriver }).message).toContain(
      "driver class NoMirrorFakeDriver implements neither 'mirrorPte' nor 'mirrorPtes'",
    );
  });

  it("a misspelled mirrorPTE method is reported as not part of the contract", () => {
    const e = problemsOf({ ...good, driver: TypoFakeDriver });
    expect(e.message).toContain("driver method 'mirrorPTE' is not part of the contract (typo?)");
    expect(e.message).toContain("implements neither 'mirrorPte' nor 'mirrorPtes'");
  });

  it("every problem is listed in one error, one per line", () => {
    const e = problemsOf({ name: "Bad Name", apiVersion: "3.0.0", design: "x", driver: 5 });
    expect(e.message.split("\n  - ")).toHaveLength(5);
  });

  it("something that is not an object is refused", () => {
    expect(problemsOf(null).message).toContain("expected a plugin object, got null");
    expect(problemsOf("gpu").message).toContain("expected a plugin object, got string");
  });

  it("addDevice refuses an invalid plugin and registers nothing", () => {
    const { core } = makeSystem();
    const e = thrown(() =>
      core.addDevice({ ...good, driver: NoMirrorFakeDriver }, { name: "gpu0" }, "my-pkg"),
    );
    expect(e).toBeInstanceOf(PluginError);
    expect((e as Error).message).toContain("'good-fake' (my-pkg)");
    expect(core.devices.size).toBe(0);
    expect(core.addDevice(good, { name: "gpu0" }).name).toBe("gpu0");
  });
});

describe("addDevice and the shared-mirror design", () => {
  it("refuses a valid shared-mirror plugin with a message pointing at the legacy layer", () => {
    const { core } = makeSystem();
    const e = thrown(() =>
      core.addDevice(
        { ...good, name: "legacy-fake", design: "shared-mirror" },
        { name: "gpu0" },
        "legacy.ts",
      ),
    );
    expect(e).toBeInstanceOf(HmmError);
    expect((e as HmmError).message).toMatch(
      /plugin 'legacy-fake' \(legacy\.ts\) uses the shared-mirror design.*@hmmkit\/legacy/,
    );
    expect(core.devices.size).toBe(0);
  });
});

describe("apiVersionCompatible", () => {
  it("accepts the same major version when the core is at least as new as the plugin needs", () => {
    expect(apiVersionCompatible(HMM_API_VERSION)).toBe(true);
    expect(apiVersionCompatible(`^${HMM_API_VERSION}`)).toBe(true);
    expect(apiVersionCompatible("1.2.0", "1.3.1")).toBe(true);
    expect(apiVersionCompatible("^1.2.0", "1.2.0")).toBe(true);
    expect(apiVersionCompatible("1.2.3", "1.2.4")).toBe(true);
    expect(apiVersionCompatible(" 1.0.0 ", "1.0.0")).toBe(true);
    expect(apiVersionCompatible("1.0.0-beta.1", "1.0.0")).toBe(true);
  });

  it("refuses another major version, a newer minor or patch, and tilde ranges of another minor", () => {
    expect(apiVersionCompatible("2.0.0", "1.9.9")).toBe(false);
    expect(apiVersionCompatible("1.0.0", "2.0.0")).toBe(false);
    expect(apiVersionCompatible("1.3.0", "1.2.9")).toBe(false);
    expect(apiVersionCompatible("1.2.5", "1.2.4")).toBe(false);
    expect(apiVersionCompatible("~1.2.0", "1.3.0")).toBe(false);
    expect(apiVersionCompatible("~1.2.0", "1.2.7")).toBe(true);
  });

  it("refuses what is not a version", () => {
    for (const v of ["", "1", "1.0", "v1.0.0", ">=1.0.0", "1.0.0.0", "latest"])
      expect(apiVersionCompatible(v, "1.0.0")).toBe(false);
  });
});
