import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type Coverage, configArb, MUST_EXERCISE, opArb, runOps } from "./shadow-model.js";

describe("random syscall and access sequences against a shadow model", () => {
  /** Run random sequences in `mode` against the model and check they exercised the main paths. */
  function checkAgainstModel(
    mode: "tag" | "bytes",
    minLength: number,
    maxLength: number,
    numRuns: number,
  ): void {
    const coverage: Coverage = {};
    fc.assert(
      fc.property(
        configArb,
        fc.array(opArb(mode === "bytes"), { minLength, maxLength, size: "max" }),
        (config, ops) => {
          runOps(mode, config, ops, coverage);
        },
      ),
      { seed: 42, numRuns },
    );
    for (const k of MUST_EXERCISE) expect(coverage[k], k).toBeGreaterThan(0);
  }

  it("keep data, protections and frame accounting as the model says, in tag mode", () => {
    checkAgainstModel("tag", 20, 60, 80);
  });

  it("keep data, including raw bytes, as the model says, in bytes mode", () => {
    checkAgainstModel("bytes", 15, 40, 50);
  });

  it("give the same contentDigest after every op in bytes and tag mode for stamped writes", () => {
    fc.assert(
      fc.property(
        configArb,
        fc.array(opArb(false), { minLength: 10, maxLength: 25, size: "max" }),
        (config, ops) => {
          const bytes = runOps("bytes", config, ops);
          const tag = runOps("tag", config, ops);
          expect(bytes.digests).toEqual(tag.digests);
        },
      ),
      { seed: 42, numRuns: 30 },
    );
  });
});
