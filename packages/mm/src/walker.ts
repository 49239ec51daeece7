import { PTRS_PER_TABLE } from "./constants.js";
import { ENTRY_KIND_MASK, ENTRY_NONE } from "./entry.js";
import { type PageTable, PGD_SPAN, PMD_SPAN, PTE_SPAN, PUD_SPAN } from "./page-table.js";

/** Segment kinds reported by {@link PageTableCursor}. */
export const SEG_NONE = 0;
/** The segment lies in one leaf (PTE) table. */
export const SEG_TABLE = 1;
/** The segment lies under one huge PMD entry. */
export const SEG_HUGE = 2;

const N = PTRS_PER_TABLE;
const MASK = N - 1;

/**
 * A cursor that walks a VA range of a page table one PMD at a time, the unit the kernel locks
 * (pmd_lock / pte_offset_map_lock). Each `next()` describes one segment [addr, end):
 *  - SEG_TABLE: inside one leaf table; PTEs are `pt.ptePfn/pteFlags[leafBase + index .. + count)`.
 *  - SEG_HUGE: under one huge PMD entry (`pfn`, `flags`, `slot`); the segment may be part of it.
 *  - SEG_NONE: nothing is mapped in [addr, end); may span many PMDs when upper tables are absent.
 * The cursor descends from the root on every step and keeps no pointer into the tables, so the
 * table may change between steps (another thread unmapping, a fault allocating) without the
 * cursor reading freed state. Allocation-free: one cursor is reused for every walk.
 */
export class PageTableCursor {
  addr = 0;
  end = 0;
  kind = SEG_NONE;
  /** PMD slot of the segment (-1 for SEG_NONE without a PMD table). */
  slot = -1;
  /** First PTE position of the leaf table (SEG_TABLE). */
  leafBase = -1;
  /** PTE index of `addr` within its leaf table. */
  index = 0;
  /** Pages in the segment. */
  count = 0;
  /** Huge entry pfn and flags (SEG_HUGE). */
  pfn = 0;
  flags = 0;
  private limit = 0;

  constructor(readonly pt: PageTable) {}

  /** Start a walk of [start, end); both page aligned. */
  reset(start: number, end: number): this {
    this.addr = start;
    this.end = start;
    this.limit = end;
    return this;
  }

  /** Advance to the next segment; false when the range is done. */
  next(): boolean {
    const va = this.end;
    if (va >= this.limit) return false;
    const pt = this.pt;
    this.addr = va;
    this.slot = -1;
    this.leafBase = -1;
    this.pfn = 0;
    this.flags = 0;
    const pudId = pt.pgd[Math.floor(va / PGD_SPAN) & MASK] - 1;
    if (pudId < 0) return this.hole(va, PGD_SPAN);
    const pmdId = pt.pud[pudId * N + (Math.floor(va / PUD_SPAN) & MASK)] - 1;
    if (pmdId < 0) return this.hole(va, PUD_SPAN);
    const slot = pmdId * N + (Math.floor(va / PMD_SPAN) & MASK);
    this.slot = slot;
    const pmdEnd = va - (va % PMD_SPAN) + PMD_SPAN;
    this.end = Math.min(pmdEnd, this.limit);
    this.index = Math.floor(va / PTE_SPAN) & MASK;
    this.count = (this.end - va) / PTE_SPAN;
    const leaf = pt.pmdChild[slot] - 1;
    if (leaf >= 0) {
      this.kind = SEG_TABLE;
      this.leafBase = leaf * N;
      return true;
    }
    const flags = pt.pmdFlags[slot];
    if ((flags & ENTRY_KIND_MASK) === ENTRY_NONE) {
      this.kind = SEG_NONE;
      return true;
    }
    this.kind = SEG_HUGE;
    this.pfn = pt.pmdPfn[slot];
    this.flags = flags;
    return true;
  }

  private hole(va: number, span: number): boolean {
    const spanEnd = va - (va % span) + span;
    this.end = Math.min(spanEnd, this.limit);
    this.kind = SEG_NONE;
    this.index = Math.floor(va / PTE_SPAN) & MASK;
    this.count = (this.end - va) / PTE_SPAN;
    return true;
  }
}
