import { runWorkload, WORKLOAD_KIND_NAMES, type WorkloadReport } from "@hmmkit/workloads";
import { describe, expect, it } from "vitest";
import { DESIGNS, design, SMALL_SPECS } from "./designs.js";

const SEED = 0x5eed;

function expectClean(r: WorkloadReport, what: string): void {
  expect(r.failure, what).toBeNull();
  expect(r.errors.cancelled, what).toBe(0);
  expect(r.checks.data.mismatches, what).toBe(0);
  expect(r.checks.data.checked, what).toBeGreaterThanOrEqual(r.pages);
  expect(r.checks.coherence.violations, what).toBe(0);
  expect(r.checks.leaks, what).toEqual({ frames: 0, deviceFrames: 0 });
  expect(r.ok, what).toBe(true);
}

describe("every device design gives the same final memory for every workload", () => {
  for (const kind of WORKLOAD_KIND_NAMES) {
    it.each(["tag", "bytes"] as const)(
      `${kind}: one digest, no mismatch, no leak, the same stat names (%s content)`,
      (contentMode) => {
        const reports = DESIGNS.map((d) =>
          runWorkload({ spec: SMALL_SPECS[kind], seed: SEED, machine: { contentMode }, ...d.options }),
        );
        reports.forEach((r, i) => {
          expectClean(r, `${DESIGNS[i].name} on ${r.spec}`);
        });
        for (let i = 1; i < reports.length; i++)
          expect(reports[i].digest, `${DESIGNS[i].name} vs ${DESIGNS[0].name} on ${reports[0].spec}`).toBe(
            reports[0].digest,
          );
        const names = (r: WorkloadReport) => Object.keys(r.deviceStats).sort();
        for (let i = 1; i < reports.length; i++) expect(names(reports[i])).toEqual(names(reports[0]));
        // The designs really differ (iotlb never migrates, its memory is its TLB's whatever ran;
        // gpu migrates on first touch), and they ran the same device accesses.
        const by = (name: string) => reports[DESIGNS.indexOf(design(name))];
        const tlb = by("iotlb");
        expect(tlb.deviceStats.migratedToDevice).toBe(0);
        expect(tlb.deviceStats.mirrorBytesPeak).toBe(64 * 25);
        expect(by("iotlb (16 entries, 2 ways, window 8, no huge entries)").deviceStats.mirrorBytesPeak).toBe(
          16 * 25,
        );
        expect(by("gpu").deviceStats.migratedToDevice).toBeGreaterThan(0);
        for (const r of reports) expect(r.deviceStats.accesses).toBe(tlb.deviceStats.accesses);
      },
    );
  }

  it("a different seed gives a different digest on every design alike", () => {
    const spec = SMALL_SPECS.random;
    const digests = DESIGNS.map((d) => runWorkload({ spec, seed: SEED + 1, ...d.options }).digest);
    expect(new Set(digests).size).toBe(1);
    expect(digests[0]).not.toBe(runWorkload({ spec, seed: SEED, ...DESIGNS[0].options }).digest);
  });
});
