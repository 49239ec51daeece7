import { describe, expect, it } from "vitest";
import {
  HMM_PT_DIRECTORY_BYTES,
  HMM_PT_LLEVEL,
  HMM_PT_PGD_BYTES,
  HMM_PTE_DIRTY,
  HMM_PTE_HW_SHIFT,
  HMM_PTE_VALID_PFN,
  HMM_PTE_WRITE,
  HmmPt,
  HmmPtAssertionError,
  HmmPtIter,
  hmmPteHi,
  hmmPteLo,
  hmmPtePfn,
} from "../src/index.js";

const GiB = 2 ** 30;
const PMD = 2 * 1024 * 1024;

/** Make [start, start + n pages) valid through a walker, as a fault fill does. */
function fill(pt: HmmPt, start: number, n: number, pfn0 = 100): HmmPtIter {
  const it = new HmmPtIter(pt);
  const end = start + n * 4096;
  let a = start;
  while (a < end) {
    let pos = it.populate(a, end);
    it.lock();
    for (; a < it.next; a += 4096, pos++) {
      pt.lo[pos] = hmmPteLo(pfn0 + (a - start) / 4096, HMM_PTE_VALID_PFN);
      pt.hi[pos] = hmmPteHi(pfn0);
      it.ref();
    }
    it.unlock();
  }
  return it;
}

/** Clear [start, start + n pages) through a walker, as an invalidation does. */
function clear(pt: HmmPt, start: number, n: number, it = new HmmPtIter(pt)): HmmPtIter {
  const end = start + n * 4096;
  let a = start;
  while (a < end) {
    let pos = it.walk(a, end);
    if (pos < 0) break;
    for (a = it.addr; a < it.next; a += 4096, pos++) {
      if (pt.lo[pos] === 0) continue;
      pt.lo[pos] = 0;
      pt.hi[pos] = 0;
      it.unref();
    }
  }
  return it;
}

describe("hmm_pt directories and reference counts", () => {
  it("entries are 64-bit dma-address words: the pfn above PAGE_SHIFT, flags below, beyond 32 bits", () => {
    const pfn = 2 ** 40 + 12345;
    const lo = hmmPteLo(pfn, HMM_PTE_VALID_PFN);
    expect(lo & 0xfff).toBe(HMM_PTE_VALID_PFN);
    expect(hmmPtePfn(lo, hmmPteHi(pfn))).toBe(pfn);
  });

  it("a leaf directory counts its valid entries plus the walker inside it", () => {
    const pt = new HmmPt();
    const it = fill(pt, 0x40000000, 10);
    const leaf = pt.directoryAt(0x40000000, HMM_PT_LLEVEL);
    expect(pt.count[leaf]).toBe(11);
    // The level-2 directory: one child (the leaf) plus the walker; level 1 likewise.
    expect(pt.count[pt.directoryAt(0x40000000, 2)]).toBe(2);
    expect(pt.count[pt.directoryAt(0x40000000, 1)]).toBe(2);
    it.fini();
    expect(pt.count[leaf]).toBe(10);
    expect(pt.count[pt.directoryAt(0x40000000, 2)]).toBe(1);
  });

  it("a directory emptied under a walker is freed only when the walker leaves it, then at once", () => {
    const pt = new HmmPt();
    fill(pt, 0x40000000, 4).fini();
    const leaf = pt.directoryAt(0x40000000, HMM_PT_LLEVEL);
    const inv = clear(pt, 0x40000000, 4);
    // Every entry is cleared, yet the count is the walker's reference: not zero, not freed.
    expect(pt.count[leaf]).toBe(1);
    expect(pt.isAllocated(leaf)).toBe(true);
    inv.fini();
    expect(pt.isAllocated(leaf)).toBe(false);
    // The whole path emptied: every level pruned, only the root array is left.
    expect(pt.directories).toBe(0);
    expect(pt.bytes).toBe(HMM_PT_PGD_BYTES);
    expect(pt.stats.directoriesPruned).toBe(3);
  });

  it("an invalidation walker and a fault walker inside the same leaf keep it alive until both leave", () => {
    const pt = new HmmPt();
    const fault = fill(pt, 0x40000000, 4);
    const leaf = fault.leaf;
    const inv = clear(pt, 0x40000000, 4);
    expect(pt.count[leaf]).toBe(2);
    inv.fini();
    expect(pt.isAllocated(leaf)).toBe(true);
    fault.fini();
    expect(pt.isAllocated(leaf)).toBe(false);
  });

  it("taking a reference on a directory whose count is zero is an assertion error naming it", () => {
    const pt = new HmmPt();
    const it = fill(pt, 0x40000000, 1);
    const leaf = it.leaf;
    it.fini();
    clear(pt, 0x40000000, 1).fini();
    expect(pt.count[leaf]).toBe(0);
    expect(() => pt.ref(leaf)).toThrow(HmmPtAssertionError);
    expect(() => pt.ref(leaf)).toThrow(
      /hmm_pt_directory_ref: directory #\d+ \(level 3, \[0x40000000, 0x40200000\)\) has count 0/,
    );
  });

  it("an entry unref that would bring a count to zero is an assertion error (only a walker's exit may)", () => {
    const pt = new HmmPt();
    fill(pt, 0x40000000, 1).fini();
    const leaf = pt.directoryAt(0x40000000, HMM_PT_LLEVEL);
    expect(pt.count[leaf]).toBe(1);
    expect(() => pt.unref(leaf)).toThrow(/would drop to count 0 on an entry unref/);
    expect(pt.count[leaf]).toBe(1);
  });

  it("a walker moving to another leaf drops the old one's reference and prunes it if empty", () => {
    const pt = new HmmPt();
    const it = new HmmPtIter(pt);
    it.populate(0x40000000, 0x40001000);
    it.populate(0x40000000 + PMD, 0x40001000 + PMD);
    expect(pt.directoryAt(0x40000000, HMM_PT_LLEVEL)).toBe(-1);
    expect(pt.liveByLevel[HMM_PT_LLEVEL]).toBe(1);
    expect(pt.stats.directoriesPruned).toBe(1);
    it.fini();
  });

  it("a walk skips missing directories a whole directory at a time", () => {
    const pt = new HmmPt();
    fill(pt, 5 * GiB + 3 * PMD, 2).fini();
    const it = new HmmPtIter(pt);
    const pos = it.walk(0, 2 ** 47 - 4096);
    expect(pos).toBeGreaterThanOrEqual(0);
    expect(it.addr).toBe(5 * GiB + 3 * PMD);
    it.fini();
  });

  it("one GiB mirrored costs 512 leaf directories (2 MiB) plus two upper directories and the root", () => {
    const pt = new HmmPt();
    fill(pt, GiB, 262_144).fini();
    expect(pt.leafBytes).toBe(512 * HMM_PT_DIRECTORY_BYTES);
    expect(pt.directoryBytes).toBe(2 * HMM_PT_DIRECTORY_BYTES + HMM_PT_PGD_BYTES);
    expect(pt.bytes).toBe(2 * 1024 * 1024 + 8192 + 2048);
  });

  it("a directory lock taken twice is an assertion error (a spinlock deadlock)", () => {
    const pt = new HmmPt();
    const it = fill(pt, 0, 1);
    it.lock();
    expect(() => it.lock()).toThrow(/already locked/);
    it.unlock();
    it.fini();
  });

  it("with delayed pruning an emptied directory stays for reuse and a walker revives it", () => {
    const pt = new HmmPt({ delayedPruning: 8 });
    fill(pt, 0x40000000, 4).fini();
    clear(pt, 0x40000000, 4).fini();
    expect(pt.directories).toBe(3);
    expect(pt.delayedDirectories).toBe(1);
    fill(pt, 0x40000000, 4).fini();
    expect(pt.stats.directoriesRevived).toBe(1);
    expect(pt.stats.directoriesAllocated).toBe(3);
    expect(pt.delayedDirectories).toBe(0);
  });

  it("without delayed pruning the same churn reallocates the leaf, counted as re-allocated soon after pruning", () => {
    const pt = new HmmPt();
    for (let r = 0; r < 3; r++) {
      fill(pt, 0x40000000, 4).fini();
      clear(pt, 0x40000000, 4).fini();
    }
    expect(pt.stats.directoriesAllocated).toBe(9);
    expect(pt.stats.directoriesReallocatedSoon).toBe(6);
  });

  it("the delayed queue prunes its oldest directory when full, and its emptied parents with it", () => {
    const pt = new HmmPt({ delayedPruning: 1 });
    fill(pt, 0x40000000, 1).fini();
    fill(pt, 0x40000000 + PMD, 1).fini();
    clear(pt, 0x40000000, 1).fini();
    clear(pt, 0x40000000 + PMD, 1).fini();
    expect(pt.delayedDirectories).toBe(1);
    expect(pt.liveByLevel[3]).toBe(1);
    pt.flushDelayed();
    expect(pt.directories).toBe(0);
  });
});

describe("the directory lock", () => {
  it("serializes flag changes: clearing the write bit unlocked is an assertion error, the dirty bit and driver bits need no lock", () => {
    const pt = new HmmPt();
    const it = fill(pt, 0x40000000, 1);
    const pos = it.lookup(0x40000000, 0x40001000);
    expect(() => it.changeFlags(pos, HMM_PTE_WRITE, false)).toThrow(/without the directory lock/);
    it.changeFlags(pos, HMM_PTE_DIRTY, true);
    it.changeFlags(pos, 1 << HMM_PTE_HW_SHIFT, true);
    expect(pt.lo[pos] & (HMM_PTE_DIRTY | (1 << HMM_PTE_HW_SHIFT))).toBe(
      HMM_PTE_DIRTY | (1 << HMM_PTE_HW_SHIFT),
    );
    it.lock();
    it.changeFlags(pos, HMM_PTE_WRITE, true);
    it.unlock();
    expect(pt.lo[pos] & HMM_PTE_WRITE).toBe(HMM_PTE_WRITE);
    expect(pt.stats.lockAcquisitions).toBeGreaterThanOrEqual(2);
    it.fini();
  });
});
