import { HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE } from "./constants.js";
import { ENTRY_DIRTY, ENTRY_KIND_MASK, ENTRY_PRESENT, ENTRY_YOUNG, ENTRY_ZERO } from "./entry.js";
import { FRAME_ANON, FRAME_DIRTY, FRAME_LAZYFREE, type FramePool } from "./frame-pool.js";
import { MmuNotifyEvent } from "./notifier.js";
import { splitFolio } from "./split-folio.js";
import type { MmStruct as Mm } from "./types.js";
import { PageTableCursor, SEG_HUGE, SEG_TABLE } from "./walker.js";

/**
 * PTEs from `pos` (mapping `pfn`, page `index` of the walk) on that map consecutive pages of the
 * same large folio, up to `n` (madvise_folio_pte_batch).
 */
export function folioPteBatch(mm: Mm, pos: number, pfn: number, n: number): number {
  const pool = mm.machine.pool;
  const head = pool.folioHead(pfn);
  const pt = mm.pt;
  let nr = 1;
  while (nr < n) {
    const f = pt.pteFlags[pos + nr];
    const p = pt.ptePfn[pos + nr];
    if ((f & (ENTRY_KIND_MASK | ENTRY_ZERO)) !== ENTRY_PRESENT || p !== pfn + nr || p >= head + HPAGE_PMD_NR)
      break;
    nr++;
  }
  return nr;
}

/** folio_maybe_mapped_shared: a large folio's mm-id tracking, a small folio's mapcount. */
export function folioMaybeMappedShared(pool: FramePool, pfn: number): boolean {
  if (pool.isLarge(pfn)) return pool.maybeShared[(pfn / HPAGE_PMD_NR) | 0] !== 0;
  return pool.mapcount[pfn] > 1;
}

/** folio_mark_lazyfree: an anonymous swap-backed folio becomes lazily freed. */
function markLazyfree(pool: FramePool, head: number): void {
  if (pool.flags[head] & FRAME_ANON) pool.flags[head] |= FRAME_LAZYFREE;
}

/**
 * MADV_FREE of [start, end) inside the private VMA of `mm` (madvise_free_single_vma): mirrors get
 * one CLEAR over the range; then every present page of this process's own (madvise_free_pte_range)
 * stays mapped but is made clean and old and its folio lazily freed, so reclaim may discard it
 * unless it is written again first. A THP wholly inside the range keeps its PMD; one only partly
 * inside is split (split_folio) and only its pages in the range are freed. Folios another process
 * may map are skipped where the kernel skips them (large folios that may be shared, dirty folios
 * mapped more than once); the zero page, holes and non-present entries (swap-like: migration,
 * device-private, device-exclusive) are left alone.
 */
export function madviseFree(mm: Mm, start: number, end: number): void {
  mm.notifiers.invalidate(start, end, MmuNotifyEvent.CLEAR, null, () => freeRange(mm, start, end));
}

function freeRange(mm: Mm, start: number, end: number): void {
  const pool = mm.machine.pool;
  const pt = mm.pt;
  const cur = new PageTableCursor(pt).reset(start, end);
  while (cur.next()) {
    if (cur.kind === SEG_HUGE) {
      if ((cur.flags & (ENTRY_KIND_MASK | ENTRY_ZERO)) !== ENTRY_PRESENT) continue;
      const head = cur.pfn;
      // madvise_free_huge_pmd
      if (folioMaybeMappedShared(pool, head)) continue;
      if (cur.count !== HPAGE_PMD_NR) {
        const segStart = cur.addr;
        if (splitFolio(mm, segStart, head + (segStart % HPAGE_PMD_SIZE) / PAGE_SIZE))
          cur.reset(segStart, end);
        continue;
      }
      pool.flags[head] &= ~FRAME_DIRTY;
      pt.setPmdFlags(cur.slot, cur.flags & ~(ENTRY_YOUNG | ENTRY_DIRTY));
      markLazyfree(pool, head);
      continue;
    }
    if (cur.kind !== SEG_TABLE) continue;
    let i = 0;
    while (i < cur.count) {
      const pos = cur.leafBase + cur.index + i;
      const f = pt.pteFlags[pos];
      if ((f & (ENTRY_KIND_MASK | ENTRY_ZERO)) !== ENTRY_PRESENT) {
        i++;
        continue;
      }
      const pfn = pt.ptePfn[pos];
      const head = pool.folioHead(pfn);
      let nr = 1;
      if (pool.isLarge(pfn)) {
        nr = folioPteBatch(mm, pos, pfn, cur.count - i);
        if (nr < HPAGE_PMD_NR) {
          if (folioMaybeMappedShared(pool, pfn) || !splitFolio(mm, cur.addr + i * PAGE_SIZE, pfn)) i++;
          continue; // split: look at the same PTE again, now a small folio
        }
      }
      if (pool.flags[head] & FRAME_DIRTY) {
        // A dirty folio is only made clean when this mapping is its only one.
        const maps = pool.isLarge(head) ? pool.largeMapcount[(head / HPAGE_PMD_NR) | 0] : pool.mapcount[head];
        if (maps !== nr) {
          i += nr;
          continue;
        }
        pool.flags[head] &= ~FRAME_DIRTY;
      }
      for (let k = 0; k < nr; k++) pt.pteFlags[pos + k] &= ~(ENTRY_YOUNG | ENTRY_DIRTY);
      markLazyfree(pool, head);
      i += nr;
    }
  }
}
