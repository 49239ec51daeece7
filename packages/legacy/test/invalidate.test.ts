import { MmuNotifyEvent } from "@hmmkit/core";
import { MADV_DONTNEED, PROT_NONE, PROT_READ } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import {
  HMM_PT_LLEVEL,
  HMM_PTE_DIRTY,
  HMM_PTE_VALID_PFN,
  HMM_PTE_WRITE,
  HmmEtype,
  hmmEtypeOf,
} from "../src/index.js";
import { attachFake, entryOf, makeSystem, mmapPrivate, PAGE, PMD } from "./helpers.js";

function setup(pages = 16) {
  const sys = makeSystem();
  const { proc } = sys;
  const va = mmapPrivate(proc, pages * PAGE);
  proc.touch(va, pages * PAGE, true);
  const f = attachFake(sys, proc);
  expect(f.mirror.fault(va, va + pages * PAGE, true)).toBe(0);
  f.drv.updates.length = 0;
  return { ...sys, ...f, va };
}

describe("invalidation of hmm_pt", () => {
  it("munmap calls update with HMM_MUNMAP and the range first, then clears the entries and prunes the emptied leaf", () => {
    const s = setup();
    const seenDuringUpdate: boolean[] = [];
    const orig = s.drv.update.bind(s.drv);
    s.drv.update = (m, ev) => {
      seenDuringUpdate.push(
        entryOf(m, ev.start) !== null && (entryOf(m, ev.start)!.lo & HMM_PTE_VALID_PFN) !== 0,
      );
      return orig(m, ev);
    };
    s.proc.mm.munmap(s.va, 16 * PAGE);
    expect(s.drv.updates).toEqual([
      { mmId: s.proc.mm.id, start: s.va, end: s.va + 16 * PAGE, etype: HmmEtype.HMM_MUNMAP },
    ]);
    // v12's hmm_mirror_update: the driver's update runs while hmm_pt still holds the entries.
    expect(seenDuringUpdate).toEqual([true]);
    expect(s.mirror.pt.directoryAt(s.va, HMM_PT_LLEVEL)).toBe(-1);
    expect(s.mirror.pt.stats.entriesCleared).toBe(16);
    expect(s.mirror.pt.directories).toBe(0);
  });

  it("a partial MADV_DONTNEED clears only its pages and drops the leaf's count by as many", () => {
    const s = setup();
    const leaf = s.mirror.pt.directoryAt(s.va, HMM_PT_LLEVEL);
    s.proc.mm.madvise(s.va + 4 * PAGE, 4 * PAGE, MADV_DONTNEED);
    expect(s.drv.updates.at(-1)).toMatchObject({ etype: HmmEtype.HMM_MUNMAP, start: s.va + 4 * PAGE });
    expect(s.mirror.pt.count[leaf]).toBe(12);
    expect(entryOf(s.mirror, s.va + 4 * PAGE)!.lo).toBe(0);
    expect(entryOf(s.mirror, s.va + 8 * PAGE)!.lo & HMM_PTE_VALID_PFN).toBeTruthy();
  });

  it("mprotect to read-only is HMM_WRITE_PROTECT: entries keep their frames and lose the write bit", () => {
    const s = setup();
    const before = entryOf(s.mirror, s.va)!;
    s.proc.mm.mprotect(s.va, 16 * PAGE, PROT_READ);
    expect(s.drv.updates.at(-1)!.etype).toBe(HmmEtype.HMM_WRITE_PROTECT);
    const after = entryOf(s.mirror, s.va)!;
    expect(after.hi).toBe(before.hi);
    expect(after.lo & ~HMM_PTE_WRITE & ~HMM_PTE_DIRTY).toBe(before.lo & ~HMM_PTE_WRITE & ~HMM_PTE_DIRTY);
    expect(after.lo & HMM_PTE_WRITE).toBe(0);
  });

  it("mprotect to PROT_NONE is HMM_MUNMAP: every entry goes", () => {
    const s = setup();
    s.proc.mm.mprotect(s.va, 16 * PAGE, PROT_NONE);
    expect(s.drv.updates.at(-1)!.etype).toBe(HmmEtype.HMM_MUNMAP);
    expect(s.mirror.pt.directories).toBe(0);
  });

  it("fork is HMM_FORK: the parent's entries are write-protected, not dropped", () => {
    const s = setup();
    s.proc.fork();
    expect(s.drv.updates.some((u) => u.etype === HmmEtype.HMM_FORK)).toBe(true);
    const e = entryOf(s.mirror, s.va)!;
    expect(e.lo & HMM_PTE_VALID_PFN).toBeTruthy();
    expect(e.lo & HMM_PTE_WRITE).toBe(0);
  });

  it("a dirty writable entry being cleared is counted (v12 calls set_page_dirty on its page)", () => {
    const s = setup(4);
    expect(s.mirror.setDirty(s.va)).toBe(true);
    s.proc.mm.munmap(s.va, 4 * PAGE);
    expect(s.sm.counters.dirtyPages).toBe(1);
  });

  it("process exit (RELEASE over all of user space) clears everything and detaches the mirror", () => {
    const s = setup();
    s.proc.exit();
    expect(s.drv.updates.at(-1)).toMatchObject({ etype: HmmEtype.HMM_MUNMAP, start: 0 });
    expect(s.mirror.hmm).toBeNull();
    expect(s.mirror.pt.directories).toBe(0);
  });

  it("an update that fails kills the mirror (hmm_mirror_kill): HMM_MUNMAP over everything, later faults -ENODEV", () => {
    const s = setup();
    s.drv.updateResult = -5;
    s.proc.mm.madvise(s.va, PAGE, MADV_DONTNEED);
    expect(s.mirror.hmm).toBeNull();
    expect(s.drv.updates.at(-1)).toMatchObject({ etype: HmmEtype.HMM_MUNMAP, start: 0 });
    expect(s.mirror.pt.directories).toBe(0);
    expect(s.mirror.fault(s.va + PAGE, s.va + 2 * PAGE, false)).toBe(-19);
  });

  it("maps every core notifier event onto v12's hmm_etype as documented", () => {
    const rw = 3;
    expect(hmmEtypeOf(MmuNotifyEvent.UNMAP, rw)).toBe(HmmEtype.HMM_MUNMAP);
    expect(hmmEtypeOf(MmuNotifyEvent.CLEAR, rw)).toBe(HmmEtype.HMM_MUNMAP);
    expect(hmmEtypeOf(MmuNotifyEvent.PROTECTION_VMA, 0)).toBe(HmmEtype.HMM_MUNMAP);
    expect(hmmEtypeOf(MmuNotifyEvent.PROTECTION_VMA, 1)).toBe(HmmEtype.HMM_WRITE_PROTECT);
    expect(hmmEtypeOf(MmuNotifyEvent.PROTECTION_VMA, rw)).toBe(HmmEtype.HMM_WRITE_PROTECT);
    expect(hmmEtypeOf(MmuNotifyEvent.PROTECTION_PAGE, rw)).toBe(HmmEtype.HMM_FORK);
    expect(hmmEtypeOf(MmuNotifyEvent.SOFT_DIRTY, rw)).toBe(HmmEtype.HMM_WRITE_PROTECT);
    expect(hmmEtypeOf(MmuNotifyEvent.RELEASE, rw)).toBe(HmmEtype.HMM_MUNMAP);
    expect(hmmEtypeOf(MmuNotifyEvent.MIGRATE, rw)).toBe(HmmEtype.HMM_MIGRATE);
    expect(hmmEtypeOf(MmuNotifyEvent.EXCLUSIVE, rw)).toBe(HmmEtype.HMM_MIGRATE);
  });

  it("an invalidation far from anything mirrored walks no directory and allocates nothing", () => {
    const s = setup();
    const before = s.mirror.pt.stats.snapshot();
    const other = mmapPrivate(s.proc, PMD);
    s.proc.touch(other, PAGE, true);
    s.proc.mm.munmap(other, PMD);
    expect(s.mirror.pt.stats.directoriesAllocated).toBe(before.directoriesAllocated);
    expect(s.mirror.pt.stats.entriesCleared).toBe(0);
  });
});

describe("unbinding", () => {
  it("HmmCore.unbind kills the mirror (HMM_MUNMAP over everything, hmm_pt emptied); it stays detached until registered again", () => {
    const s = setup();
    s.core.unbind(s.dev, s.proc);
    expect(s.drv.updates.at(-1)).toMatchObject({ etype: HmmEtype.HMM_MUNMAP, start: 0 });
    expect(s.mirror.hmm).toBeNull();
    expect(s.mirror.pt.directories).toBe(0);
    expect(s.mirror.fault(s.va, s.va + PAGE, false)).toBe(-19);
    const again = s.sm.register(s.proc.mm);
    expect(again).not.toBe(s.mirror);
    expect(again.fault(s.va, s.va + 16 * PAGE, false)).toBe(0);
    expect(entryOf(again, s.va)!.lo & HMM_PTE_VALID_PFN).toBeTruthy();
  });
});
