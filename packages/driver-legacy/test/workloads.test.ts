import gpu from "@hmmkit/driver-gpu";
import iotlb from "@hmmkit/driver-iotlb";
import { sharedMirrorOf } from "@hmmkit/legacy";
import { runWorkload, WORKLOAD_KIND_NAMES, type WorkloadReport } from "@hmmkit/workloads";
import { describe, expect, it } from "vitest";
import { SMALL_SPECS } from "../../../test/devices/designs.js";
import { attachLegacy, legacyAttach } from "../src/index.js";

const SEED = 0x1e9;
const MEMORY_PAGES = 256;

function expectClean(r: WorkloadReport, what: string): void {
  expect(r.failure, what).toBeNull();
  expect(r.errors.cancelled, what).toBe(0);
  expect(r.checks.data.mismatches, what).toBe(0);
  expect(r.checks.coherence.violations, what).toBe(0);
  expect(r.checks.leaks, what).toEqual({ frames: 0, deviceFrames: 0 });
}

describe("the legacy driver under the workloads runner", () => {
  for (const kind of WORKLOAD_KIND_NAMES) {
    // iotlb too, on every kind and both content modes: test/devices/agreement.test.ts.
    it(`${kind}: the same final memory digest as gpu, no mismatch, coherent, no leak`, () => {
      const spec = SMALL_SPECS[kind];
      const g = runWorkload({ spec, seed: SEED, plugin: gpu, device: { memoryPages: MEMORY_PAGES } });
      const l = runWorkload({ spec, seed: SEED, attach: legacyAttach({ memoryPages: MEMORY_PAGES }) });
      expectClean(l, `legacy on ${spec}`);
      expect(l.digest).toBe(g.digest);
      expect(Object.keys(l.deviceStats).sort()).toEqual(Object.keys(g.deviceStats).sort());
      expect(l.deviceStats.mirrorBytesPeak).toBeGreaterThan(0);
    });
  }

  it("with delayed pruning and shared directories on, the digests still agree", () => {
    for (const kind of ["churn", "fork", "pingpong"] as const) {
      const spec = SMALL_SPECS[kind];
      const base = runWorkload({ spec, seed: SEED, plugin: iotlb, device: { memoryPages: MEMORY_PAGES } });
      const l = runWorkload({
        spec,
        seed: SEED,
        attach: (s) =>
          attachLegacy(
            s.core,
            { name: "dev0", memoryPages: MEMORY_PAGES },
            { delayedPruning: 32, sharedDirectories: true },
          ).device,
      });
      expectClean(l, `legacy (options) on ${spec}`);
      expect(l.digest).toBe(base.digest);
    }
  });

  it("the attach hook gives the runner the core's device of a shared mirror", () => {
    let seen = false;
    runWorkload({
      spec: SMALL_SPECS.stream,
      seed: SEED,
      attach: (s) => {
        const dev = legacyAttach()(s);
        seen = sharedMirrorOf(dev) !== undefined;
        return dev;
      },
    });
    expect(seen).toBe(true);
  });
});
