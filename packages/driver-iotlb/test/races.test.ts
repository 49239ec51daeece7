import { cpuOpSteps, DeviceAccesses, type DeviceRunResult, Scheduler } from "@hmmkit/core";
import { MADV_DONTNEED, PROT_READ, stampToken } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { addIotlb, expectCoherent, makeSystem, mmapPrivate, PAGE, RW } from "./helpers.js";

describe("iotlb races with the CPU (seeded scheduler)", () => {
  it("an mprotect between a fault batch and its replays drops the held completions; the accesses fault again and read the right data", () => {
    let refaulted = 0;
    for (let seed = 0; seed < 16; seed++) {
      const sys = makeSystem();
      const p = sys.machine.createProcess();
      const base = mmapPrivate(p, 64 * PAGE);
      for (let i = 0; i < 64; i++) p.writeStamp(base + i * PAGE, PAGE, 300 + i);
      const { dev, drv } = addIotlb(sys.core, { tlbEntries: 16, tlbWays: 4 });
      const acc = new DeviceAccesses();
      for (let i = 0; i < 64; i++) acc.read(base + i * PAGE);
      const sched = new Scheduler(seed);
      sched.spawn("device", sys.core.runDeviceSteps(dev, p.mm, acc));
      sched.spawn(
        "mprotect",
        cpuOpSteps("mprotect", () => {
          p.mm.mprotect(base, 64 * PAGE, PROT_READ);
          p.mm.mprotect(base, 64 * PAGE, RW);
        }),
      );
      const results = sched.run();
      for (const [name, t] of results) expect(t.error, `${name}, seed ${seed}`).toBeUndefined();
      const r = results.get("device")!.value as DeviceRunResult;
      expect(r.completed, `seed ${seed}`).toBe(64);
      for (let i = 0; i < 64; i++) expect(acc.seen[i], `seed ${seed} page ${i}`).toBe(stampToken(300 + i));
      expect(drv.completions.pending).toBe(0);
      expectCoherent(sys.core, dev);
      if (dev.stats.deviceFaults > 64) refaulted++;
    }
    // Some interleavings put the invalidation between a batch and its replays.
    expect(refaulted).toBeGreaterThan(0);
  });

  it("MADV_DONTNEED racing the replays never lets a stalled access use the freed frame", () => {
    let zeros = 0;
    for (let seed = 0; seed < 16; seed++) {
      const sys = makeSystem();
      const p = sys.machine.createProcess();
      const base = mmapPrivate(p, 64 * PAGE);
      for (let i = 0; i < 64; i++) p.writeStamp(base + i * PAGE, PAGE, 300 + i);
      const { dev } = addIotlb(sys.core, { tlbEntries: 16, tlbWays: 4 });
      const acc = new DeviceAccesses();
      for (let i = 0; i < 64; i++) acc.read(base + i * PAGE);
      const sched = new Scheduler(seed);
      sched.spawn("device", sys.core.runDeviceSteps(dev, p.mm, acc));
      sched.spawn(
        "dontneed",
        cpuOpSteps("madvise", () => p.mm.madvise(base, 64 * PAGE, MADV_DONTNEED)),
      );
      const results = sched.run();
      const r = results.get("device")!.value as DeviceRunResult;
      // A stale translation would fail the device (DRIVER_STALE) under verifyTranslations.
      expect(r.deviceFailure, `seed ${seed}`).toBeNull();
      expect(r.completed, `seed ${seed}`).toBe(64);
      for (let i = 0; i < 64; i++) {
        expect([stampToken(300 + i), 0], `seed ${seed} page ${i}`).toContain(acc.seen[i]);
        if (acc.seen[i] === 0) zeros++;
      }
      expectCoherent(sys.core, dev);
    }
    expect(zeros).toBeGreaterThan(0);
  });
});
