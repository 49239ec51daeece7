import { cpuOpSteps, Scheduler } from "@hmmkit/core";
import { MADV_DONTNEED, PROT_NONE, PROT_READ } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import {
  EACCES,
  EFAULT,
  EINVAL,
  ENODEV,
  HMM_PT_LLEVEL,
  HMM_PTE_VALID_PFN,
  HMM_PTE_WRITE,
  HmmEtype,
  hmmPtePfn,
} from "../src/index.js";
import { attachFake, entryOf, makeSystem, mmapHuge, mmapPrivate, PAGE, PMD } from "./helpers.js";

describe("hmm_mirror_fault", () => {
  it("a read fault fills hmm_pt with the CPU's frames and tells the driver HMM_DEVICE_RFAULT for the range", () => {
    const sys = makeSystem();
    const { proc } = sys;
    const va = mmapPrivate(proc, 16 * PAGE);
    proc.writeStamp(va, 16 * PAGE, 7);
    const { mirror, drv } = attachFake(sys, proc);
    expect(mirror.fault(va, va + 16 * PAGE, false)).toBe(0);
    for (let i = 0; i < 16; i++) {
      const e = entryOf(mirror, va + i * PAGE)!;
      expect(e.lo & HMM_PTE_VALID_PFN).toBeTruthy();
      proc.touch(va + i * PAGE, PAGE, false);
      expect(hmmPtePfn(e.lo, e.hi)).toBe(proc.lastPfn);
    }
    expect(drv.updates).toEqual([
      { mmId: proc.mm.id, start: va, end: va + 16 * PAGE, etype: HmmEtype.HMM_DEVICE_RFAULT },
    ]);
    expect(mirror.pt.stats.entriesWritten).toBe(16);
  });

  it("a fault on a huge PMD fills the whole PMD's 512 entries even when it starts mid-PMD", () => {
    const sys = makeSystem();
    const { proc } = sys;
    const base = mmapHuge(proc, 1);
    proc.touch(base, PAGE, true);
    const { mirror, drv } = attachFake(sys, proc);
    const mid = base + 300 * PAGE;
    expect(mirror.fault(mid, mid + PAGE, false)).toBe(0);
    const first = entryOf(mirror, base)!;
    for (let i = 0; i < 512; i++) {
      const e = entryOf(mirror, base + i * PAGE)!;
      expect(hmmPtePfn(e.lo, e.hi)).toBe(hmmPtePfn(first.lo, first.hi) + i);
      expect(e.lo & HMM_PTE_WRITE).toBeTruthy();
    }
    expect(mirror.pt.stats.entriesWritten).toBe(512);
    // The driver is told about the whole PMD it can now program.
    expect(drv.updates[0]).toMatchObject({ start: base, end: base + PMD });
  });

  it("a write fault on a read-only huge PMD gets -ENOENT, runs the CPU write fault and retries", () => {
    const sys = makeSystem();
    const { proc } = sys;
    const base = mmapHuge(proc, 1);
    proc.touch(base, PMD, false); // the huge zero page: a read-only huge PMD
    const { mirror, sm } = attachFake(sys, proc);
    expect(mirror.fault(base + 5 * PAGE, base + 6 * PAGE, true)).toBe(0);
    expect(sm.counters.enoentFaults).toBe(1);
    expect(sm.counters.eagainRetries).toBe(1);
    const e = entryOf(mirror, base + 5 * PAGE)!;
    expect(e.lo & HMM_PTE_WRITE).toBeTruthy();
    proc.touch(base + 5 * PAGE, PAGE, false);
    expect(hmmPtePfn(e.lo, e.hi)).toBe(proc.lastPfn);
  });

  it("a missing CPU entry is v12's -ENOENT case: its CPU fault runs, the event restarts once (-EAGAIN) and every entry is valid", () => {
    const sys = makeSystem();
    const { proc } = sys;
    const va = mmapPrivate(proc, 8 * PAGE);
    proc.touch(va, 4 * PAGE, true); // pages 4..7 are none
    const { mirror, sm } = attachFake(sys, proc);
    expect(mirror.fault(va, va + 8 * PAGE, false)).toBe(0);
    expect(sm.counters.enoentFaults).toBe(1);
    expect(sm.counters.eagainRetries).toBe(1);
    for (let i = 0; i < 8; i++) expect(entryOf(mirror, va + i * PAGE)!.lo & HMM_PTE_VALID_PFN).toBeTruthy();
  });

  it("PROT_NONE is never populated: the fault returns -EFAULT and hmm_pt stays empty", () => {
    const sys = makeSystem();
    const { proc } = sys;
    const va = mmapPrivate(proc, 4 * PAGE);
    proc.touch(va, 4 * PAGE, true);
    proc.mm.mprotect(va, 4 * PAGE, PROT_NONE);
    const { mirror } = attachFake(sys, proc);
    expect(mirror.fault(va, va + 4 * PAGE, false)).toBe(-EFAULT);
    expect(mirror.pt.entryPos(va)).toBe(-1);
    expect(mirror.pt.stats.entriesWritten).toBe(0);
  });

  it("a write fault on a VMA without VM_WRITE returns -EACCES before walking anything", () => {
    const sys = makeSystem();
    const { proc } = sys;
    const va = mmapPrivate(proc, 4 * PAGE, PROT_READ);
    const { mirror, drv } = attachFake(sys, proc);
    expect(mirror.fault(va, va + 4 * PAGE, true)).toBe(-EACCES);
    expect(mirror.pt.directories).toBe(0);
    expect(drv.updates).toEqual([]);
  });

  it("a fault outside any VMA returns -EFAULT; an unaligned range is rounded out to pages (hmm_event_init), an empty one is -EINVAL", () => {
    const sys = makeSystem();
    const { proc } = sys;
    const { mirror } = attachFake(sys, proc);
    expect(mirror.fault(0x10000000, 0x10001000, false)).toBe(-EFAULT);
    expect(mirror.fault(0x10000000, 0x10000000, false)).toBe(-EINVAL);
    expect(mirror.fault(Number.NaN, 0x10001000, false)).toBe(-EINVAL);
    const va = mmapPrivate(proc, 4 * PAGE);
    proc.touch(va, 4 * PAGE, true);
    expect(mirror.fault(va + 100, va + PAGE + 1, false)).toBe(0);
    expect(entryOf(mirror, va)!.lo & HMM_PTE_VALID_PFN).toBeTruthy();
    expect(entryOf(mirror, va + PAGE)!.lo & HMM_PTE_VALID_PFN).toBeTruthy();
    expect(entryOf(mirror, va + 2 * PAGE)!.lo).toBe(0);
  });

  it("a detached mirror (mirror->hmm gone after unregister) returns -ENODEV and fills nothing", () => {
    const sys = makeSystem();
    const { proc } = sys;
    const va = mmapPrivate(proc, 4 * PAGE);
    proc.touch(va, 4 * PAGE, true);
    const { mirror, sm, drv } = attachFake(sys, proc);
    expect(mirror.fault(va, va + PAGE, false)).toBe(0);
    sm.unregister(proc.mm);
    expect(mirror.hmm).toBeNull();
    expect(drv.updates.at(-1)!.etype).toBe(HmmEtype.HMM_MUNMAP);
    expect(mirror.pt.directories).toBe(0);
    expect(mirror.fault(va, va + 4 * PAGE, false)).toBe(-ENODEV);
    expect(mirror.pt.directories).toBe(0);
  });

  it("a huge PMD split under the walk (between the look and the PMD lock) makes it return -EAGAIN and retry", () => {
    const sys = makeSystem();
    const { proc } = sys;
    const base = mmapHuge(proc, 1);
    proc.touch(base, PMD, true);
    const { mirror, sm } = attachFake(sys, proc);
    const steps = mirror.faultSteps(base, base + PMD, false);
    // Run to the PMD lock: the walk has seen a huge PMD.
    expect(steps.next().value).toBe("legacy:pmd-lock");
    // Meanwhile the CPU splits it (MADV_DONTNEED of one page splits the THP).
    proc.mm.madvise(base + PAGE, PAGE, MADV_DONTNEED);
    let r = steps.next();
    while (!r.done) r = steps.next();
    expect(r.value).toBe(0);
    expect(sm.counters.eagainRetries).toBeGreaterThanOrEqual(1);
    // Page 1 was faulted back in by the retry's -ENOENT path; all 512 entries are valid.
    for (let i = 0; i < 512; i++)
      expect(entryOf(mirror, base + i * PAGE)!.lo & HMM_PTE_VALID_PFN).toBeTruthy();
  });

  it("concurrent walkers under the seeded scheduler: an munmap emptying a leaf a fault walk is inside never frees it under the walk", () => {
    let interleaved = 0;
    for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
      const sys = makeSystem();
      const { proc } = sys;
      const va = mmapPrivate(proc, 4 * PMD);
      proc.touch(va, 4 * PMD, true);
      const { mirror } = attachFake(sys, proc);
      const sched = new Scheduler(seed);
      sched.spawn("fault", mirror.faultSteps(va, va + 4 * PMD, false));
      sched.spawn(
        "munmap",
        cpuOpSteps("munmap", () => proc.mm.munmap(va + PMD, PMD)),
      );
      sched.run();
      const t = sched.trace;
      if (t.indexOf("munmap@done") < t.indexOf("fault@done")) interleaved++;
      const r = sched.results.get("fault")!;
      // The fault either finished or met the hole (-EFAULT); no assertion fired.
      expect(r.error).toBeUndefined();
      expect([0, -EFAULT]).toContain(r.value);
      // Nothing of the unmapped PMD is left mirrored, and its leaf was pruned once empty.
      expect(mirror.pt.directoryAt(va + PMD, HMM_PT_LLEVEL)).toBe(-1);
      // Counts equal valid entries once every walker left.
      const pt = mirror.pt;
      for (let p = 0; p < 4; p++) {
        const leaf = pt.directoryAt(va + p * PMD, HMM_PT_LLEVEL);
        if (leaf < 0) continue;
        let valid = 0;
        for (let i = 0; i < 512; i++) if (pt.lo[leaf * 512 + i] !== 0) valid++;
        expect(pt.count[leaf]).toBe(valid);
      }
    }
    expect(interleaved).toBeGreaterThan(0);
  });

  it("an invalidation emptying the leaf the fault walker is inside leaves it the walker's reference; the fault backs off (-EAGAIN), restarts and refills the same leaf", () => {
    const sys = makeSystem();
    const { proc } = sys;
    const va = mmapPrivate(proc, 2 * PMD);
    proc.touch(va, 2 * PMD, true);
    const { mirror, sm } = attachFake(sys, proc);
    const steps = mirror.faultSteps(va, va + 2 * PMD, false);
    let r = steps.next();
    while (r.value !== "legacy:next-pmd") r = steps.next();
    const pt = mirror.pt;
    const leaf = pt.directoryAt(va, HMM_PT_LLEVEL);
    expect(pt.count[leaf]).toBe(513);
    proc.mm.madvise(va, PMD, MADV_DONTNEED);
    // Every entry cleared; the count is the walker's reference, never zero while it is inside.
    expect(pt.count[leaf]).toBe(1);
    expect(pt.isAllocated(leaf)).toBe(true);
    expect(sm.counters.backoffs).toBe(1);
    while (!r.done) r = steps.next();
    expect(r.value).toBe(0);
    expect(sm.counters.eagainRetries).toBeGreaterThanOrEqual(1);
    // The restart refilled the discarded PMD into the very leaf the walker kept: nothing pruned.
    expect(pt.directoryAt(va, HMM_PT_LLEVEL)).toBe(leaf);
    expect(pt.count[leaf]).toBe(512);
    expect(pt.stats.directoriesPruned).toBe(0);
  });
});
