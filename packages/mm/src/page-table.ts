import { PTRS_PER_TABLE } from "./constants.js";
import { ENTRY_KIND_MASK, ENTRY_NONE } from "./entry.js";

/** VA span of one entry at each level: PTE 4 KiB, PMD 2 MiB, PUD 1 GiB, PGD 512 GiB. */
const PTE_SPAN = 2 ** 12;
const PMD_SPAN = 2 ** 21;
const PUD_SPAN = 2 ** 30;
const PGD_SPAN = 2 ** 39;
const N = PTRS_PER_TABLE;
const MASK = N - 1;
/** Index bits per level: a 2 MiB frame number `f = floor(va / PMD_SPAN)` (below 2^26, an int) holds
 * the PMD index in bits 0-8, the PUD index in bits 9-17 and the PGD index in bits 18-26. */
const LEVEL_SHIFT = 9;

/** A growable pool of fixed-size tables numbered 0.. with a free-id stack. */
class TablePool {
  capacity: number;
  count = 0;
  private freeIds: number[] = [];
  constructor(initial: number) {
    this.capacity = initial;
  }
  /** Returns a fresh id and whether the pool had to grow. */
  alloc(): number {
    const id = this.freeIds.pop();
    if (id !== undefined) return id;
    return this.count++;
  }
  free(id: number): void {
    this.freeIds.push(id);
  }
  get live(): number {
    return this.count - this.freeIds.length;
  }
}

function grown<T extends Int32Array | Int16Array>(a: T, entries: number): T {
  if (a.length >= entries) return a;
  let len = a.length;
  while (len < entries) len *= 2;
  const b = new (a.constructor as { new (n: number): T })(len);
  b.set(a);
  return b;
}

/**
 * The CPU page table of one address space: a 4-level radix tree (PGD → PUD → PMD → PTE) with 512
 * entries per level, stored in typed arrays. Upper levels hold child table id + 1 (0 = none). A
 * PMD slot holds either a leaf (PTE) table, or a huge entry (pfn + flags, see entry.ts), or
 * nothing. Leaf tables are allocated lazily and freed as soon as their last entry is cleared
 * (with CONFIG_PT_RECLAIM the kernel frees empty PTE tables after MADV_DONTNEED as well as on
 * munmap); empty PMD and PUD tables are freed the same way.
 *
 * Positions: `pmdSlot` = pmdTableId * 512 + index (into pmdChild/pmdPfn/pmdFlags);
 * `ptePos` = leafId * 512 + index (into ptePfn/pteFlags). The arrays may be replaced when a
 * pool grows, so read them from this object again after anything that can allocate a table.
 */
export class PageTable {
  readonly pgd = new Int32Array(N);
  private pgdUsed = 0;
  pud = new Int32Array(N * 4);
  pudUsed = new Int16Array(4);
  pmdChild = new Int32Array(N * 4);
  pmdPfn = new Int32Array(N * 4);
  pmdFlags = new Int32Array(N * 4);
  pmdUsed = new Int16Array(4);
  ptePfn = new Int32Array(N * 16);
  pteFlags = new Int32Array(N * 16);
  /** Per leaf table: non-none entries. */
  leafUsed = new Int16Array(16);
  /** Per leaf table: the PMD slot that points to it. */
  leafParent = new Int32Array(16);
  /** Per PMD table: the PUD slot that points to it. */
  private pmdParent = new Int32Array(4);
  /** Per PUD table: the PGD index that points to it. */
  private pudParent = new Int32Array(4);
  private readonly pudPool = new TablePool(4);
  private readonly pmdPool = new TablePool(4);
  private readonly leafPool = new TablePool(16);

  /** Page-table pages currently allocated below the PGD (PUD + PMD + PTE tables). */
  get tablePages(): number {
    return this.pudPool.live + this.pmdPool.live + this.leafPool.live;
  }

  /** Leaf (PTE) tables currently allocated. */
  get leafTables(): number {
    return this.leafPool.live;
  }

  // ---- lookup ---------------------------------------------------------------------------------

  /**
   * The last PMD table looked up, by its 1 GiB frame number (`va / PUD_SPAN`; -1 for none): faults
   * and accesses come in runs through one PMD table, and this skips the PGD and PUD levels. Cleared
   * whenever a PMD table is freed, the only way a 1 GiB frame's PMD table can change.
   */
  private lastPudFrame = -1;
  private lastPmdId = 0;

  /** PMD slot for `va`, or -1 if the upper levels are not allocated. */
  pmdSlot(va: number): number {
    const f = Math.floor(va / PMD_SPAN);
    const g = f >>> LEVEL_SHIFT;
    if (g === this.lastPudFrame) return this.lastPmdId * N + (f & MASK);
    const pudId = this.pgd[(g >>> LEVEL_SHIFT) & MASK] - 1;
    if (pudId < 0) return -1;
    const pmdId = this.pud[pudId * N + (g & MASK)] - 1;
    if (pmdId < 0) return -1;
    this.lastPudFrame = g;
    this.lastPmdId = pmdId;
    return pmdId * N + (f & MASK);
  }

  /** Leaf table id under PMD slot `slot`, or -1 (none, or a huge entry). */
  leafAt(slot: number): number {
    return this.pmdChild[slot] - 1;
  }

  /** Position of the PTE for `va` in ptePfn/pteFlags, or -1 if no leaf table covers it. */
  ptePos(va: number): number {
    const slot = this.pmdSlot(va);
    if (slot < 0) return -1;
    const leaf = this.pmdChild[slot] - 1;
    if (leaf < 0) return -1;
    return leaf * N + (Math.floor(va / PTE_SPAN) & MASK);
  }

  // ---- allocation -----------------------------------------------------------------------------

  /** PMD slot for `va`, allocating PUD and PMD tables as needed. */
  pmdSlotAlloc(va: number): number {
    const slot = this.pmdSlot(va);
    return slot >= 0 ? slot : this.allocUpper(va);
  }

  /** The slow part of pmdSlotAlloc: allocate the PUD and PMD tables `va` lacks. */
  private allocUpper(va: number): number {
    const gi = Math.floor(va / PGD_SPAN) & MASK;
    let pudId = this.pgd[gi] - 1;
    if (pudId < 0) {
      pudId = this.pudPool.alloc();
      this.pud = grown(this.pud, (pudId + 1) * N);
      this.pudUsed = grown(this.pudUsed, pudId + 1);
      this.pudParent = grown(this.pudParent, pudId + 1);
      this.pud.fill(0, pudId * N, (pudId + 1) * N);
      this.pudUsed[pudId] = 0;
      this.pudParent[pudId] = gi;
      this.pgd[gi] = pudId + 1;
      this.pgdUsed++;
    }
    const ui = pudId * N + (Math.floor(va / PUD_SPAN) & MASK);
    let pmdId = this.pud[ui] - 1;
    if (pmdId < 0) {
      pmdId = this.pmdPool.alloc();
      const end = (pmdId + 1) * N;
      this.pmdChild = grown(this.pmdChild, end);
      this.pmdPfn = grown(this.pmdPfn, end);
      this.pmdFlags = grown(this.pmdFlags, end);
      this.pmdUsed = grown(this.pmdUsed, pmdId + 1);
      this.pmdParent = grown(this.pmdParent, pmdId + 1);
      this.pmdChild.fill(0, pmdId * N, end);
      this.pmdPfn.fill(0, pmdId * N, end);
      this.pmdFlags.fill(0, pmdId * N, end);
      this.pmdUsed[pmdId] = 0;
      this.pmdParent[pmdId] = ui;
      this.pud[ui] = pmdId + 1;
      this.pudUsed[pudId]++;
    }
    return pmdId * N + (Math.floor(va / PMD_SPAN) & MASK);
  }

  /** Allocate an empty leaf table under the empty PMD slot `slot`; returns the leaf id. */
  allocLeaf(slot: number): number {
    const leaf = this.leafPool.alloc();
    const end = (leaf + 1) * N;
    this.ptePfn = grown(this.ptePfn, end);
    this.pteFlags = grown(this.pteFlags, end);
    this.leafUsed = grown(this.leafUsed, leaf + 1);
    this.leafParent = grown(this.leafParent, leaf + 1);
    this.ptePfn.fill(0, leaf * N, end);
    this.pteFlags.fill(0, leaf * N, end);
    this.leafUsed[leaf] = 0;
    this.leafParent[leaf] = slot;
    this.pmdChild[slot] = leaf + 1;
    this.pmdUsed[(slot / N) | 0]++;
    return leaf;
  }

  /** Position of the PTE for `va`, allocating every table on the way. The PMD must not be huge. */
  ptePosAlloc(va: number): number {
    const slot = this.pmdSlotAlloc(va);
    let leaf = this.pmdChild[slot] - 1;
    if (leaf < 0) leaf = this.allocLeaf(slot);
    return leaf * N + (Math.floor(va / PTE_SPAN) & MASK);
  }

  // ---- updates --------------------------------------------------------------------------------

  /** Write the PTE at `pos`, keeping the leaf table's count of used entries. */
  setPte(pos: number, pfn: number, flags: number): void {
    const wasNone = (this.pteFlags[pos] & ENTRY_KIND_MASK) === ENTRY_NONE;
    const isNone = (flags & ENTRY_KIND_MASK) === ENTRY_NONE;
    this.ptePfn[pos] = pfn;
    this.pteFlags[pos] = flags;
    if (wasNone !== isNone) this.leafUsed[(pos / N) | 0] += isNone ? -1 : 1;
  }

  /** Clear the PTE at `pos` (pte_clear). The leaf table is not freed here; see freeLeafIfEmpty. */
  clearPte(pos: number): void {
    if ((this.pteFlags[pos] & ENTRY_KIND_MASK) !== ENTRY_NONE) this.leafUsed[(pos / N) | 0]--;
    this.ptePfn[pos] = 0;
    this.pteFlags[pos] = 0;
  }

  /** Install a huge entry in the empty PMD slot `slot`. */
  setPmdHuge(slot: number, pfn: number, flags: number): void {
    if (this.pmdChild[slot] === 0 && (this.pmdFlags[slot] & ENTRY_KIND_MASK) === ENTRY_NONE) {
      this.pmdUsed[(slot / N) | 0]++;
    }
    this.pmdPfn[slot] = pfn;
    this.pmdFlags[slot] = flags;
  }

  /** Replace the flags of the huge entry in `slot`. */
  setPmdFlags(slot: number, flags: number): void {
    this.pmdFlags[slot] = flags;
  }

  /** Free the leaf table `leaf` if it holds no entry; returns true if it was freed. */
  freeLeafIfEmpty(leaf: number): boolean {
    if (this.leafUsed[leaf] !== 0) return false;
    const slot = this.leafParent[leaf];
    this.pmdChild[slot] = 0;
    this.leafPool.free(leaf);
    this.releasePmdSlot(slot);
    return true;
  }

  /** Empty the PMD slot `slot` (a huge entry or a leaf table being replaced). */
  clearPmd(slot: number): void {
    const leaf = this.pmdChild[slot] - 1;
    if (leaf >= 0) {
      this.pmdChild[slot] = 0;
      this.leafPool.free(leaf);
    }
    this.pmdPfn[slot] = 0;
    this.pmdFlags[slot] = 0;
    this.releasePmdSlot(slot);
  }

  /**
   * Replace the huge entry in `slot` by a new leaf table (the caller fills its 512 entries); the
   * slot stays in use. Returns the leaf id.
   */
  replaceHugeWithLeaf(slot: number): number {
    this.pmdPfn[slot] = 0;
    this.pmdFlags[slot] = 0;
    this.pmdUsed[(slot / N) | 0]--;
    return this.allocLeaf(slot);
  }

  private releasePmdSlot(slot: number): void {
    const pmdId = (slot / N) | 0;
    if (--this.pmdUsed[pmdId] > 0) return;
    const ui = this.pmdParent[pmdId];
    this.pud[ui] = 0;
    this.pmdPool.free(pmdId);
    this.lastPudFrame = -1;
    const pudId = (ui / N) | 0;
    if (--this.pudUsed[pudId] > 0) return;
    this.pgd[this.pudParent[pudId]] = 0;
    this.pudPool.free(pudId);
    this.pgdUsed--;
  }

  /** True if no table is allocated below the PGD. */
  get empty(): boolean {
    return this.pgdUsed === 0;
  }
}

export { PGD_SPAN, PMD_SPAN, PTE_SPAN, PUD_SPAN };
