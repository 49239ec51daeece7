import { HPAGE_PMD_SIZE, MmError } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { CostModel, DeviceStats, H100_UVM_PROFILE, HmmStats } from "../src/index.js";
import { ArrayFakeDriver, PAGE, type RecordingFakeDriver } from "./fakes.js";
import { addFake, MiB, makeSystem, mmapHuge, mmapPrivate, randomBytes, thrown } from "./helpers.js";

describe("per-device statistics", () => {
  it("each device counts its own faults, callbacks, CPU faults, migrations and snapshots", () => {
    const { core, machine, stats } = makeSystem();
    const { dev: gpu0 } = addFake<RecordingFakeDriver>(core, "gpu0");
    const { dev: gpu1 } = addFake(core, "gpu1", ArrayFakeDriver);
    const p = machine.createProcess();
    const a = mmapPrivate(p, 16 * PAGE);
    // A read fault over 16 never-touched pages: 16 CPU faults (zero page), 16 per-PTE calls.
    expect(core.deviceFault(gpu0, p, a, a + 16 * PAGE, false)).toEqual({
      pages: 16,
      cpuFaults: 16,
      retries: 0,
      reportedReadOnly: 0,
    });
    expect(gpu0.stats).toMatchObject({
      deviceFaults: 1,
      faultChunks: 1,
      pagesMirrored: 16,
      pteCallbacks: 16,
      pmdCallbacks: 0,
      arrayCallbacks: 0,
      cpuFaultsForDevice: 16,
      retries: 0,
    });
    // gpu1 faults the same pages: nothing left to fault for the CPU, one array call.
    core.deviceFault(gpu1, p, a, a + 16 * PAGE, false);
    expect(gpu1.stats).toMatchObject({
      deviceFaults: 1,
      pagesMirrored: 16,
      arrayCallbacks: 1,
      cpuFaultsForDevice: 0,
    });
    // A THP: one huge callback, 512 pages.
    const h = mmapHuge(p, 1);
    p.write(h, new Uint8Array([1]));
    core.deviceFault(gpu0, p, h, h + PAGE, false);
    expect(gpu0.stats.pmdCallbacks).toBe(1);
    expect(gpu0.stats.pagesMirrored).toBe(16 + 512);
    // Migration: 8 written pages and 8 zero pages go over; 4 come back on CPU faults.
    const b = mmapPrivate(p, 16 * PAGE);
    p.write(b, randomBytes(8 * PAGE, 91));
    expect(core.migrateToDevice(gpu0, p, b, b + 16 * PAGE).migrated).toBe(16);
    p.read(b, 4 * PAGE);
    core.migrateToRam(gpu0, p, b + 12 * PAGE, b + 16 * PAGE);
    core.snapshot(gpu0, p, b, b + PAGE);
    expect(gpu0.stats).toMatchObject({
      migratedToDevice: 16,
      bytesToDevice: 16 * PAGE,
      zeroFilledToDevice: 8,
      cpuFaultsOnDevicePages: 4,
      migratedToRam: 8,
      bytesToRam: 8 * PAGE,
      snapshots: 1,
    });
    // An munmap is one invalidation of the range for every device bound to the address space.
    const inv = gpu1.stats.invalidations;
    const pages = gpu1.stats.invalidatedPages;
    p.mm.munmap(a, 16 * PAGE);
    expect(gpu1.stats.invalidations).toBe(inv + 1);
    expect(gpu1.stats.invalidatedPages - pages).toBe(16);
    // Stats live in the core's HmmStats by device name.
    expect(stats.device("gpu0")).toBe(gpu0.stats);
    expect(stats.devices.size).toBe(2);
  });

  it("stats.total() is the sum of every device's counters", () => {
    const { core, machine, stats } = makeSystem();
    const devs = ["gpu0", "gpu1", "gpu2"].map((n) => addFake(core, n).dev);
    const p = machine.createProcess();
    const a = mmapPrivate(p, 8 * PAGE);
    devs.forEach((d, i) => {
      core.deviceFault(d, p, a, a + (i + 1) * PAGE, i === 2);
    });
    const total = stats.total();
    expect(total).toBeInstanceOf(DeviceStats);
    for (const k of Object.keys(total) as (keyof DeviceStats)[]) {
      if (typeof total[k] !== "number") continue;
      expect(total[k], k).toBe(devs.reduce((s, d) => s + (d.stats[k] as number), 0));
    }
    expect(total.deviceFaults).toBe(3);
    expect(total.pagesMirrored).toBe(1 + 2 + 3);
    // A plain copy, detached from the live counters.
    const snap = devs[0].stats.snapshot();
    core.deviceFault(devs[0], p, a, a + PAGE, false);
    expect(snap.deviceFaults).toBe(1);
    expect(devs[0].stats.deviceFaults).toBe(2);
    expect(new HmmStats().total().deviceFaults).toBe(0);
  });
});

describe("cost model", () => {
  const round = {
    faultServiceUs: 10,
    pageMapUs: 1,
    populatePageUs: 2,
    cpuFaultOnDeviceUs: 30,
    hostToDeviceGBps: 4.096,
    deviceToHostGBps: 2.048,
    invalidatePageNs: 5,
    callbackNs: 3,
    localAccessNs: 2,
    remoteAccessNs: 7,
  };

  function counts(k = 1): DeviceStats {
    const s = new DeviceStats();
    s.deviceFaults = 2 * k;
    s.pagesMirrored = 16 * k;
    s.cpuFaultsForDevice = 4 * k;
    s.cpuFaultsOnDevicePages = k;
    s.bytesToDevice = 2 * PAGE * k;
    s.bytesToRam = PAGE * k;
    s.invalidatedPages = 10 * k;
    s.pteCallbacks = 16 * k;
    s.pmdCallbacks = k;
    s.arrayCallbacks = 2 * k;
    s.faultBatches = 3 * k;
    s.batchedDeviceFaults = k;
    s.localAccesses = 100 * k;
    s.remoteAccesses = 10 * k;
    return s;
  }

  it("estimate is the sum over counted events of count times unit cost, copies by bytes over bandwidth", () => {
    const e = new CostModel(H100_UVM_PROFILE, round).estimate(counts());
    expect(e.terms).toEqual({
      faultService: (3 + 2 - 1) * 10_000,
      pageMap: 16 * 1_000,
      populate: 4 * 2_000,
      cpuFaultOnDevice: 30_000,
      copyToDevice: expect.closeTo(2_000, 6),
      copyToHost: expect.closeTo(2_000, 6),
      invalidate: 50,
      callbacks: 19 * 3,
      localAccess: 200,
      remoteAccess: 70,
    });
    expect(e.totalNs).toBeCloseTo(40_000 + 16_000 + 8_000 + 30_000 + 2_000 + 2_000 + 50 + 57 + 270, 6);
  });

  it("the estimate scales linearly with the counts", () => {
    const m = new CostModel();
    const one = m.estimate(counts(1));
    const three = m.estimate(counts(3));
    expect(one.totalNs).toBeGreaterThan(0);
    expect(three.totalNs).toBeCloseTo(3 * one.totalNs, 6);
    for (const k of Object.keys(one.terms)) expect(three.terms[k]).toBeCloseTo(3 * one.terms[k], 6);
    expect(m.estimate(new DeviceStats()).totalNs).toBe(0);
  });

  it("overrides replace only the constants they name", () => {
    const base = new CostModel();
    const over = new CostModel(H100_UVM_PROFILE, { pageMapUs: 2 });
    expect(over.constants.pageMapUs).toBe(2);
    expect(over.constants.faultServiceUs).toBe(base.constants.faultServiceUs);
    const s = counts();
    const a = base.estimate(s);
    const b = over.estimate(s);
    expect(b.terms.pageMap).toBe(16 * 2_000);
    for (const k of Object.keys(a.terms)) if (k !== "pageMap") expect(b.terms[k]).toBe(a.terms[k]);
    expect(Object.isFrozen(over.constants)).toBe(true);
  });

  it("the default profile documents every constant with a unit and a source", () => {
    for (const [k, c] of Object.entries(H100_UVM_PROFILE.constants)) {
      expect(c.source.length, k).toBeGreaterThan(10);
      expect(["us", "ns", "GB/s"]).toContain(c.unit);
      expect(c.value).toBeGreaterThanOrEqual(0);
    }
  });

  it("bad overrides are configuration errors naming the constant", () => {
    const bad = (o: Record<string, number>) => {
      const e = thrown(() => new CostModel(H100_UVM_PROFILE, o as never));
      expect(e).toBeInstanceOf(MmError);
      expect((e as MmError).code).toBe("BAD_CONFIG");
      return (e as Error).message;
    };
    expect(bad({ pageMapMs: 1 })).toMatch(/unknown constant 'pageMapMs'.*pageMapUs/);
    expect(bad({ pageMapUs: -1 })).toMatch(/'pageMapUs' must be a non-negative number, got -1/);
    expect(bad({ pageMapUs: Number.NaN })).toMatch(/'pageMapUs'.*NaN/);
    expect(bad({ callbackNs: Number.POSITIVE_INFINITY })).toMatch(/'callbackNs'/);
    expect(bad({ hostToDeviceGBps: 0 })).toMatch(/'hostToDeviceGBps' must be positive/);
    expect(() => makeSystem({}, { cost: { overrides: { bogus: 1 } } })).toThrow(
      /createHmm options 'cost': unknown key 'overrides.bogus'; known keys: faultServiceUs/,
    );
  });

  it("a run's counters give a cost that grows with the work done", () => {
    const { core, machine, cost } = makeSystem({}, { cost: { overrides: { callbackNs: 1 } } });
    expect(cost.constants.callbackNs).toBe(1);
    const { dev } = addFake(core, "gpu0");
    const p = machine.createProcess();
    const a = mmapPrivate(p, 4 * HPAGE_PMD_SIZE);
    core.deviceFault(dev, p, a, a + 64 * PAGE, false);
    const t1 = cost.estimate(dev.stats);
    core.deviceFault(dev, p, a + 64 * PAGE, a + 128 * PAGE, false);
    const t2 = cost.estimate(dev.stats);
    expect(t2.terms.faultService).toBe(2 * t1.terms.faultService);
    expect(t2.terms.pageMap).toBe(2 * t1.terms.pageMap);
    expect(t2.terms.callbacks).toBe(128);
  });
});

describe("invalidated page counts", () => {
  it("a process exit (RELEASE over all of user space) counts the pages the device could hold, not 2^35", () => {
    const { core, machine, cost } = makeSystem();
    const { dev } = addFake<RecordingFakeDriver>(core, "gpu0");
    const { dev: other } = addFake<RecordingFakeDriver>(core, "gpu1");
    const p = machine.createProcess();
    const a = mmapPrivate(p, 64 * PAGE);
    p.write(a, new Uint8Array(64 * PAGE).fill(3));
    core.deviceFault(dev, p, a, a + 16 * PAGE, false);
    core.deviceFault(other, p, a, a + PAGE, false);
    const before = dev.stats.invalidatedPages;
    p.exit();
    // All 64 pages are in the one 2 MiB region reported to gpu0 and mapped when RELEASE began.
    expect(dev.stats.invalidatedPages - before).toBe(64);
    expect(other.stats.invalidatedPages).toBe(64);
    expect(cost.estimate(dev.stats).terms.invalidate).toBeLessThan(1e6);
  });

  it("pages outside the regions reported to the device, or no longer mapped, are not counted", () => {
    const { core, machine } = makeSystem();
    const { dev } = addFake<RecordingFakeDriver>(core, "gpu0");
    const p = machine.createProcess();
    const raw = mmapPrivate(p, 6 * MiB);
    const base = raw + ((HPAGE_PMD_SIZE - (raw % HPAGE_PMD_SIZE)) % HPAGE_PMD_SIZE);
    p.write(base, new Uint8Array(8 * PAGE).fill(1));
    p.write(base + HPAGE_PMD_SIZE, new Uint8Array(8 * PAGE).fill(2));
    core.deviceFault(dev, p, base, base + 4 * PAGE, false);
    // PROTECTION_PAGE over the whole address space at fork: only the reported region counts.
    p.fork();
    expect(dev.stats.invalidatedPages).toBe(8);
    // An munmap of never-populated memory in the reported region counts nothing.
    const n = dev.stats.invalidatedPages;
    p.mm.munmap(base + 100 * PAGE, 10 * PAGE);
    expect(dev.stats.invalidatedPages).toBe(n);
  });
});

describe("snapshots and stats", () => {
  it("a snapshot counts as a snapshot only: no device fault, chunk, CPU fault or mirrored page", () => {
    const { core, machine } = makeSystem();
    const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
    const p = machine.createProcess();
    const a = mmapPrivate(p, 16 * PAGE);
    p.write(a, randomBytes(8 * PAGE, 92));
    const before = dev.stats.snapshot();
    core.snapshot(dev, p, a, a + 16 * PAGE);
    core.snapshotProt(dev, p, a, a + 16 * PAGE);
    expect(dev.stats.snapshot()).toEqual({ ...before, snapshots: 2 });
    expect(drv.mirrorCalls).toEqual([]);
  });
});
