/**
 * The GPU's own page table: per 2 MiB VA block of an address space, either one 2 MiB entry or a
 * leaf of 512 4 KiB entries, all in typed arrays (no object or Map per page or per block).
 *
 * Layout (kdbush style: named strides, one Int32Array per kind of record):
 * - block records (block-directory.ts), `BLOCK_STRIDE` Int32 each: the key (mm id, VA block
 *   index), the hash chain link, the block's entry (> 0: a 2 MiB entry in the pte-encoding;
 *   < 0: -(leaf + 1); 0: none), the block's remote-access count (the access counters) and its
 *   residency record (+1, 0: none), found through a chained hash directory;
 * - leaves: 512 4 KiB entries each, as two arrays: the frame of each page (Int32) and its HMM_PFN_*
 *   flags as the core reported them, low byte (VALID, WRITE, DEVICE_PRIVATE, EXCLUSIVE; 0: no
 *   entry), so mirroring a run of pages is two typed copies; recycled through a free stack (no per-leaf
 *   count: an invalidation that clears part of a leaf looks for a surviving entry instead).
 *
 * Two one-entry caches keep the hot paths off the hash: the translation cache (the block the
 * device's last access hit) and the mirror cache (the leaf the last mirrorPte wrote). Any change
 * of a block's entry word resets both, so neither ever points at a stale leaf.
 */
import { HMM_PFN_DEVICE_PRIVATE, HMM_PFN_WRITE, TRANSLATE_MISS } from "@hmmkit/core";
import { B_ACCESS, B_AUX, B_ENTRY, B_MM, B_VB, BLOCK_STRIDE, BlockDirectory } from "./block-directory.js";
import { encodePte, PTE_DEVICE, PTE_PFN_MUL, PTE_WRITE, pteHmmFlags, ptePfn } from "./pte-encoding.js";
import type { Residency } from "./residency.js";

/** Bytes of one 2 MiB VA block. */
export const BLOCK_BYTES = 2 * 1024 * 1024;
/** 4 KiB pages per VA block. */
export const BLOCK_PAGES = 512;

/** Bytes of one leaf: 512 frames (Int32) and 512 flag bytes. */
export const LEAF_BYTES = BLOCK_PAGES * 5;

const NONE = -1;
/** Remote accesses a block counts up to (keeps the counters small integers). */
const COUNT_CAP = 2 ** 29;
const BLOCK_SIZE = BLOCK_BYTES;
const MISS = TRANSLATE_MISS;
// The HMM_PFN_* flags translate reads in a leaf's flag byte.
const LEAF_WRITE = HMM_PFN_WRITE;
const LEAF_DEVICE = HMM_PFN_DEVICE_PRIVATE;

/** What the table holds for one page (see {@link DeviceTable.entryAt}). */
export interface PageEntryHolder {
  /** Encoded entry of the page (0: none); for a 2 MiB entry, already offset to the page's frame. */
  entry: number;
}

/** The device page table of one GPU (all address spaces it mirrors). */
export class DeviceTable {
  private readonly dir: BlockDirectory;
  /** The frame of each 4 KiB entry of each leaf. */
  private leaves: Int32Array;
  /** The flags of each 4 KiB entry (HMM_PFN_* low byte), 0 for none. */
  private leafFlags: Uint8Array;
  private leafFree: Int32Array;
  private nLeafFree = 0;
  private leafTop = 0;
  /** Live leaves. */
  nLeaves = 0;
  /** Live 2 MiB entries. */
  nHuge = 0;

  // Translation cache (the device TLB's last block): its mm, first address and block index.
  private tMm = NONE;
  // First addresses are doubles from the start (-Infinity: no block), never a small integer the
  // first load turns into a double (V8 would change the object's shape, and deoptimize the
  // loops that inlined translate).
  private tLo = Number.NEGATIVE_INFINITY;
  private tBlock = NONE;
  private tEnt = 0;
  private tBase = 0;
  private tBudget = COUNT_CAP;
  private tLimit = COUNT_CAP;
  // Mirror cache (the leaf the last mirrorPte wrote): its mm, first address and block index.
  private mMm = NONE;
  private mLo = Number.NEGATIVE_INFINITY;
  private mBase = 0;

  /** Remote accesses after which a block asks to migrate (0: never, no access-counter policy). */
  private notifyAt = 0;
  /** Whether translate counts remote accesses (only an access-counter policy reads them). */
  private counting = false;
  /** Blocks whose access count reached `notifyAt` since the fault path last looked. */
  notified = 0;

  constructor(
    private readonly residency: Residency,
    /** Called when the live bytes change (a block, leaf or 2 MiB entry comes or goes). */
    private readonly bytesChanged: () => void = () => {},
    initialBlocks = 64,
  ) {
    this.dir = new BlockDirectory(initialBlocks);
    this.leaves = new Int32Array(16 * BLOCK_PAGES);
    this.leafFlags = new Uint8Array(16 * BLOCK_PAGES);
    this.leafFree = new Int32Array(16);
  }

  /** Count remote accesses per block and miss once when a block reaches `threshold` (0: off). */
  setAccessThreshold(threshold: number): void {
    this.resetCaches();
    this.notifyAt = threshold;
    this.counting = threshold > 0;
  }

  // ---- bytes ----------------------------------------------------------------------------------

  /**
   * Bytes of the live table: block records, the hash directory and live leaves (not the spare
   * capacity of the growable arrays, see {@link capacityBytes}).
   */
  liveBytes(): number {
    return this.dir.liveBytes() + this.nLeaves * LEAF_BYTES;
  }

  /** Live block records. */
  get nBlocks(): number {
    return this.dir.count;
  }

  /** Bytes allocated for the table, spare capacity included. */
  capacityBytes(): number {
    return (
      this.dir.capacityBytes() + this.leaves.byteLength + this.leafFlags.byteLength + this.leafFree.byteLength
    );
  }

  // ---- block records ----------------------------------------------------------------------

  /** The block record of (mmId, vb), or -1. */
  find(mmId: number, vb: number): number {
    return this.dir.find(mmId, vb);
  }

  /** The block record of (mmId, vb), created empty if needed. */
  findOrCreate(mmId: number, vb: number): number {
    const found = this.dir.find(mmId, vb);
    if (found !== NONE) return found;
    const b = this.dir.create(mmId, vb);
    // A cached "no block here" would now be stale.
    this.resetCaches();
    this.bytesChanged();
    return b;
  }

  /** Free block record `b` (its entry and residency record must be gone). */
  private freeBlockRecord(b: number): void {
    this.dir.free(b);
    this.resetCaches();
    this.bytesChanged();
  }

  /** Free `b` if it holds nothing (no entry, no residency record). */
  private maybeFree(b: number): void {
    const o = b * BLOCK_STRIDE;
    if (this.dir.blk[o + B_ENTRY] === 0 && this.dir.blk[o + B_AUX] === 0) this.freeBlockRecord(b);
  }

  // ---- leaves ---------------------------------------------------------------------------------

  private allocLeaf(): number {
    this.nLeaves++;
    this.bytesChanged();
    if (this.nLeafFree > 0) return this.leafFree[--this.nLeafFree];
    if (this.leafTop === this.leafFree.length) {
      const n = this.leafFree.length * 2;
      const l = new Int32Array(n * BLOCK_PAGES);
      l.set(this.leaves);
      this.leaves = l;
      const lf = new Uint8Array(n * BLOCK_PAGES);
      lf.set(this.leafFlags);
      this.leafFlags = lf;
      const f = new Int32Array(n);
      f.set(this.leafFree);
      this.leafFree = f;
    }
    return this.leafTop++;
  }

  /** Whether the leaf at entry offset `p` holds no entry. */
  private leafEmpty(p: number): boolean {
    const flags = this.leafFlags;
    for (let i = p; i < p + BLOCK_PAGES; i++) if (flags[i] !== 0) return false;
    return true;
  }

  private freeLeaf(leaf: number): void {
    this.leaves.fill(0, leaf * BLOCK_PAGES, leaf * BLOCK_PAGES + BLOCK_PAGES);
    this.leafFlags.fill(0, leaf * BLOCK_PAGES, leaf * BLOCK_PAGES + BLOCK_PAGES);
    this.leafFree[this.nLeafFree++] = leaf;
    this.nLeaves--;
    this.bytesChanged();
  }

  /** Give block `b` a leaf (splitting its 2 MiB entry into 512 equal 4 KiB entries); returns the leaf. */
  private leafOf(b: number): number {
    const o = b * BLOCK_STRIDE;
    const ent = this.dir.blk[o + B_ENTRY];
    if (ent < 0) return -1 - ent;
    this.flushCount();
    const leaf = this.allocLeaf();
    if (ent > 0) {
      // Consecutive frames, the 2 MiB entry's flags on every page.
      const base = leaf * BLOCK_PAGES;
      const pfn = ptePfn(ent);
      for (let i = 0; i < BLOCK_PAGES; i++) this.leaves[base + i] = pfn + i;
      this.leafFlags.fill(pteHmmFlags(ent), base, base + BLOCK_PAGES);
      this.nHuge--;
      this.splits++;
    }
    this.dir.blk[o + B_ENTRY] = -1 - leaf;
    this.resetCaches();
    return leaf;
  }

  /** 2 MiB entries split into leaves (a partial invalidation or a 4 KiB entry inside one). */
  splits = 0;
  /** Block records invalidations looked at (looked up or scanned): what their cost is bounded by. */
  blocksVisited = 0;

  // ---- caches ---------------------------------------------------------------------------------

  /** Write the cached block's access count back. */
  flushCount(): void {
    const b = this.tBlock;
    if (b !== NONE) this.dir.blk[b * BLOCK_STRIDE + B_ACCESS] = this.tLimit - this.tBudget;
  }

  /** Write the cached access count back and empty both caches (the fault path calls it first). */
  resetCaches(): void {
    this.flushCount();
    this.tMm = NONE;
    this.tLo = Number.NEGATIVE_INFINITY;
    this.tBlock = NONE;
    this.tEnt = 0;
    this.mMm = NONE;
    this.mLo = Number.NEGATIVE_INFINITY;
  }

  // ---- the hot paths --------------------------------------------------------------------------

  /**
   * The device's translation of page `va` of `mmId` (see HmmDriver.translate): a system pfn, a
   * device frame result, or TRANSLATE_MISS. Counts remote accesses per block; with an access
   * threshold set, the access that reaches it misses once (the access-counter notification).
   */
  translate(mmId: number, va: number, write: boolean): number {
    // The hit path: the page is in the cached block when its offset from the block's first
    // address is in [0, 2 MiB) (one subtract and two compares, no division).
    let off = va - this.tLo;
    if (off < 0 || off >= BLOCK_SIZE || mmId !== this.tMm) {
      this.loadTranslation(mmId, Math.floor(va / BLOCK_SIZE));
      off = va - this.tLo;
    }
    const ent = this.tEnt;
    let pfn: number;
    if (ent < 0) {
      // A leaf: the page's flags, then its frame.
      const p = this.tBase + (off >>> 12);
      const f = this.leafFlags[p];
      if (f === 0) return MISS;
      if (write && (f & LEAF_WRITE) === 0) return MISS;
      pfn = this.leaves[p];
      if ((f & LEAF_DEVICE) !== 0) return -2 - pfn;
    } else {
      // A 2 MiB entry (pte-encoding.ts).
      if (ent === 0) return MISS;
      if (write && (ent & PTE_WRITE) === 0) return MISS;
      pfn = (ent >>> 4) + (off >>> 12);
      if ((ent & PTE_DEVICE) !== 0) return -2 - pfn;
    }
    // Remote accesses are counted only for the access-counter policy (a load and a branch
    // otherwise, no store per access).
    if (this.counting && --this.tBudget === 0) return this.accessReached(pfn);
    return pfn;
  }

  /** Translation-cache miss: load block (mmId, vb) into the cache. */
  private loadTranslation(mmId: number, vb: number): void {
    this.flushCount();
    const b = this.find(mmId, vb);
    this.tMm = mmId;
    this.tLo = vb * BLOCK_SIZE;
    this.tBlock = b;
    if (b === NONE) {
      this.tEnt = 0;
      return;
    }
    const o = b * BLOCK_STRIDE;
    const ent = this.dir.blk[o + B_ENTRY];
    this.tEnt = ent;
    this.tBase = ent < 0 ? (-1 - ent) * BLOCK_PAGES : 0;
    const count = this.dir.blk[o + B_ACCESS];
    this.tLimit = this.notifyAt > count ? this.notifyAt : Math.min(count, COUNT_CAP) + COUNT_CAP;
    this.tBudget = this.tLimit - count;
    const aux = this.dir.blk[o + B_AUX];
    if (aux !== 0) this.residency.touch(aux - 1);
  }

  /**
   * The cached block's remote accesses reached its limit: the access-counter threshold (miss once,
   * so the fault path migrates the block), or the counter cap (keep counting from the cap).
   */
  private accessReached(pfn: number): number {
    const b = this.tBlock;
    const o = b * BLOCK_STRIDE;
    const count = this.tLimit;
    this.dir.blk[o + B_ACCESS] = Math.min(count, COUNT_CAP);
    this.tLimit = Math.min(count, COUNT_CAP) + COUNT_CAP;
    this.tBudget = this.tLimit - this.dir.blk[o + B_ACCESS];
    if (count === this.notifyAt) {
      this.notified++;
      return MISS;
    }
    return pfn;
  }

  /** Mirror one 4 KiB entry (HmmDriver.mirrorPte). */
  setPte(mmId: number, va: number, pfn: number, flags: number): void {
    let off = va - this.mLo;
    if (off < 0 || off >= BLOCK_SIZE || mmId !== this.mMm) {
      this.loadMirror(mmId, Math.floor(va / BLOCK_SIZE));
      off = va - this.mLo;
    }
    const pos = this.mBase + (off >>> 12);
    this.leaves[pos] = pfn;
    // The Uint8 store keeps the flags' low byte, where every HMM_PFN_* flag is (the order is above).
    this.leafFlags[pos] = flags;
  }

  /**
   * Mirror `count` consecutive 4 KiB entries from `va` (HmmDriver.mirrorPtes): the pages of one
   * CPU leaf table, so of one VA block; the block's leaf is found once, then the frames and the
   * flags are two typed copies (native `set`, no loop per page here). A run that crosses a block
   * boundary (never from the core) goes page by page.
   */
  setPtes(mmId: number, va: number, count: number, pfns: Int32Array, flags: Int32Array): void {
    const off = va - Math.floor(va / BLOCK_SIZE) * BLOCK_SIZE;
    if (count <= 0) return;
    if (off + count * 4096 > BLOCK_SIZE) {
      for (let i = 0; i < count; i++) this.setPte(mmId, va + i * 4096, pfns[i], flags[i]);
      return;
    }
    if (mmId !== this.mMm || va - off !== this.mLo) this.loadMirror(mmId, (va - off) / BLOCK_SIZE);
    const first = (this.mBase + off / 4096) | 0;
    this.leaves.set(count === pfns.length ? pfns : pfns.subarray(0, count), first);
    // Int32 to Uint8: each flag word's low byte, as setPte stores it.
    this.leafFlags.set(count === flags.length ? flags : flags.subarray(0, count), first);
  }

  /** Mirror-cache miss: find or make the leaf of (mmId, vb). */
  private loadMirror(mmId: number, vb: number): void {
    const b = this.findOrCreate(mmId, vb);
    const leaf = this.leafOf(b);
    this.mMm = mmId;
    this.mLo = vb * BLOCK_SIZE;
    this.mBase = leaf * BLOCK_PAGES;
  }

  /** Mirror one 2 MiB entry (HmmDriver.mirrorPmd): `va` is 2 MiB aligned. */
  setPmd(mmId: number, va: number, pfn: number, flags: number): void {
    const b = this.findOrCreate(mmId, (va / BLOCK_SIZE) | 0);
    this.flushCount();
    const o = b * BLOCK_STRIDE;
    const ent = this.dir.blk[o + B_ENTRY];
    if (ent < 0) this.freeLeaf(-1 - ent);
    else if (ent > 0) this.nHuge--;
    this.dir.blk[o + B_ENTRY] = encodePte(pfn, flags);
    this.nHuge++;
    this.resetCaches();
  }

  // ---- invalidation ---------------------------------------------------------------------------

  /**
   * Drop every entry of [start, end) in `mmId`; returns the 4 KiB pages dropped. Clipped to what
   * is held: the range's blocks are looked up one by one when there are fewer of them than live
   * blocks, otherwise the live blocks are scanned (a RELEASE over all of user space costs the
   * blocks held, never the range's 2^35 pages). A 2 MiB entry partly covered is split and only
   * the covered pages are cleared.
   */
  invalidate(mmId: number, start: number, end: number): number {
    if (end <= start || this.nBlocks === 0) return 0;
    this.resetCaches();
    const vb0 = Math.floor(start / BLOCK_SIZE);
    const vb1 = Math.ceil(end / BLOCK_SIZE);
    let dropped = 0;
    if (vb1 - vb0 <= this.nBlocks) {
      this.blocksVisited += vb1 - vb0;
      for (let vb = vb0; vb < vb1; vb++) {
        const b = this.find(mmId, vb);
        if (b !== NONE) dropped += this.dropInBlock(b, vb, start, end);
      }
    } else {
      const blk = this.dir.blk;
      this.blocksVisited += this.dir.top;
      for (let b = 0; b < this.dir.top; b++) {
        const o = b * BLOCK_STRIDE;
        if (blk[o + B_MM] !== mmId) continue;
        const vb = blk[o + B_VB];
        if (vb >= vb0 && vb < vb1) dropped += this.dropInBlock(b, vb, start, end);
      }
    }
    return dropped;
  }

  /** Clear the part of block `b` (VA block `vb`) inside [start, end); returns the pages dropped. */
  private dropInBlock(b: number, vb: number, start: number, end: number): number {
    const o = b * BLOCK_STRIDE;
    const ent = this.dir.blk[o + B_ENTRY];
    if (ent === 0) return 0;
    const base = vb * BLOCK_SIZE;
    const lo = start <= base ? 0 : Math.floor((start - base) / 4096);
    const hi = end >= base + BLOCK_SIZE ? BLOCK_PAGES : Math.ceil((end - base) / 4096);
    if (lo >= hi) return 0;
    let dropped = 0;
    if (ent > 0 && lo === 0 && hi === BLOCK_PAGES) {
      this.dir.blk[o + B_ENTRY] = 0;
      this.nHuge--;
      dropped = BLOCK_PAGES;
    } else if (ent < 0 && lo === 0 && hi === BLOCK_PAGES) {
      // The whole leaf goes: count its entries, then free it (two fills).
      const leaf = -1 - ent;
      const flags = this.leafFlags;
      for (let i = leaf * BLOCK_PAGES, e = i + BLOCK_PAGES; i < e; i++) if (flags[i] !== 0) dropped++;
      this.freeLeaf(leaf);
      this.dir.blk[o + B_ENTRY] = 0;
    } else {
      const leaf = this.leafOf(b);
      const flags = this.leafFlags;
      const p = leaf * BLOCK_PAGES;
      for (let i = lo; i < hi; i++) {
        if (flags[p + i] !== 0) {
          flags[p + i] = 0;
          this.leaves[p + i] = 0;
          dropped++;
        }
      }
      // A leaf keeps no count (mirrorPte stays a single store): look for a survivor instead.
      if (dropped > 0 && this.leafEmpty(p)) {
        this.freeLeaf(leaf);
        this.dir.blk[o + B_ENTRY] = 0;
      }
    }
    this.resetCaches();
    this.maybeFree(b);
    return dropped;
  }

  /**
   * Drop every entry of `mmId` (unbind, exit); returns the pages dropped. With `onAux`, the blocks'
   * residency records go too (handed to it) and the blocks are forgotten.
   */
  dropMm(mmId: number, onAux: ((aux: number) => void) | null): number {
    this.resetCaches();
    let dropped = 0;
    const blk = this.dir.blk;
    for (let b = 0; b < this.dir.top; b++) {
      const o = b * BLOCK_STRIDE;
      if (blk[o + B_MM] !== mmId) continue;
      dropped += this.dropInBlock(b, blk[o + B_VB], 0, 2 ** 48);
      if (blk[o + B_MM] === NONE) continue;
      const aux = blk[o + B_AUX];
      if (aux !== 0 && onAux !== null) {
        blk[o + B_AUX] = 0;
        onAux(aux - 1);
      }
      this.maybeFree(b);
    }
    return dropped;
  }

  // ---- inspection and the fault path ----------------------------------------------------------

  /** The encoded entry of page `va` (offset to the page's frame for a 2 MiB entry), 0 for none. */
  entryAt(mmId: number, va: number): number {
    const vb = Math.floor(va / BLOCK_SIZE);
    const b = this.find(mmId, vb);
    if (b === NONE) return 0;
    const ent = this.dir.blk[b * BLOCK_STRIDE + B_ENTRY];
    const i = Math.floor((va - vb * BLOCK_SIZE) / 4096);
    if (ent < 0) return this.leafEntry((-1 - ent) * BLOCK_PAGES + i);
    return ent === 0 ? 0 : ent + i * PTE_PFN_MUL;
  }

  /** The 4 KiB entry at leaf offset `p`, encoded as a 2 MiB one is (pte-encoding.ts), 0 for none. */
  private leafEntry(p: number): number {
    const f = this.leafFlags[p];
    return f === 0 ? 0 : encodePte(this.leaves[p], f);
  }

  /** Whether block (mmId, vb) is one 2 MiB entry. */
  isHuge(mmId: number, vb: number): boolean {
    const b = this.find(mmId, vb);
    return b !== NONE && this.dir.blk[b * BLOCK_STRIDE + B_ENTRY] > 0;
  }

  /** Fill `out[0..511]` with the encoded entries of block (mmId, vb) (0 where none). */
  blockEntriesInto(mmId: number, vb: number, out: Int32Array): void {
    out.fill(0, 0, BLOCK_PAGES);
    const b = this.find(mmId, vb);
    if (b === NONE) return;
    const ent = this.dir.blk[b * BLOCK_STRIDE + B_ENTRY];
    if (ent < 0) {
      const p = (-1 - ent) * BLOCK_PAGES;
      for (let i = 0; i < BLOCK_PAGES; i++) out[i] = this.leafEntry(p + i);
    } else if (ent > 0) for (let i = 0; i < BLOCK_PAGES; i++) out[i] = ent + i * PTE_PFN_MUL;
  }

  /** The remote accesses counted for block (mmId, vb). */
  accessCount(mmId: number, vb: number): number {
    this.flushCount();
    const b = this.find(mmId, vb);
    return b === NONE ? 0 : this.dir.blk[b * BLOCK_STRIDE + B_ACCESS];
  }

  /** Reset block (mmId, vb)'s access count (it migrated). */
  resetAccessCount(mmId: number, vb: number): void {
    const b = this.find(mmId, vb);
    if (b === NONE) return;
    this.resetCaches();
    this.dir.blk[b * BLOCK_STRIDE + B_ACCESS] = 0;
  }

  /** The residency record of block (mmId, vb), or -1. */
  auxOf(mmId: number, vb: number): number {
    const b = this.find(mmId, vb);
    return b === NONE ? NONE : this.dir.blk[b * BLOCK_STRIDE + B_AUX] - 1;
  }

  /** Attach residency record `aux` to block (mmId, vb) (created if needed); returns the block record. */
  setAux(mmId: number, vb: number, aux: number): number {
    const b = this.findOrCreate(mmId, vb);
    this.dir.blk[b * BLOCK_STRIDE + B_AUX] = aux + 1;
    return b;
  }

  /** Detach the residency record of block record `b` (freeing the block if it holds nothing else). */
  clearAux(b: number): void {
    this.dir.blk[b * BLOCK_STRIDE + B_AUX] = 0;
    this.maybeFree(b);
  }

  /** The key of block record `b`: its mm id and VA block index. */
  keyOf(b: number): { mmId: number; vb: number } {
    return { mmId: this.dir.blk[b * BLOCK_STRIDE + B_MM], vb: this.dir.blk[b * BLOCK_STRIDE + B_VB] };
  }

  /**
   * Every entry, for `translations()`: calls `visit(mmId, va, entry, order)` per 2 MiB entry
   * (order 9) and per valid 4 KiB entry (order 0).
   */
  forEachEntry(visit: (mmId: number, va: number, entry: number, order: number) => void): void {
    const blk = this.dir.blk;
    for (let b = 0; b < this.dir.top; b++) {
      const o = b * BLOCK_STRIDE;
      const mm = blk[o + B_MM];
      if (mm === NONE) continue;
      const ent = blk[o + B_ENTRY];
      const base = blk[o + B_VB] * BLOCK_SIZE;
      if (ent > 0) visit(mm, base, ent, 9);
      else if (ent < 0) {
        const p = (-1 - ent) * BLOCK_PAGES;
        for (let i = 0; i < BLOCK_PAGES; i++) {
          const e = this.leafEntry(p + i);
          if (e !== 0) visit(mm, base + i * 4096, e, 0);
        }
      }
    }
  }

  /** Forget everything (device release). */
  clear(): void {
    this.tBlock = NONE;
    this.dir.clear();
    this.leaves.fill(0);
    this.leafFlags.fill(0);
    this.nLeafFree = 0;
    this.leafTop = 0;
    this.nLeaves = 0;
    this.nHuge = 0;
    this.resetCaches();
  }
}
