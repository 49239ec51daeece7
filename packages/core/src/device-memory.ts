import { type ContentMode, ContentStore, HPAGE_PMD_NR, MmError } from "@hmmkit/mm";

const NONE = -1;
/** log2 of HPAGE_PMD_NR: frame number to block number. */
const BLOCK_SHIFT = 9;

/**
 * A device's private memory (the ZONE_DEVICE pages of a dev_pagemap): `npages` 4 KiB device frames
 * grouped in blocks of 512 contiguous, 512-aligned frames, with a refcount per folio and the
 * frames' contents.
 *
 * A folio is either one frame (order 0, {@link alloc}) or a whole block (order 9, a device-private
 * THP, {@link allocHuge}). Its refcount lives at its head frame: one reference for the allocation,
 * one per CPU entry (PTE or PMD) that points into it, one per migration in flight; at zero the
 * folio is freed (dev_pagemap_ops.page_free / folio_free). Single frames come from a free list fed
 * by splitting whole free blocks; a block whose frames are all free again rejoins the free blocks
 * only when a huge allocation finds none (as the frame pool does), so base-page allocation order
 * is a plain LIFO. Both allocations are O(1); the lazy merge is one pass over the blocks.
 *
 * Eviction order is kept per folio: a list of folio heads, oldest allocation first, each with the
 * place it was last installed (address space and virtual address of the head).
 */
export class DeviceMemory {
  readonly content: ContentStore;
  /** Per frame: the folio's references, kept at its head frame (0 for the other frames of a block). */
  readonly refcount: Int32Array;
  /** Virtual address each folio head was installed at (for eviction and teardown). */
  readonly installedVa: Float64Array;
  /** Address space each folio head was installed in (0 = none). */
  readonly installedMm: Int32Array;
  /** Whole blocks (the frames past the last whole block can only be handed out one by one). */
  readonly nblocks: number;
  /** Per block: 1 while the block is one order-9 folio. */
  private readonly blockLarge: Uint8Array;
  /** Per block (plus one for the partial tail): free frames on the free list, or -1 while the block is whole and free. */
  private readonly blockFree: Int16Array;
  private readonly freeBlocks: Int32Array;
  private nFreeBlocks = 0;
  /** Blocks split into frames whose frames are all free again (merged back lazily). */
  private mergeable = 0;
  /** Free frames of split blocks: a doubly linked LIFO list. */
  private readonly freeNext: Int32Array;
  private readonly freePrev: Int32Array;
  private freeHead = NONE;
  private nfree: number;
  private hugeFolios = 0;
  /** Folios in use, linked oldest allocation first (eviction order), by head frame. */
  private readonly next: Int32Array;
  private readonly prev: Int32Array;
  private head = NONE;
  private tail = NONE;

  constructor(
    readonly npages: number,
    mode: ContentMode,
  ) {
    if (!Number.isInteger(npages) || npages < 1)
      throw new MmError("EINVAL", `device memory needs at least one page, got ${npages}`);
    this.content = new ContentStore(mode, npages);
    this.refcount = new Int32Array(npages);
    this.installedVa = new Float64Array(npages);
    this.installedMm = new Int32Array(npages);
    this.nblocks = Math.floor(npages / HPAGE_PMD_NR);
    const nb = this.nblocks + 1;
    this.blockLarge = new Uint8Array(nb);
    this.blockFree = new Int16Array(nb).fill(-1);
    this.freeBlocks = new Int32Array(nb);
    // Lowest block first; the partial tail (if any) is handed out after every whole block.
    const tail = npages - this.nblocks * HPAGE_PMD_NR;
    if (tail > 0) this.freeBlocks[this.nFreeBlocks++] = this.nblocks;
    for (let b = this.nblocks - 1; b >= 0; b--) this.freeBlocks[this.nFreeBlocks++] = b;
    this.freeNext = new Int32Array(npages).fill(NONE);
    this.freePrev = new Int32Array(npages).fill(NONE);
    this.nfree = npages;
    this.next = new Int32Array(npages).fill(NONE);
    this.prev = new Int32Array(npages).fill(NONE);
  }

  /** Frames in use. */
  get used(): number {
    return this.npages - this.nfree;
  }

  /** Frames free. */
  get free(): number {
    return this.nfree;
  }

  /** Order-9 folios (device-private THPs) allocated now. */
  get hugeInUse(): number {
    return this.hugeFolios;
  }

  /** Whole blocks free for {@link allocHuge} now, not counting blocks a merge could reassemble. */
  get freeBlockCount(): number {
    // The partial tail sits at the bottom of the same stack until it is split, but can never be a
    // huge folio.
    return this.nFreeBlocks > 0 && this.freeBlocks[0] === this.nblocks
      ? this.nFreeBlocks - 1
      : this.nFreeBlocks;
  }

  /** Head frame of the folio that contains `dpfn`. */
  folioHead(dpfn: number): number {
    return this.blockLarge[dpfn >> BLOCK_SHIFT] ? dpfn - (dpfn % HPAGE_PMD_NR) : dpfn;
  }

  /** True if `dpfn` is part of an order-9 folio. */
  isHuge(dpfn: number): boolean {
    return this.blockLarge[dpfn >> BLOCK_SHIFT] === 1;
  }

  /** References held on the folio of `dpfn`. */
  folioRefs(dpfn: number): number {
    return this.refcount[this.folioHead(dpfn)];
  }

  // ---- allocation -----------------------------------------------------------------------------

  private pushFree(d: number): void {
    this.freePrev[d] = NONE;
    this.freeNext[d] = this.freeHead;
    if (this.freeHead !== NONE) this.freePrev[this.freeHead] = d;
    this.freeHead = d;
  }

  private unlinkFree(d: number): void {
    const p = this.freePrev[d];
    const n = this.freeNext[d];
    if (p === NONE) this.freeHead = n;
    else this.freeNext[p] = n;
    if (n !== NONE) this.freePrev[n] = p;
    this.freeNext[d] = NONE;
    this.freePrev[d] = NONE;
  }

  private blockFrames(b: number): number {
    return b === this.nblocks ? this.npages - b * HPAGE_PMD_NR : HPAGE_PMD_NR;
  }

  /** Turn the next free block into free frames; false if none is left. */
  private splitFreeBlock(): boolean {
    if (this.nFreeBlocks === 0) return false;
    const b = this.freeBlocks[--this.nFreeBlocks];
    const nr = this.blockFrames(b);
    this.blockFree[b] = nr;
    if (b !== this.nblocks) this.mergeable++;
    const base = b * HPAGE_PMD_NR;
    for (let i = nr - 1; i >= 0; i--) this.pushFree(base + i);
    return true;
  }

  /** Give split blocks whose frames are all free back to the huge allocator. True if any was. */
  private mergeFreeBlocks(): boolean {
    if (this.mergeable === 0) return false;
    for (let b = this.nblocks - 1; b >= 0; b--) {
      if (this.blockFree[b] !== HPAGE_PMD_NR) continue;
      const base = b * HPAGE_PMD_NR;
      for (let i = 0; i < HPAGE_PMD_NR; i++) this.unlinkFree(base + i);
      this.blockFree[b] = -1;
      this.freeBlocks[this.nFreeBlocks++] = b;
    }
    this.mergeable = 0;
    return true;
  }

  private lruAppend(h: number): void {
    this.installedMm[h] = 0;
    this.prev[h] = this.tail;
    this.next[h] = NONE;
    if (this.tail >= 0) this.next[this.tail] = h;
    else this.head = h;
    this.tail = h;
  }

  private lruUnlink(h: number): void {
    const p = this.prev[h];
    const n = this.next[h];
    if (p >= 0) this.next[p] = n;
    else this.head = n;
    if (n >= 0) this.prev[n] = p;
    else this.tail = p;
    this.prev[h] = NONE;
    this.next[h] = NONE;
  }

  /** Allocate a frame (an order-0 folio) with refcount 1, or -1 if none is free. */
  alloc(): number {
    if (this.freeHead === NONE && !this.splitFreeBlock()) return NONE;
    const d = this.freeHead;
    this.unlinkFree(d);
    const b = d >> BLOCK_SHIFT;
    if (this.blockFree[b]-- === HPAGE_PMD_NR && b !== this.nblocks) this.mergeable--;
    this.nfree--;
    this.refcount[d] = 1;
    this.lruAppend(d);
    return d;
  }

  /**
   * Allocate an order-9 folio (512 contiguous frames starting at a multiple of 512) with refcount
   * 1 and return its head, or -1 if no whole block is free even after merging (the caller falls
   * back to base pages, as the kernel test driver does).
   */
  allocHuge(): number {
    let b = this.popWholeBlock();
    if (b < 0 && this.mergeFreeBlocks()) b = this.popWholeBlock();
    if (b < 0) return NONE;
    this.blockFree[b] = 0;
    this.blockLarge[b] = 1;
    this.hugeFolios++;
    const h = b * HPAGE_PMD_NR;
    this.refcount[h] = 1;
    this.nfree -= HPAGE_PMD_NR;
    this.lruAppend(h);
    return h;
  }

  /** Pop a whole free block (never the partial tail), or -1. */
  private popWholeBlock(): number {
    for (let i = this.nFreeBlocks - 1; i >= 0; i--) {
      const b = this.freeBlocks[i];
      if (b === this.nblocks) continue;
      // The tail can only sit at the bottom of the stack, so this is the top or just above it.
      this.freeBlocks[i] = this.freeBlocks[--this.nFreeBlocks];
      return b;
    }
    return NONE;
  }

  // ---- references -----------------------------------------------------------------------------

  /** Take `nr` references on the folio of `dpfn`. */
  get(dpfn: number, nr = 1): void {
    const h = this.folioHead(dpfn);
    if (this.refcount[h] <= 0) throw new MmError("EINVAL", `device frame ${dpfn} is free`, "FRAME_STATE");
    this.refcount[h] += nr;
  }

  /** Drop a reference on the folio of `dpfn`; the folio is freed at zero. */
  put(dpfn: number): void {
    const h = this.folioHead(dpfn);
    const r = --this.refcount[h];
    if (r > 0) return;
    if (r < 0) throw new MmError("EINVAL", `device frame ${dpfn} refcount went negative`, "FRAME_STATE");
    this.installedMm[h] = 0;
    this.lruUnlink(h);
    const b = h >> BLOCK_SHIFT;
    if (this.blockLarge[b]) {
      this.blockLarge[b] = 0;
      this.hugeFolios--;
      this.blockFree[b] = -1;
      this.freeBlocks[this.nFreeBlocks++] = b;
      this.nfree += HPAGE_PMD_NR;
      return;
    }
    this.pushFree(h);
    this.nfree++;
    if (++this.blockFree[b] === HPAGE_PMD_NR && b !== this.nblocks) this.mergeable++;
  }

  /**
   * Split the order-9 folio of `dpfn` into 512 order-0 folios (dev_pagemap_ops.folio_split). Each
   * holder of a reference on the folio then holds one on every frame, so this is only done where
   * that is what the holder needs: a sole PMD mapping that becomes 512 PTEs, or a migration that
   * moves the pages one by one. The new folios take the head's place in the eviction order.
   * Returns false (and changes nothing) if the folio has more than one reference.
   */
  splitFolio(dpfn: number): boolean {
    const b = dpfn >> BLOCK_SHIFT;
    if (!this.blockLarge[b]) return true;
    const h = b * HPAGE_PMD_NR;
    if (this.refcount[h] !== 1) return false;
    this.blockLarge[b] = 0;
    this.hugeFolios--;
    const mmId = this.installedMm[h];
    const va = this.installedVa[h];
    const after = this.next[h];
    let prev = h;
    for (let i = 1; i < HPAGE_PMD_NR; i++) {
      const d = h + i;
      this.refcount[d] = 1;
      this.installedMm[d] = mmId;
      this.installedVa[d] = va + i * 4096;
      this.prev[d] = prev;
      this.next[prev] = d;
      prev = d;
    }
    this.next[prev] = after;
    if (after >= 0) this.prev[after] = prev;
    else this.tail = prev;
    return true;
  }

  /** Record where the folio of `dpfn` was installed (`va` is its head's address). */
  noteInstalled(dpfn: number, mmId: number, va: number): void {
    const h = this.folioHead(dpfn);
    this.installedMm[h] = mmId;
    this.installedVa[h] = va;
  }

  /** Up to `max` installed folios (their head frames), oldest allocation first (eviction candidates). */
  oldestInUse(max: number): number[] {
    const out: number[] = [];
    for (let d = this.head; d >= 0 && out.length < max; d = this.next[d]) {
      if (this.installedMm[d] !== 0) out.push(d);
    }
    return out;
  }
}
