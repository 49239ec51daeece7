import { HPAGE_PMD_NR, PAGE_SIZE } from "./constants.js";
import { type ContentMode, ContentStore } from "./content-store.js";
import { MmError, OutOfMemoryError } from "./errors.js";

/** Frame flag bits (`FramePool.flags`). */
export const FRAME_FREE = 1;
/** The frame belongs to a 2 MiB large folio whose head is the first frame of its block. */
export const FRAME_LARGE = 2;
/** PageAnonExclusive: the page is mapped by exactly one process and may be written without COW. */
export const FRAME_ANON_EXCLUSIVE = 4;
/** An anonymous (private) page. */
export const FRAME_ANON = 8;
/** A page of a shared anonymous mapping's backing object (shmem). */
export const FRAME_SHMEM = 16;
/** Never allocated or freed: the zero page and the huge zero page. */
export const FRAME_RESERVED = 32;
/**
 * Lazily freed by MADV_FREE (the kernel clears PG_swapbacked): reclaim discards the folio instead
 * of keeping it, unless a mapping or the folio was dirtied again. Kept on the folio's head.
 */
export const FRAME_LAZYFREE = 64;
/**
 * PG_dirty of the folio (kept on its head). Anonymous folios get it when a dirty PMD is split or
 * reclaim finds a dirty PTE; MADV_FREE clears it. Without it a clean lazyfree folio is discarded.
 */
export const FRAME_DIRTY = 128;

/** Pfn of the shared zero page; the huge zero page is the reserved block starting at the same pfn. */
export const ZERO_PFN = 0;
const NO_FRAME = -1;
/** mm id meaning "slot unused" in a large folio's two mm-id slots. */
const MM_ID_NONE = 0;

/**
 * Physical memory: a pool of 4 KiB frames grouped in 2 MiB blocks, with a refcount and mapcount
 * per frame in typed arrays. Small frames come from a free list fed by splitting whole free
 * blocks; a block whose frames are all free again rejoins the list of free blocks, so huge
 * frames (512 contiguous, aligned frames) stay available. Block 0 is reserved: frame 0 is the zero
 * page and the whole block is the huge zero page.
 *
 * Counting follows the kernel's folio rules: `refcount` is per folio (at its head frame): one
 * reference per mapping (PTE or PMD), per page-cache slot, per pin; `mapcount` is per page and
 * counts PTE mappings; a large folio also has `entireMapcount` (PMD mappings), `largeMapcount`
 * (all mappings) and two mm-id slots that tell whether it may be mapped by more than one process
 * (CONFIG_MM_ID), which decides whether a write fault may reuse it.
 */
export class FramePool {
  readonly nframes: number;
  readonly nblocks: number;
  readonly content: ContentStore;
  readonly refcount: Int32Array;
  readonly mapcount: Int32Array;
  readonly flags: Uint8Array;
  /** Per block: PMD mappings of the large folio in that block. */
  readonly entireMapcount: Int32Array;
  /** Per block: all mappings (PMD and PTE) of the large folio in that block. */
  readonly largeMapcount: Int32Array;
  /** Per block: the two mm-id slots of the large folio and their mapping counts. */
  readonly mmId0: Int32Array;
  readonly mmId1: Int32Array;
  readonly mmCount0: Int32Array;
  readonly mmCount1: Int32Array;
  /** Per block: 1 if the large folio may be mapped by more than one mm. */
  readonly maybeShared: Uint8Array;

  private readonly next: Int32Array;
  private readonly prev: Int32Array;
  private freeHead = NO_FRAME;
  /** Per block: free frames of a split block, or -1 while the whole block is free. */
  private readonly blockFree: Int16Array;
  /** Split blocks whose 512 frames are all free again (merged back lazily, see tryAllocHuge). */
  private mergeableBlocks = 0;
  private readonly freeBlocks: Int32Array;
  private nFreeBlocks = 0;
  private freeFrameCount = 0;
  /** Large folios that lost some of their mappings (the kernel's deferred split queue). */
  private readonly deferredSplit = new Set<number>();
  /**
   * Reclaim run when no frame is left even after the deferred split queue (the machine discards
   * clean lazily-freed pages, as shrink_folio_list does); true if it freed anything.
   */
  reclaim: (() => boolean) | null = null;

  constructor(memoryBytes: number, mode: ContentMode) {
    if (!Number.isFinite(memoryBytes) || memoryBytes < 2 * HPAGE_PMD_NR * PAGE_SIZE) {
      throw new MmError("EINVAL", `memoryBytes must be at least 4 MiB (got ${memoryBytes})`, "BAD_CONFIG");
    }
    this.nblocks = Math.floor(memoryBytes / (HPAGE_PMD_NR * PAGE_SIZE));
    const n = this.nblocks * HPAGE_PMD_NR;
    this.nframes = n;
    this.content = new ContentStore(mode, n);
    this.refcount = new Int32Array(n);
    this.mapcount = new Int32Array(n);
    this.flags = new Uint8Array(n).fill(FRAME_FREE);
    this.next = new Int32Array(n).fill(NO_FRAME);
    this.prev = new Int32Array(n).fill(NO_FRAME);
    const nb = this.nblocks;
    this.entireMapcount = new Int32Array(nb);
    this.largeMapcount = new Int32Array(nb);
    this.mmId0 = new Int32Array(nb);
    this.mmId1 = new Int32Array(nb);
    this.mmCount0 = new Int32Array(nb);
    this.mmCount1 = new Int32Array(nb);
    this.maybeShared = new Uint8Array(nb);
    this.blockFree = new Int16Array(nb).fill(-1);
    this.freeBlocks = new Int32Array(nb);
    // Block 0 is the (huge) zero page; the rest are free, lowest address handed out first.
    for (let i = 0; i < HPAGE_PMD_NR; i++) this.flags[i] = FRAME_RESERVED;
    this.blockFree[0] = 0;
    for (let b = nb - 1; b >= 1; b--) this.freeBlocks[this.nFreeBlocks++] = b;
    this.freeFrameCount = n - HPAGE_PMD_NR;
  }

  /** Frames currently free. */
  get freeFrames(): number {
    return this.freeFrameCount;
  }

  /** Frames in use (allocated), not counting the reserved zero-page block. */
  get usedFrames(): number {
    return this.nframes - HPAGE_PMD_NR - this.freeFrameCount;
  }

  /** Head frame of the folio that contains `pfn`. */
  folioHead(pfn: number): number {
    return this.flags[pfn] & FRAME_LARGE ? pfn - (pfn % HPAGE_PMD_NR) : pfn;
  }

  /** True if `pfn` is part of a 2 MiB large folio. */
  isLarge(pfn: number): boolean {
    return (this.flags[pfn] & FRAME_LARGE) !== 0;
  }

  /** The mapcount /proc/kpagecount reports for a page: its PTE mappings plus PMD mappings of its folio. */
  pageMapcount(pfn: number): number {
    if (this.flags[pfn] & FRAME_RESERVED) return 0;
    const base = this.mapcount[pfn];
    return this.flags[pfn] & FRAME_LARGE ? base + this.entireMapcount[(pfn / HPAGE_PMD_NR) | 0] : base;
  }

  // ---- allocation -----------------------------------------------------------------------------

  private unlink(pfn: number): void {
    const p = this.prev[pfn];
    const n = this.next[pfn];
    if (p === NO_FRAME) this.freeHead = n;
    else this.next[p] = n;
    if (n !== NO_FRAME) this.prev[n] = p;
    this.next[pfn] = NO_FRAME;
    this.prev[pfn] = NO_FRAME;
  }

  private pushFree(pfn: number): void {
    this.prev[pfn] = NO_FRAME;
    this.next[pfn] = this.freeHead;
    if (this.freeHead !== NO_FRAME) this.prev[this.freeHead] = pfn;
    this.freeHead = pfn;
  }

  private splitFreeBlock(): boolean {
    if (this.nFreeBlocks === 0) return false;
    const b = this.freeBlocks[--this.nFreeBlocks];
    this.blockFree[b] = HPAGE_PMD_NR;
    this.mergeableBlocks++;
    const base = b * HPAGE_PMD_NR;
    for (let i = HPAGE_PMD_NR - 1; i >= 0; i--) this.pushFree(base + i);
    return true;
  }

  /** True if {@link tryAllocPage} would pop the free list at once (no split, shrinker or reclaim). */
  hasFreePage(): boolean {
    return this.freeHead !== NO_FRAME;
  }

  /**
   * Allocate one 4 KiB frame with refcount 1 (the caller's reference), or -1 if memory is
   * exhausted even after running the deferred split queue. Content is not cleared.
   */
  tryAllocPage(): number {
    if (this.freeHead === NO_FRAME && !this.splitFreeBlock()) {
      if (!this.shrinkDeferredSplit() || (this.freeHead === NO_FRAME && !this.splitFreeBlock())) {
        if (this.reclaim === null || !this.reclaim()) return NO_FRAME;
        if (this.freeHead === NO_FRAME && !this.splitFreeBlock()) return NO_FRAME;
      }
    }
    // Pop the head of the free list (unlink, for the one frame that has no predecessor).
    const pfn = this.freeHead;
    const next = this.next[pfn];
    this.freeHead = next;
    if (next !== NO_FRAME) this.prev[next] = NO_FRAME;
    this.next[pfn] = NO_FRAME;
    if (this.blockFree[(pfn / HPAGE_PMD_NR) | 0]-- === HPAGE_PMD_NR) this.mergeableBlocks--;
    this.freeFrameCount--;
    this.flags[pfn] = 0;
    this.refcount[pfn] = 1;
    this.mapcount[pfn] = 0;
    return pfn;
  }

  /** Like {@link tryAllocPage} but throws {@link OutOfMemoryError}. */
  allocPage(what = "a 4 KiB page"): number {
    const pfn = this.tryAllocPage();
    if (pfn === NO_FRAME) throw new OutOfMemoryError(what, this.nframes, this.freeFrameCount);
    return pfn;
  }

  /**
   * Allocate a 2 MiB large folio (512 aligned frames) with refcount 1 and return its head, or -1
   * if no whole free block is left (the caller falls back to 4 KiB pages, as THP faults do).
   */
  tryAllocHuge(): number {
    if (this.nFreeBlocks === 0 && !this.mergeFreeBlocks()) return NO_FRAME;
    const b = this.freeBlocks[--this.nFreeBlocks];
    this.blockFree[b] = 0;
    const head = b * HPAGE_PMD_NR;
    this.flags.fill(FRAME_LARGE, head, head + HPAGE_PMD_NR);
    this.mapcount.fill(0, head, head + HPAGE_PMD_NR);
    this.refcount[head] = 1;
    this.entireMapcount[b] = 0;
    this.largeMapcount[b] = 0;
    this.mmId0[b] = MM_ID_NONE;
    this.mmId1[b] = MM_ID_NONE;
    this.mmCount0[b] = 0;
    this.mmCount1[b] = 0;
    this.maybeShared[b] = 0;
    this.freeFrameCount -= HPAGE_PMD_NR;
    return head;
  }

  private freeSmall(pfn: number): void {
    this.flags[pfn] = FRAME_FREE;
    this.refcount[pfn] = 0;
    this.mapcount[pfn] = 0;
    this.freeFrameCount++;
    const b = (pfn / HPAGE_PMD_NR) | 0;
    this.pushFree(pfn);
    if (++this.blockFree[b] === HPAGE_PMD_NR) this.mergeableBlocks++;
  }

  /**
   * Give blocks whose frames are all free back to the huge allocator. Like the kernel, freed 4 KiB
   * frames stay on the (LIFO) small free list and are reused first; they are only merged into
   * whole blocks when a huge allocation finds none free. True if any block was merged.
   */
  private mergeFreeBlocks(): boolean {
    if (this.mergeableBlocks === 0) return false;
    for (let b = this.nblocks - 1; b >= 1; b--) {
      if (this.blockFree[b] !== HPAGE_PMD_NR) continue;
      const base = b * HPAGE_PMD_NR;
      for (let i = 0; i < HPAGE_PMD_NR; i++) this.unlink(base + i);
      this.blockFree[b] = -1;
      this.freeBlocks[this.nFreeBlocks++] = b;
    }
    this.mergeableBlocks = 0;
    return this.nFreeBlocks > 0;
  }

  private freeLarge(head: number): void {
    const b = (head / HPAGE_PMD_NR) | 0;
    this.deferredSplit.delete(head);
    this.flags.fill(FRAME_FREE, head, head + HPAGE_PMD_NR);
    this.refcount[head] = 0;
    this.mapcount.fill(0, head, head + HPAGE_PMD_NR);
    this.blockFree[b] = -1;
    this.freeBlocks[this.nFreeBlocks++] = b;
    this.freeFrameCount += HPAGE_PMD_NR;
  }

  // ---- references ---------------------------------------------------------------------------

  /** Take a reference on the folio containing `pfn`. */
  get(pfn: number): void {
    if (this.flags[pfn] & FRAME_RESERVED) return;
    this.refcount[this.folioHead(pfn)]++;
  }

  /** Drop a reference on the folio containing `pfn`; the folio is freed when none are left. */
  put(pfn: number): void {
    if (this.flags[pfn] & FRAME_RESERVED) return;
    const head = this.folioHead(pfn);
    if (this.flags[head] & FRAME_FREE) throw new MmError("EINVAL", `put on free frame ${pfn}`, "FRAME_STATE");
    const r = --this.refcount[head];
    if (r > 0) return;
    if (r < 0) throw new MmError("EINVAL", `refcount of frame ${head} went negative`, "FRAME_STATE");
    if (this.flags[head] & FRAME_LARGE) this.freeLarge(head);
    else this.freeSmall(head);
  }

  // ---- large-folio mapping accounting (CONFIG_MM_ID) ----------------------------------------

  /** Account `diff` new mappings of the large folio of block `b` by mm `mmId`. */
  addLargeMapping(b: number, mmId: number, diff: number): void {
    const before = this.largeMapcount[b];
    this.largeMapcount[b] = before + diff;
    if (this.mmId0[b] === mmId) this.mmCount0[b] += diff;
    else if (this.mmId1[b] === mmId) this.mmCount1[b] += diff;
    else if (this.mmId0[b] === MM_ID_NONE) {
      this.mmId0[b] = mmId;
      this.mmCount0[b] = diff;
      if (before !== 0) this.maybeShared[b] = 1;
    } else if (this.mmId1[b] === MM_ID_NONE) {
      this.mmId1[b] = mmId;
      this.mmCount1[b] = diff;
      this.maybeShared[b] = 1;
    } else {
      this.maybeShared[b] = 1; // a third mm: the kernel can only say "maybe shared"
    }
  }

  /** Account `diff` removed mappings of the large folio of block `b` by mm `mmId`. */
  removeLargeMapping(b: number, mmId: number, diff: number): void {
    const after = this.largeMapcount[b] - diff;
    this.largeMapcount[b] = after;
    if (this.mmId0[b] === mmId) {
      this.mmCount0[b] -= diff;
      if (this.mmCount0[b] <= 0) {
        this.mmCount0[b] = 0;
        this.mmId0[b] = MM_ID_NONE;
      }
    } else if (this.mmId1[b] === mmId) {
      this.mmCount1[b] -= diff;
      if (this.mmCount1[b] <= 0) {
        this.mmCount1[b] = 0;
        this.mmId1[b] = MM_ID_NONE;
      }
    }
    // One slot owning every mapping means the folio is mapped exclusively again.
    if (
      (this.mmId0[b] !== MM_ID_NONE && this.mmCount0[b] === after) ||
      (this.mmId1[b] !== MM_ID_NONE && this.mmCount1[b] === after) ||
      after === 0
    ) {
      this.maybeShared[b] = 0;
    }
    if (after > 0 && this.entireMapcount[b] === 0) this.deferredSplit.add(b * HPAGE_PMD_NR);
  }

  /** True if the large folio of block `b` is mapped only by `mmId` and has no extra references. */
  largeFolioExclusiveTo(b: number, mmId: number): boolean {
    if (this.maybeShared[b]) return false;
    if (this.largeMapcount[b] !== this.refcount[b * HPAGE_PMD_NR]) return false;
    return this.mmId0[b] === mmId || this.mmId1[b] === mmId;
  }

  // ---- splitting ----------------------------------------------------------------------------

  /**
   * Split the large folio headed by `head` into 512 small folios, as split_huge_page does. Only a
   * folio that no PMD maps and that holds no references beyond its mappings can be split; the
   * pages no one maps are freed. Returns false if the folio cannot be split.
   */
  splitLarge(head: number): boolean {
    const b = (head / HPAGE_PMD_NR) | 0;
    if (!(this.flags[head] & FRAME_LARGE)) return true;
    if (this.entireMapcount[b] !== 0) return false;
    if (this.refcount[head] !== this.largeMapcount[b]) return false;
    this.deferredSplit.delete(head);
    this.blockFree[b] = 0;
    // Subpages inherit the folio's dirty and lazyfree state (__split_folio_to_order copies them).
    const keep = this.flags[head] & (FRAME_ANON | FRAME_SHMEM | FRAME_LAZYFREE | FRAME_DIRTY);
    for (let i = 0; i < HPAGE_PMD_NR; i++) {
      const pfn = head + i;
      const excl = this.flags[pfn] & FRAME_ANON_EXCLUSIVE;
      this.flags[pfn] = keep | excl;
      this.refcount[pfn] = this.mapcount[pfn];
    }
    this.largeMapcount[b] = 0;
    for (let i = 0; i < HPAGE_PMD_NR; i++) {
      // Subpages no one maps go back to the free list.
      if (this.refcount[head + i] === 0) this.freeSmall(head + i);
    }
    return true;
  }

  /**
   * Split the large folio headed by `head`, which nothing maps any more (its PMD was replaced by a
   * migration entry), into 512 small folios for a migration that moves its pages one by one
   * (migrate_vma_split_unmapped_folio). Every reference on the folio becomes one on each page.
   */
  splitUnmappedLarge(head: number): void {
    const b = (head / HPAGE_PMD_NR) | 0;
    if (!(this.flags[head] & FRAME_LARGE)) return;
    if (this.entireMapcount[b] !== 0 || this.largeMapcount[b] !== 0) {
      throw new MmError("EINVAL", `splitUnmappedLarge: folio ${head} is still mapped`, "FRAME_STATE");
    }
    this.deferredSplit.delete(head);
    this.blockFree[b] = 0;
    const refs = this.refcount[head];
    for (let i = 0; i < HPAGE_PMD_NR; i++) {
      const pfn = head + i;
      this.flags[pfn] &= ~FRAME_LARGE;
      this.refcount[pfn] = refs;
      this.mapcount[pfn] = 0;
    }
  }

  /** Run the deferred split queue (the kernel's shrinker under memory pressure). True if anything was freed. */
  shrinkDeferredSplit(): boolean {
    const before = this.freeFrameCount;
    for (const head of [...this.deferredSplit]) {
      if (!(this.flags[head] & FRAME_LARGE)) {
        this.deferredSplit.delete(head);
        continue;
      }
      this.splitLarge(head);
    }
    return this.freeFrameCount > before;
  }

  /** Throw if `pfn` is not an allocated frame (internal consistency check for callers' input). */
  assertAllocated(pfn: number, what: string): void {
    if (!Number.isInteger(pfn) || pfn < 0 || pfn >= this.nframes || this.flags[pfn] & FRAME_FREE) {
      throw new MmError("EINVAL", `${what}: frame ${pfn} is not an allocated frame`, "FRAME_STATE");
    }
  }
}
