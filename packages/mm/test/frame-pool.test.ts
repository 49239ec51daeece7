import { describe, expect, it } from "vitest";
import {
  FRAME_FREE,
  FRAME_LARGE,
  FramePool,
  HPAGE_PMD_NR,
  HPAGE_PMD_SIZE,
  Machine,
  MmError,
  OutOfMemoryError,
  stampToken,
  ZERO_PFN,
} from "../src/index.js";
import { MiB, mmapHuge, mmapPrivate, PAGE, thrown } from "./helpers.js";

/** 8 MiB: four 2 MiB blocks, block 0 reserved for the zero pages, 1536 allocatable frames. */
const SMALL = 8 * MiB;
const ALLOCATABLE = 3 * HPAGE_PMD_NR;

describe("FramePool allocation", () => {
  it("reserves block 0 for the zero pages and counts every other frame as free", () => {
    const pool = new FramePool(SMALL, "bytes");
    expect(pool.nframes).toBe(4 * HPAGE_PMD_NR);
    expect(pool.nblocks).toBe(4);
    expect(pool.freeFrames).toBe(ALLOCATABLE);
    expect(pool.usedFrames).toBe(0);
  });

  it("hands out a frame outside the reserved block with one reference, and put frees it", () => {
    const pool = new FramePool(SMALL, "bytes");
    const pfn = pool.allocPage();
    expect(pfn).toBeGreaterThanOrEqual(HPAGE_PMD_NR);
    expect(pool.refcount[pfn]).toBe(1);
    expect(pool.flags[pfn] & FRAME_FREE).toBe(0);
    expect(pool.usedFrames).toBe(1);
    pool.put(pfn);
    expect(pool.flags[pfn] & FRAME_FREE).toBe(FRAME_FREE);
    expect(pool.refcount[pfn]).toBe(0);
    expect(pool.usedFrames).toBe(0);
    expect(pool.freeFrames).toBe(ALLOCATABLE);
  });

  it("keeps a frame allocated until its last reference is dropped", () => {
    const pool = new FramePool(SMALL, "bytes");
    const pfn = pool.allocPage();
    pool.get(pfn);
    pool.get(pfn);
    expect(pool.refcount[pfn]).toBe(3);
    pool.put(pfn);
    pool.put(pfn);
    expect(pool.usedFrames).toBe(1);
    pool.put(pfn);
    expect(pool.usedFrames).toBe(0);
  });

  it("refuses to drop a reference on a free frame", () => {
    const pool = new FramePool(SMALL, "bytes");
    const pfn = pool.allocPage();
    pool.put(pfn);
    const e = thrown(() => pool.put(pfn));
    expect(e).toBeInstanceOf(MmError);
    expect(e.code).toBe("FRAME_STATE");
    expect(e.message).toContain(`frame ${pfn}`);
  });

  it("never counts references on the reserved zero page", () => {
    const pool = new FramePool(SMALL, "bytes");
    pool.get(ZERO_PFN);
    expect(pool.refcount[ZERO_PFN]).toBe(0);
    pool.put(ZERO_PFN);
    expect(pool.usedFrames).toBe(0);
  });

  it("allocates a huge folio as 512 aligned frames of one block, all part of the folio", () => {
    const pool = new FramePool(SMALL, "bytes");
    const head = pool.tryAllocHuge();
    expect(head).toBeGreaterThan(0);
    expect(head % HPAGE_PMD_NR).toBe(0);
    expect(pool.refcount[head]).toBe(1);
    expect(pool.usedFrames).toBe(HPAGE_PMD_NR);
    for (let i = 0; i < HPAGE_PMD_NR; i++) {
      expect(pool.flags[head + i] & FRAME_LARGE).toBe(FRAME_LARGE);
      expect(pool.folioHead(head + i)).toBe(head);
    }
    // A reference taken through any subpage is a reference on the folio.
    pool.get(head + 300);
    expect(pool.refcount[head]).toBe(2);
    pool.put(head + 300);
    pool.put(head);
    expect(pool.usedFrames).toBe(0);
    expect(pool.tryAllocHuge()).toBe(head);
  });

  it("has no huge folio to give once every block holds a small frame, but small frames remain", () => {
    const pool = new FramePool(SMALL, "bytes");
    const small = pool.allocPage();
    expect(pool.tryAllocHuge()).toBeGreaterThan(0);
    expect(pool.tryAllocHuge()).toBeGreaterThan(0);
    // 511 frames are free, but not as one aligned block.
    expect(pool.freeFrames).toBe(HPAGE_PMD_NR - 1);
    expect(pool.tryAllocHuge()).toBe(-1);
    const other = pool.allocPage();
    expect(Math.floor(other / HPAGE_PMD_NR)).toBe(Math.floor(small / HPAGE_PMD_NR));
  });

  it("reuses freed small frames before breaking up another whole block", () => {
    const pool = new FramePool(SMALL, "bytes");
    const a = pool.allocPage();
    pool.put(a);
    pool.allocPage();
    // The second small frame came from the block the first one split, so two whole blocks are left.
    expect(pool.tryAllocHuge()).toBeGreaterThan(0);
    expect(pool.tryAllocHuge()).toBeGreaterThan(0);
  });

  it("merges a split block back into a huge folio once all its frames are free again", () => {
    const pool = new FramePool(SMALL, "bytes");
    const pages = [pool.allocPage(), pool.allocPage(), pool.allocPage()];
    const block = Math.floor(pages[0] / HPAGE_PMD_NR);
    expect(pool.tryAllocHuge()).toBeGreaterThan(0);
    expect(pool.tryAllocHuge()).toBeGreaterThan(0);
    expect(pool.tryAllocHuge()).toBe(-1);
    pool.put(pages[0]);
    pool.put(pages[1]);
    expect(pool.tryAllocHuge()).toBe(-1); // one frame of the block is still in use
    pool.put(pages[2]);
    expect(pool.tryAllocHuge()).toBe(block * HPAGE_PMD_NR);
    expect(pool.freeFrames).toBe(0);
  });

  it("throws OutOfMemoryError (ENOMEM) naming what was allocated and how much is free", () => {
    const pool = new FramePool(SMALL, "bytes");
    for (let i = 0; i < ALLOCATABLE; i++) pool.allocPage();
    expect(pool.tryAllocPage()).toBe(-1);
    const e = thrown(() => pool.allocPage("a page-table page"));
    expect(e).toBeInstanceOf(OutOfMemoryError);
    expect(e).toBeInstanceOf(MmError);
    expect(e.errno).toBe("ENOMEM");
    expect(e.code).toBe("OUT_OF_MEMORY");
    expect(e.message).toContain("out of memory allocating a page-table page");
    expect(e.message).toContain(`0 of ${4 * HPAGE_PMD_NR} frames free`);
    expect(e.message).toContain("memoryBytes");
  });

  it("refuses a pool smaller than two huge blocks with EINVAL", () => {
    const e = thrown(() => new FramePool(2 * MiB, "tag"));
    expect(e.errno).toBe("EINVAL");
    expect(e.code).toBe("BAD_CONFIG");
    expect(e.message).toContain("4 MiB");
  });
});

describe("FramePool deferred split of partially unmapped large folios", () => {
  /** A process with a THP whose second half was unmapped, in a machine with 3 allocatable blocks. */
  function halfUnmappedThp() {
    const m = new Machine({ memoryBytes: SMALL, contentMode: "tag" });
    const p = m.createProcess();
    const a = mmapHuge(p);
    p.writeStamp(a, HPAGE_PMD_SIZE, 7);
    expect(m.stats.thpAllocs).toBe(1);
    const head = p.mm.pt.pmdPfn[p.mm.pt.pmdSlot(a)];
    p.mm.munmap(a + HPAGE_PMD_SIZE / 2, HPAGE_PMD_SIZE / 2);
    return { m, p, a, head };
  }

  it("keeps the whole folio allocated after half of it is unmapped", () => {
    const { m, head } = halfUnmappedThp();
    expect(m.usedFrames).toBe(HPAGE_PMD_NR);
    expect(m.pool.isLarge(head)).toBe(true);
  });

  it("splits the folio and frees its unmapped half when memory runs out", () => {
    const { m, p, a, head } = halfUnmappedThp();
    // Fill the two other blocks with 4 KiB pages: no free frame is left.
    const fill = mmapPrivate(p, 4 * MiB);
    p.writeStamp(fill, 4 * MiB, 9);
    expect(m.pool.freeFrames).toBe(0);
    // The next allocation only succeeds because the deferred split queue is run.
    const extra = mmapPrivate(p, PAGE);
    p.writeStamp(extra, PAGE, 11);
    expect(m.pool.isLarge(head)).toBe(false);
    expect(m.usedFrames).toBe(HPAGE_PMD_NR / 2 + 2 * HPAGE_PMD_NR + 1);
    // The half that is still mapped kept its data.
    for (let off = 0; off < HPAGE_PMD_SIZE / 2; off += 64 * PAGE) {
      expect(p.readPageHash(a + off)).toBe(stampToken(7));
    }
    expect(p.readPageHash(fill)).toBe(stampToken(9));
    p.exit();
    expect(m.usedFrames).toBe(0);
  });

  it("cannot split a folio while someone holds an extra reference to it", () => {
    const { m, p, head } = halfUnmappedThp();
    m.pool.get(head); // a pin, as get_user_pages would take
    expect(m.pool.shrinkDeferredSplit()).toBe(false);
    expect(m.usedFrames).toBe(HPAGE_PMD_NR);
    m.pool.put(head);
    expect(m.pool.shrinkDeferredSplit()).toBe(true);
    expect(m.usedFrames).toBe(HPAGE_PMD_NR / 2);
    p.exit();
    expect(m.usedFrames).toBe(0);
  });
});
