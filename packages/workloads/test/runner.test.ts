import { DeviceStats, HmmError } from "@hmmkit/core";
import { describe, expect, it } from "vitest";
import { runWorkload, WORKLOAD_KIND_NAMES, type WorkloadKind, type WorkloadReport } from "../src/index.js";
import { blockFaultPlugin, mapMirrorPlugin, migratingPlugin } from "./fakes.js";

/** Small specs of every kind (the test suite's sizes). */
const SPECS: Record<WorkloadKind, string> = {
  stream: "stream:size=1MiB,passes=2,write=0.5,cpu=0.25",
  random: "random:size=1MiB,accesses=512,passes=2,cpu=0.2",
  stencil: "stencil:size=512KiB,iters=3",
  pingpong: "pingpong:size=512KiB,rounds=4",
  fork: "fork:size=1MiB",
  churn: "churn:size=2MiB,chunk=256KiB,ops=8",
  thp: "thp:size=4MiB,passes=2,write=0.5,cpu=0.1",
  oversub: "oversub:factor=1.5,passes=2",
};

/** The device every test run uses: 256 pages (1 MiB) of device memory. */
const DEVICE = { memoryPages: 256 };

function expectClean(r: WorkloadReport): void {
  expect(r.failure).toBeNull();
  expect(r.errors.cancelled).toBe(0);
  expect(r.checks.data.mismatches).toBe(0);
  expect(r.checks.data.checked).toBeGreaterThanOrEqual(r.pages);
  expect(r.checks.coherence.violations).toBe(0);
  expect(r.checks.coherence.checks).toBe(r.phases);
  expect(r.checks.leaks).toEqual({ frames: 0, deviceFrames: 0 });
  expect(r.ok).toBe(true);
}

describe("runWorkload: every kind", () => {
  for (const kind of WORKLOAD_KIND_NAMES) {
    it(`${kind} runs clean on three different fake drivers and gives one digest`, () => {
      const reports = [mapMirrorPlugin, blockFaultPlugin, migratingPlugin].map((plugin) =>
        runWorkload({ spec: SPECS[kind], plugin, device: DEVICE, seed: 7 }),
      );
      for (const r of reports) expectClean(r);
      expect(reports[1].digest).toBe(reports[0].digest);
      expect(reports[2].digest).toBe(reports[0].digest);
      // The drivers did differ: the migrating one moved pages, the others map system memory remotely.
      expect(reports[0].deviceStats.migratedToDevice).toBe(0);
      expect(reports[2].deviceStats.migratedToDevice).toBeGreaterThan(0);
    });
  }
});

describe("runWorkload: races inside a phase", () => {
  it("churn's munmap, mprotect and DONTNEED race the device's faults (retried chunks), and the digest holds", () => {
    const spec = "churn:size=4MiB,chunk=512KiB,ops=8,huge=1";
    const reports = [mapMirrorPlugin, blockFaultPlugin, migratingPlugin].map((plugin) =>
      runWorkload({ spec, plugin, device: DEVICE, seed: 2 }),
    );
    for (const r of reports) expectClean(r);
    // A device fault chunk was walked again because an invalidation overlapped it, and the
    // partial munmap / mprotect / DONTNEED of a THP split its PMD under the device.
    expect(reports[1].deviceStats.retries).toBeGreaterThan(0);
    expect(reports[1].cpuStats.thpSplitPmd).toBeGreaterThan(0);
    expect(reports[1].digest).toBe(reports[0].digest);
    expect(reports[2].digest).toBe(reports[0].digest);
  });

  it("pingpong on a migrating driver moves pages back and forth every round", () => {
    const r = runWorkload({ spec: "pingpong:size=256KiB,rounds=4", plugin: migratingPlugin, device: DEVICE });
    expectClean(r);
    // Rounds 1..3: the CPU's half of the pages were on the device (the device took them the round before).
    expect(r.deviceStats.cpuFaultsOnDevicePages).toBe(3 * 32);
    expect(r.deviceStats.migratedToDevice).toBe(4 * 32);
  });
});

describe("runWorkload: the digest", () => {
  it("the same spec and seed give the same digest twice; another seed gives another", () => {
    const a = runWorkload({ spec: SPECS.random, plugin: mapMirrorPlugin, device: DEVICE, seed: 11 });
    const b = runWorkload({ spec: SPECS.random, plugin: mapMirrorPlugin, device: DEVICE, seed: 11 });
    const c = runWorkload({ spec: SPECS.random, plugin: mapMirrorPlugin, device: DEVICE, seed: 12 });
    expect(b.digest).toBe(a.digest);
    expect(b.deviceStats).toEqual(a.deviceStats);
    expect(c.digest).not.toBe(a.digest);
  });

  it("bytes and tag content modes give the same digest", () => {
    for (const kind of ["stream", "fork", "churn", "pingpong"] as const) {
      const digests = (["bytes", "tag"] as const).map(
        (contentMode) =>
          runWorkload({
            spec: SPECS[kind],
            plugin: migratingPlugin,
            device: DEVICE,
            machine: { contentMode },
          }).digest,
      );
      expect(digests[1], kind).toBe(digests[0]);
    }
  });

  it("the digest does not depend on how memory is backed: no zero page, or THP off", () => {
    const spec = "thp:size=4MiB,write=0.5,cpu=0.2";
    const base = runWorkload({ spec, plugin: mapMirrorPlugin, device: DEVICE });
    const noZero = runWorkload({
      spec,
      plugin: mapMirrorPlugin,
      device: DEVICE,
      machine: { zeroPage: false },
    });
    const noThp = runWorkload({ spec, plugin: mapMirrorPlugin, device: DEVICE, machine: { thp: "never" } });
    expect(base.cpuStats.faultThp).toBeGreaterThan(0);
    expect(noThp.cpuStats.faultThp).toBe(0);
    expect(noZero.digest).toBe(base.digest);
    expect(noThp.digest).toBe(base.digest);
  });

  it("after a fork the device writes in both address spaces (write=1: every odd page of each)", () => {
    const r = runWorkload({ spec: "fork:size=256KiB,write=1", plugin: migratingPlugin, device: DEVICE });
    expectClean(r);
    // fork phase: 64 reads; after it: 32 parent writes + 32 child writes; check: 64 + 64 reads.
    expect(r.deviceStats.accesses).toBe(64 + 32 + 32 + 128);
    expect(r.cpuStats.cowCopies).toBeGreaterThan(0);
  });

  it("a fork's digest covers the parent and the child", () => {
    const r = runWorkload({ spec: SPECS.fork, plugin: mapMirrorPlugin, device: DEVICE });
    const [parent, child] = r.digest.split("+");
    expect(child).toBeDefined();
    expect(child).not.toBe(parent);
    expect(parent.endsWith(`:${r.pages}`)).toBe(true);
  });
});

describe("runWorkload: the report", () => {
  it("names the spec, seed and driver, and gives the device's counters under DeviceStats' names", () => {
    const r = runWorkload({
      spec: "stream:size=512KiB,write=0.5",
      plugin: blockFaultPlugin,
      device: DEVICE,
      seed: 3,
    });
    expect(r.spec).toBe("stream:size=512KiB,passes=1,write=0.5,cpu=0,init=1,wave=0");
    expect(r.kind).toBe("stream");
    expect(r.seed).toBe(3);
    expect(r.driver).toBe("block-fault-fake");
    expect(r.device).toBe("dev0");
    expect(r.machine.contentMode).toBe("tag");
    expect(Object.keys(r.deviceStats).sort()).toEqual(Object.keys(new DeviceStats().snapshot()).sort());
    expect(r.pages).toBe(128);
    expect(r.phases).toBe(2);
    expect(r.deviceStats.accesses).toBe(128);
    expect(r.cpuStats.minorFaults).toBeGreaterThanOrEqual(128);
    expect(r.simulatedNs).toBeGreaterThan(0);
    expect(r.simulatedTerms.faultService).toBeGreaterThan(0);
    expect(r.wallMs).toBeGreaterThan(0);
  });

  it("oversub sizes its working set from the device's memory and, on a migrating driver, evicts", () => {
    const r = runWorkload({
      spec: "oversub:factor=2,passes=1,wave=64",
      plugin: migratingPlugin,
      device: DEVICE,
    });
    expectClean(r);
    expect(r.pages).toBe(512);
    expect(r.deviceStats.evictions).toBeGreaterThan(0);
  });

  it("waves: a small wave makes more fault batches for the same accesses", () => {
    const whole = runWorkload({ spec: "stream:size=512KiB,init=0", plugin: mapMirrorPlugin, device: DEVICE });
    const waved = runWorkload({
      spec: "stream:size=512KiB,init=0,wave=16",
      plugin: mapMirrorPlugin,
      device: DEVICE,
    });
    expect(whole.deviceStats.faultBatches).toBe(1);
    expect(waved.deviceStats.faultBatches).toBe(8);
    expect(waved.digest).toBe(whole.digest);
  });

  it("coherence is checked at every phase end, once at the end, or not at all, as asked", () => {
    const spec = "stream:size=256KiB,passes=3";
    const at = (coherence: "phases" | "end" | "off") =>
      runWorkload({ spec, plugin: mapMirrorPlugin, device: DEVICE, coherence }).checks.coherence;
    expect(at("phases").checks).toBe(4);
    expect(at("end")).toMatchObject({ checks: 1, pages: 64 });
    expect(at("off")).toMatchObject({ checks: 0, pages: 0 });
  });

  it("hmm passes the core's config and cost options through (the cost model's constants)", () => {
    const spec = "stream:size=256KiB";
    const free = runWorkload({
      spec,
      plugin: mapMirrorPlugin,
      device: DEVICE,
      hmm: { cost: { overrides: { faultServiceUs: 0 } } },
    });
    const paid = runWorkload({ spec, plugin: mapMirrorPlugin, device: DEVICE });
    expect(free.simulatedTerms.faultService).toBe(0);
    expect(paid.simulatedTerms.faultService).toBeGreaterThan(0);
    expect(free.simulatedNs).toBeLessThan(paid.simulatedNs);
    expect(free.digest).toBe(paid.digest);
  });

  it("random on a buffer whose every page goes to the CPU in a phase leaves the device idle there", () => {
    // One page and cpu=0.9: in some of the 8 passes the page is the CPU's (the device's draw would never end).
    const r = runWorkload({
      spec: "random:size=4KiB,cpu=0.9,passes=8,accesses=16",
      plugin: mapMirrorPlugin,
      device: DEVICE,
    });
    expectClean(r);
    expect(r.deviceStats.accesses).toBeLessThan(8 * 16);
    expect(r.deviceStats.accesses).toBeGreaterThan(0);
    expect(r.deviceStats.accesses % 16).toBe(0);
  });

  it("an attach hook adds the device itself", () => {
    const r = runWorkload({
      spec: "stream:size=256KiB",
      attach: (sys) => sys.core.addDevice(mapMirrorPlugin, { name: "mine", memoryPages: 64 }),
    });
    expectClean(r);
    expect(r.device).toBe("mine");
  });
});

describe("runWorkload: options", () => {
  const bad = (options: unknown, ...parts: string[]) => {
    let err: unknown;
    try {
      runWorkload(options as never);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(HmmError);
    expect((err as HmmError).code).toBe("BAD_CONFIG");
    for (const p of parts) expect((err as Error).message).toContain(p);
  };

  it("refuse an unknown key, with did-you-mean and the known keys", () => {
    bad(
      { spec: "stream", plugin: mapMirrorPlugin, sed: 1 },
      "unknown key 'sed' (did you mean 'seed'?)",
      "known keys: spec, seed",
    );
    bad(
      { spec: "stream", plugin: mapMirrorPlugin, machine: { contentmode: "tag" } },
      "unknown key 'machine.contentmode'",
    );
  });

  it("refuse a value of the wrong form, naming the key and the form", () => {
    bad(
      { spec: "stream", plugin: mapMirrorPlugin, seed: -1 },
      "'seed' must be an integer from 0 to 2^32 - 1, got -1",
    );
    bad(
      { spec: "stream", plugin: mapMirrorPlugin, machine: { contentMode: "text" } },
      '\'machine.contentMode\' must be "bytes" or "tag"',
    );
    bad(
      { spec: "stream", plugin: mapMirrorPlugin, verifyTranslations: "yes" },
      "'verifyTranslations' must be a boolean",
    );
    bad({ plugin: mapMirrorPlugin }, "'spec' is required");
  });

  it("need exactly one of plugin and attach", () => {
    bad({ spec: "stream" }, "give 'plugin'");
    bad({ spec: "stream", plugin: mapMirrorPlugin, attach: () => null }, "exclude each other");
    bad({ spec: "stream", attach: () => null }, "'attach' must add a device");
  });

  it("refuse a machine too small for the workload, naming machine.memoryBytes", () => {
    bad(
      {
        spec: "stream:size=64MiB",
        plugin: mapMirrorPlugin,
        device: DEVICE,
        machine: { memoryBytes: 32 * 1024 * 1024 },
      },
      "'machine.memoryBytes'",
      "needs up to 16384 frames",
    );
  });

  it("a bad device config is refused by the core, naming the device key", () => {
    bad(
      { spec: "oversub", plugin: mapMirrorPlugin, device: { memoryPages: "lots" } },
      "'memoryPages' must be",
    );
  });

  it("a bad spec is a WorkloadSpecError (BAD_SPEC)", () => {
    expect(() => runWorkload({ spec: "stream:size=1", plugin: mapMirrorPlugin })).toThrow(
      /BAD_SPEC|multiple of 4 KiB/,
    );
  });
});
