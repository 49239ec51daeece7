import { cpuOpSteps, DeviceAccesses, DriverError, Scheduler } from "@hmmkit/core";
import { MADV_DONTNEED } from "@hmmkit/mm";
import { injectable } from "tsyringe";
import { describe, expect, it } from "vitest";
import { attachSharedMirror, EFAULT, HMM_PT_LLEVEL, type HmmEvent, type HmmMirror } from "../src/index.js";
import { fakeLegacyPlugin, HmmPtReadingFakeDriver } from "./fakes.js";
import { attachFake, makeSystem, mmapPrivate, PAGE, PMD } from "./helpers.js";

/** A fake whose update throws on invalidations (a broken driver). */
@injectable()
class ThrowingUpdateFakeDriver extends HmmPtReadingFakeDriver {
  override update(mirror: HmmMirror, event: HmmEvent): number {
    if (event.etype < 4) throw new Error("update exploded");
    return super.update(mirror, event);
  }
}

describe("legacy stats", () => {
  it("count entries written, directories allocated and pruned, lock acquisitions and walker references exactly", () => {
    const sys = makeSystem();
    const { proc } = sys;
    const va = mmapPrivate(proc, 16 * PAGE);
    proc.touch(va, 16 * PAGE, true);
    const { mirror, sm, dev } = attachFake(sys, proc);
    expect(mirror.fault(va, va + 16 * PAGE, false)).toBe(0);
    let s = sm.stats();
    expect(s.entriesWritten).toBe(16);
    expect(s.directoriesAllocated).toBe(3);
    // Three parent locks to link the new directories (root, level 1, level 2), one leaf lock to fill.
    expect(s.lockAcquisitions).toBe(4);
    expect(s.walkerRefs).toBe(3);
    expect(s.mirrorFaults).toBe(1);
    expect(s.updates).toBe(1);
    expect(s.sharedMirrorBytes).toBe(3 * 4096 + 2048);
    proc.mm.munmap(va, 16 * PAGE);
    s = sm.stats();
    expect(s.entriesCleared).toBe(16);
    expect(s.directoriesPruned).toBe(3);
    expect(s.walkerRefs).toBe(6);
    expect(s.lockAcquisitions).toBe(5);
    expect(s.updates).toBe(2);
    // The core's own counters keep their names.
    expect(dev.stats.invalidations).toBe(1);
    expect(dev.stats.pagesMirrored).toBe(16);
  });
});

describe("concurrent walkers under the seeded scheduler", () => {
  it("two devices' fault walkers in one shared tree and an munmap interleave; counts always equal valid entries once all leave (seeds 1-12)", () => {
    let interleaved = 0;
    for (let seed = 1; seed <= 12; seed++) {
      const sys = makeSystem();
      const { proc } = sys;
      const va = mmapPrivate(proc, 4 * PMD);
      proc.touch(va, 4 * PMD, true);
      const a = attachFake(sys, proc, "legacy0", { sharedDirectories: true });
      const b = attachFake(sys, proc, "legacy1", { sharedDirectories: true });
      expect(a.mirror.pt).toBe(b.mirror.pt);
      const sched = new Scheduler(seed);
      sched.spawn("fault-a", a.mirror.faultSteps(va, va + 4 * PMD, false));
      sched.spawn("fault-b", b.mirror.faultSteps(va + PMD, va + 4 * PMD, true));
      sched.spawn(
        "discard",
        cpuOpSteps("madvise", () => proc.mm.madvise(va + 2 * PMD, PMD, MADV_DONTNEED)),
      );
      sched.spawn(
        "munmap",
        cpuOpSteps("munmap", () => proc.mm.munmap(va + 3 * PMD, PMD)),
      );
      sched.run();
      for (const t of ["fault-a", "fault-b"]) {
        const r = sched.results.get(t)!;
        expect(r.error, `seed ${seed} ${t}`).toBeUndefined();
        expect([0, -EFAULT]).toContain(r.value);
      }
      const tr = sched.trace;
      if (tr.indexOf("munmap@done") < tr.indexOf("fault-a@done")) interleaved++;
      const pt = a.mirror.pt;
      for (let p = 0; p < 4; p++) {
        const leaf = pt.directoryAt(va + p * PMD, HMM_PT_LLEVEL);
        if (leaf < 0) continue;
        let valid = 0;
        for (let i = 0; i < 512; i++) if (pt.lo[leaf * 512 + i] !== 0) valid++;
        expect(pt.count[leaf], `seed ${seed} leaf ${p}`).toBe(valid);
        expect(valid).toBeGreaterThan(0);
      }
      expect(pt.directoryAt(va + 3 * PMD, HMM_PT_LLEVEL)).toBe(-1);
    }
    expect(interleaved).toBeGreaterThan(0);
  });
});

describe("a failing shared-mirror driver", () => {
  it("an update that throws fails only its device (the core's containment), the process goes on", () => {
    const sys = makeSystem();
    const { proc, core } = sys;
    const va = mmapPrivate(proc, 8 * PAGE);
    proc.writeStamp(va, 8 * PAGE, 5);
    const { device, mirror } = attachSharedMirror(
      core,
      fakeLegacyPlugin(ThrowingUpdateFakeDriver, "throwing-fake"),
      {
        name: "bad0",
      },
    );
    expect(mirror.register(proc.mm).fault(va, va + 8 * PAGE, false)).toBe(0);
    proc.mm.madvise(va, PAGE, MADV_DONTNEED);
    expect(device.state).toBe("failed");
    expect(device.failure).toBeInstanceOf(DriverError);
    expect(device.failure!.message).toMatch(/invalidate.*update exploded/);
    expect(proc.readPageHash(va + PAGE)).not.toBe(0);
    const acc = new DeviceAccesses();
    acc.read(va + PAGE);
    expect(() => core.runDevice(device, proc, acc)).toThrow();
  });
});
