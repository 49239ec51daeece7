import { runWorkload, WORKLOAD_KIND_NAMES, type WorkloadKind, type WorkloadReport } from "@hmmkit/workloads";
import { describe, expect, it } from "vitest";
import { type GpuDriver, plugin } from "../src/index.js";

const SEED = 0x5eed;

/** Small specs of every kind (a few hundred pages each); device memory of 256 pages. */
const SPECS: Record<WorkloadKind, string> = {
  stream: "stream:size=1MiB,passes=2,write=0.5,cpu=0.25",
  random: "random:size=1MiB,accesses=512,passes=2,cpu=0.2",
  stencil: "stencil:size=512KiB,iters=3",
  pingpong: "pingpong:size=512KiB,rounds=4",
  fork: "fork:size=1MiB",
  churn: "churn:size=2MiB,chunk=256KiB,ops=8,huge=1",
  thp: "thp:size=4MiB,passes=2,write=0.5,cpu=0.1",
  oversub: "oversub:factor=1.5,passes=2",
};

/** gpu settings that must all give the same final memory. */
const CONFIGS: Record<string, Record<string, unknown>> = {
  remote: { migrate: "none" },
  "first-touch lru": { migrate: "first-touch" },
  "first-touch clock, thrashing, compound": {
    migrate: "first-touch",
    eviction: "clock",
    thrashing: true,
    compoundMigration: true,
  },
  "access-counter": { migrate: "access-counter", accessThreshold: 16 },
};

function expectClean(r: WorkloadReport, what: string): void {
  expect(r.failure, what).toBeNull();
  expect(r.errors.cancelled, what).toBe(0);
  expect(r.checks.data.mismatches, what).toBe(0);
  expect(r.checks.coherence.violations, what).toBe(0);
  expect(r.checks.leaks, what).toEqual({ frames: 0, deviceFrames: 0 });
  expect(r.ok, what).toBe(true);
}

describe("the gpu driver runs every workload through runWorkload", () => {
  for (const kind of WORKLOAD_KIND_NAMES) {
    it(`${kind}: every gpu setting gives one digest, clean data, coherence and leak checks`, () => {
      const digests = new Set<string>();
      const names = Object.keys(CONFIGS);
      const reports = names.map((n) =>
        runWorkload({ spec: SPECS[kind], seed: SEED, plugin, device: { memoryPages: 256, ...CONFIGS[n] } }),
      );
      reports.forEach((r, i) => {
        expectClean(r, `${names[i]} on ${r.spec}`);
        digests.add(String(r.digest));
      });
      expect(digests.size, [...digests].join(" ")).toBe(1);
      // The settings really differ: remote never migrates, first-touch does.
      expect(reports[0].deviceStats.migratedToDevice).toBe(0);
      if (kind !== "fork") expect(reports[1].deviceStats.migratedToDevice).toBeGreaterThan(0);
    });
  }

  it("oversub evicts with both policies and bytes mode gives the tag digest", () => {
    const tag = runWorkload({ spec: SPECS.oversub, seed: SEED, plugin, device: { memoryPages: 256 } });
    const bytes = runWorkload({
      spec: SPECS.oversub,
      seed: SEED,
      plugin,
      device: { memoryPages: 256, eviction: "clock" },
      machine: { contentMode: "bytes" },
    });
    expectClean(tag, "tag");
    expectClean(bytes, "bytes");
    expect(bytes.digest).toBe(tag.digest);
    expect(tag.deviceStats.evictions).toBeGreaterThan(0);
    expect(bytes.deviceStats.evictions).toBeGreaterThan(0);
  });

  it("pingpong with thrashing detection pins blocks remote", () => {
    let drv: GpuDriver | null = null;
    const r = runWorkload({
      spec: "pingpong:size=512KiB,rounds=8",
      seed: SEED,
      attach: (sys) => {
        const dev = sys.core.addDevice(plugin, { name: "gpu0", memoryPages: 256, thrashing: true });
        drv = dev.driver as GpuDriver;
        return dev;
      },
    });
    expectClean(r, "pingpong");
    expect(drv!.gpuStats.thrashingPins).toBeGreaterThan(0);
  });
});
