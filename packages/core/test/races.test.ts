import { HPAGE_PMD_SIZE, MADV_DONTNEED, MmError, stampToken } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import {
  cpuOpSteps,
  cpuTouchSteps,
  type DeviceFaultResult,
  HMM_PFN_WRITE,
  type MigrateResult,
  Scheduler,
} from "../src/index.js";
import { PAGE, type RecordingFakeDriver } from "./fakes.js";
import {
  addFake,
  cpuEntry,
  expectBytes,
  expectCoherent,
  expectNoLeaks,
  expectZeros,
  makeSystem,
  mmapPrivate,
  randomBytes,
} from "./helpers.js";

const SEEDS = Array.from({ length: 48 }, (_, i) => i + 1);

/**
 * A write device fault over 16 pages in two PMD-sized chunks (pages 0-7 end PMD 0, 8-15 start
 * PMD 1) racing a CPU thread that runs `op` on the process as one atomic step.
 */
function faultRace(seed: number, op: "dontneed" | "munmap") {
  const sys = makeSystem();
  const { core, machine } = sys;
  const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
  const p = machine.createProcess();
  const m = mmapPrivate(p, 2 * HPAGE_PMD_SIZE);
  const a = m + HPAGE_PMD_SIZE - 8 * PAGE;
  const data = randomBytes(16 * PAGE, 70);
  p.write(a, data);
  const sched = new Scheduler(seed);
  sched.spawn("fault", core.deviceFaultSteps(dev, p, a, a + 16 * PAGE, true));
  if (op === "dontneed")
    sched.spawn(
      "cpu",
      cpuOpSteps("madvise", () => p.mm.madvise(a + 4 * PAGE, 8 * PAGE, MADV_DONTNEED)),
    );
  else
    sched.spawn(
      "cpu",
      cpuOpSteps("munmap", () => p.mm.munmap(a + 8 * PAGE, 8 * PAGE)),
    );
  sched.run();
  return { sys, core, dev, drv, p, a, data, sched };
}

/** Index in the trace of the CPU op's effect (the cpu task's last step runs the op). */
function opAt(trace: string[]): number {
  return trace.indexOf("cpu@done");
}

describe("races through the seeded scheduler", () => {
  it("an MADV_DONTNEED landing between a chunk's walk and commit makes the fault retry, and the driver ends coherent", () => {
    const retried: number[] = [];
    const clean: number[] = [];
    for (const seed of SEEDS) {
      const { core, dev, drv, p, a, data, sched } = faultRace(seed, "dontneed");
      const r = sched.result<DeviceFaultResult>("fault");
      const t = sched.trace;
      const op = opAt(t);
      expect(op).toBeGreaterThanOrEqual(0);
      // Was the op between a walk and the commit that followed it?
      const lastFaultBefore = t
        .slice(0, op)
        .filter((s) => s.startsWith("fault@"))
        .at(-1);
      const inWindow = lastFaultBefore === "fault@fault:walk→commit";
      expect(r.retries > 0, `seed ${seed}: retry iff the op hit the walk→commit window`).toBe(inWindow);
      if (inWindow) {
        retried.push(seed);
        expect(dev.stats.retries).toBe(r.retries);
        // The chunk was walked again after the op: the next fault step is another walk.
        expect(t.slice(op + 1).find((s) => s.startsWith("fault@"))).toBe("fault@fault:walk→commit");
      } else clean.push(seed);
      expectCoherent(core, dev);
      for (let i = 0; i < 16; i++) {
        const e = drv.entry(p.mm.id, a + i * PAGE);
        if (e === undefined) continue;
        expect(e.flags & HMM_PFN_WRITE).toBe(HMM_PFN_WRITE);
      }
      // Whatever the interleaving, the CPU sees zeros where the advice dropped pages, data elsewhere.
      expectBytes(p.read(a, 4 * PAGE), data.subarray(0, 4 * PAGE));
      expectZeros(p.read(a + 4 * PAGE, 8 * PAGE));
      expectBytes(p.read(a + 12 * PAGE, 4 * PAGE), data.subarray(12 * PAGE));
    }
    expect(retried.length).toBeGreaterThan(0);
    expect(clean.length).toBeGreaterThan(0);
  });

  it("after a retry caused by MADV_DONTNEED the retried chunk is mirrored with the frames faulted in again", () => {
    const seed = SEEDS.find(
      (s) => faultRace(s, "dontneed").sched.result<DeviceFaultResult>("fault").retries > 0,
    )!;
    const { core, dev, drv, p, a, sched } = faultRace(seed, "dontneed");
    const r = sched.result<DeviceFaultResult>("fault");
    // Which chunk retried decides which pages are mirrored; the retried chunk is complete.
    const op = opAt(sched.trace);
    const chunk = sched.trace.slice(0, op).filter((s) => s === "fault@fault:next-pmd").length;
    const first = chunk * 8;
    for (let i = first; i < first + 8; i++) {
      const va = a + i * PAGE;
      expect(drv.entry(p.mm.id, va)?.pfn, `page ${i}`).toBe(cpuEntry(p.mm, va)!.pfn);
    }
    expect(r.pages).toBe(16);
    expectCoherent(core, dev);
  });

  it("an munmap of part of the range during a fault either lands after it or makes it fail with EFAULT, never leaving stale entries", () => {
    let retriedThenFailed = 0;
    let succeeded = 0;
    for (const seed of SEEDS) {
      const { sys, core, dev, drv, p, a, data, sched } = faultRace(seed, "munmap");
      const res = sched.results.get("fault")!;
      if (res.error !== undefined) {
        expect(res.error).toBeInstanceOf(MmError);
        expect((res.error as MmError).errno).toBe("EFAULT");
        if (dev.stats.retries > 0) retriedThenFailed++;
      } else {
        succeeded++;
        expect(opAt(sched.trace)).toBeGreaterThan(sched.trace.indexOf("fault@done"));
      }
      expectCoherent(core, dev);
      for (let i = 8; i < 16; i++) expect(drv.entry(p.mm.id, a + i * PAGE)).toBeUndefined();
      expectBytes(p.read(a, 8 * PAGE), data.subarray(0, 8 * PAGE));
      p.exit();
      expectNoLeaks(sys, [dev]);
    }
    expect(retriedThenFailed).toBeGreaterThan(0);
    expect(succeeded).toBeGreaterThan(0);
  });

  it("the same seed replays the same interleaving, trace and result", () => {
    const seed = SEEDS.find(
      (s) => faultRace(s, "dontneed").sched.result<DeviceFaultResult>("fault").retries > 0,
    )!;
    const one = faultRace(seed, "dontneed");
    const two = faultRace(seed, "dontneed");
    expect(two.sched.trace).toEqual(one.sched.trace);
    expect(two.sched.result("fault")).toEqual(one.sched.result("fault"));
    const traces = new Set(SEEDS.slice(0, 12).map((s) => faultRace(s, "dontneed").sched.trace.join(" ")));
    expect(traces.size).toBeGreaterThan(1);
  });

  it("a CPU write to a page under migration waits until the migration finalizes and ends with the written data", () => {
    let waited = 0;
    const stamp = 0x5eed;
    const run = (seed: number) => {
      const sys = makeSystem();
      const { core, machine } = sys;
      const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
      const p = machine.createProcess();
      const n = 8;
      const a = mmapPrivate(p, n * PAGE);
      const data = randomBytes(n * PAGE, 71);
      p.write(a, data);
      const sched = new Scheduler(seed);
      sched.spawn("migrate", core.migrateToDeviceSteps(dev, p, a, a + n * PAGE));
      sched.spawn("cpu", cpuTouchSteps(p, a + 3 * PAGE, PAGE, true, stamp));
      sched.run();
      return { sys, core, dev, drv, p, a, n, data, sched };
    };
    for (const seed of SEEDS) {
      const { sys, core, dev, p, a, n, data, sched } = run(seed);
      const t = sched.trace;
      const m = sched.result<MigrateResult>("migrate");
      expect(m.selected).toBe(n);
      const waitAt = t.indexOf("cpu@cpu:wait-migration");
      if (waitAt >= 0) {
        waited++;
        // It waited inside the collect → finalize window, and wrote only after the migration ended.
        expect(t.indexOf("migrate@migrate:collected")).toBeLessThan(waitAt);
        expect(waitAt).toBeLessThan(t.indexOf("migrate@done"));
        expect(t.indexOf("cpu@cpu:write")).toBeGreaterThan(t.indexOf("migrate@done"));
        expect(m.migrated).toBe(n);
      }
      expect(p.readPageHash(a + 3 * PAGE)).toBe(stampToken(stamp));
      expectBytes(p.read(a, 3 * PAGE), data.subarray(0, 3 * PAGE));
      expectBytes(p.read(a + 4 * PAGE, 4 * PAGE), data.subarray(4 * PAGE));
      expectCoherent(core, dev);
      p.exit();
      expectNoLeaks(sys, [dev]);
    }
    expect(waited).toBeGreaterThan(0);
    // Replays exactly.
    const seed = SEEDS.find((s) => run(s).sched.trace.includes("cpu@cpu:wait-migration"))!;
    expect(run(seed).sched.trace).toEqual(run(seed).sched.trace);
  });

  it("a device fault racing another device's migration of the same range waits, retries and ends coherent on both devices", () => {
    let waits = 0;
    for (const seed of SEEDS) {
      const sys = makeSystem();
      const { core, machine } = sys;
      const { dev: gpu0, drv: d0 } = addFake<RecordingFakeDriver>(core, "gpu0");
      const { dev: gpu1 } = addFake<RecordingFakeDriver>(core, "gpu1");
      const p = machine.createProcess();
      const n = 8;
      const a = mmapPrivate(p, n * PAGE);
      const data = randomBytes(n * PAGE, 72);
      p.write(a, data);
      const sched = new Scheduler(seed);
      sched.spawn("fault", core.deviceFaultSteps(gpu0, p, a, a + n * PAGE, false));
      sched.spawn("migrate", core.migrateToDeviceSteps(gpu1, p, a, a + n * PAGE));
      sched.run();
      expect(sched.result<DeviceFaultResult>("fault").pages).toBe(n);
      sched.result("migrate");
      if (sched.trace.includes("fault@fault:wait-migration")) waits++;
      expectCoherent(core, gpu0);
      expectCoherent(core, gpu1);
      // Whatever gpu0 mirrors holds the process's data.
      for (let i = 0; i < n; i++) {
        if (d0.entry(p.mm.id, a + i * PAGE) === undefined) continue;
        expectBytes(d0.deviceRead(p.mm.id, a + i * PAGE, PAGE), data.subarray(i * PAGE, (i + 1) * PAGE));
      }
      expectBytes(p.read(a, n * PAGE), data);
      p.exit();
      expectNoLeaks(sys, [gpu0, gpu1]);
    }
    expect(waits).toBeGreaterThan(0);
  });

  it("a process exiting while a device fault and a migration are in flight leaves no translation, frame or device frame behind", () => {
    const outcomes = new Set<string>();
    for (const seed of SEEDS) {
      const sys = makeSystem();
      const { core, machine } = sys;
      const { dev: gpu0 } = addFake<RecordingFakeDriver>(core, "gpu0");
      const { dev: gpu1 } = addFake<RecordingFakeDriver>(core, "gpu1");
      const p = machine.createProcess();
      const m = mmapPrivate(p, 2 * HPAGE_PMD_SIZE);
      const a = m + HPAGE_PMD_SIZE - 8 * PAGE;
      p.write(a, randomBytes(16 * PAGE, 73));
      const sched = new Scheduler(seed);
      sched.spawn("fault", core.deviceFaultSteps(gpu0, p, a, a + 16 * PAGE, true));
      sched.spawn("migrate", core.migrateToDeviceSteps(gpu1, p, a, a + 16 * PAGE));
      sched.spawn(
        "cpu",
        cpuOpSteps("exit", () => p.exit()),
      );
      sched.run();
      for (const t of ["fault", "migrate"]) {
        const e = sched.results.get(t)!.error;
        outcomes.add(`${t}:${e === undefined ? "ok" : (e as MmError).errno}`);
        if (e !== undefined) expect(e).toBeInstanceOf(MmError);
      }
      core.reap();
      expect(core.translations(gpu0)).toEqual([]);
      expect(core.translations(gpu1)).toEqual([]);
      expect(gpu0.bindings.size + gpu1.bindings.size).toBe(0);
      expectNoLeaks(sys, [gpu0, gpu1]);
    }
    // Both tasks were seen finishing before the exit and failing after it.
    expect(outcomes).toContain("fault:ok");
    expect(outcomes).toContain("fault:EFAULT");
    expect(outcomes).toContain("migrate:ok");
    expect([...outcomes].some((o) => o.startsWith("migrate:E"))).toBe(true);
  });
});

describe("the mmap_lock across preemption points", () => {
  it("an munmap that takes the lock for write waits for a migration in flight; MADV_DONTNEED (a reader) does not", () => {
    let waitedOnce = false;
    let dontneedInside = false;
    for (const seed of SEEDS) {
      const sys = makeSystem();
      const { core, machine } = sys;
      const { dev } = addFake<RecordingFakeDriver>(core, "gpu0");
      const p = machine.createProcess();
      const a = mmapPrivate(p, 32 * PAGE);
      const data = randomBytes(32 * PAGE, 91);
      p.write(a, data);
      const sched = new Scheduler(seed);
      sched.spawn("migrate", core.migrateToDeviceSteps(dev, p, a, a + 16 * PAGE));
      sched.spawn(
        "munmap",
        cpuOpSteps("munmap", () => p.mm.munmap(a + 8 * PAGE, 8 * PAGE), { mm: p.mm, mode: "write" }),
      );
      sched.spawn(
        "dontneed",
        cpuOpSteps("madvise", () => p.mm.madvise(a + 24 * PAGE, 4 * PAGE, MADV_DONTNEED), {
          mm: p.mm,
          mode: "read",
        }),
      );
      sched.run();
      const t = sched.trace;
      const start = t.indexOf("migrate@migrate:collected");
      const done = Math.max(t.indexOf("migrate@done"), t.indexOf("migrate@throw"));
      // While the migration holds the lock for read, the munmap never runs.
      const munmapDone = t.indexOf("munmap@done");
      if (start >= 0) {
        expect(munmapDone < start || munmapDone > done).toBe(true);
        if (t.slice(start, done).includes("munmap@wait:mmap_lock")) waitedOnce = true;
      }
      const dn = t.indexOf("dontneed@done");
      if (dn > start && dn < done) dontneedInside = true;
      // An munmap before the migration leaves a hole in its range (EINVAL, as the test driver
      // reports); one after it finds all 16 pages migrated. Either way nothing was lost.
      const r = sched.results.get("migrate")!;
      if (r.error !== undefined) {
        expect((r.error as MmError).errno).toBe("EINVAL");
        expect(munmapDone).toBeLessThan(done);
      } else {
        expect((r.value as MigrateResult).migrated).toBe(16);
        expect(munmapDone).toBeGreaterThan(done);
      }
      expectBytes(p.read(a, 8 * PAGE), data.subarray(0, 8 * PAGE));
      expect(p.mm.findVma(a + 8 * PAGE)).toBeNull();
      expectZeros(p.read(a + 24 * PAGE, 4 * PAGE));
      p.exit();
      expectNoLeaks(sys, [dev]);
    }
    expect(waitedOnce).toBe(true);
    expect(dontneedInside).toBe(true);
  });
});
