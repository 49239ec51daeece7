import { HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE } from "./constants.js";
import { ENTRY_DIRTY, ENTRY_KIND_MASK, ENTRY_PRESENT, ENTRY_YOUNG, ENTRY_ZERO } from "./entry.js";
import { FRAME_DIRTY, FRAME_LAZYFREE, FRAME_SHMEM } from "./frame-pool.js";
import { discardPte, reclaimLazyfreePmd, reclaimLazyfreePte } from "./lazyfree.js";
import { folioMaybeMappedShared, folioPteBatch } from "./madvise-free.js";
import { splitFolio } from "./split-folio.js";
import type { MmStruct as Mm } from "./types.js";
import type { Vma } from "./vma.js";
import { PageTableCursor, SEG_HUGE, SEG_TABLE } from "./walker.js";

/**
 * MADV_COLD (`pageout` false) or MADV_PAGEOUT (`pageout` true) of [start, end) inside `vma`
 * (madvise_cold_or_pageout_pte_range, then reclaim_pages for pageout). Folios another process may
 * map are left alone. A THP only partly inside the range is split (split_folio) in both cases.
 * MADV_COLD changes only LRU state, which the simulator does not keep. MADV_PAGEOUT reclaims, on a
 * machine without swap: clean lazily-freed pages are discarded; re-dirtied ones become ordinary
 * again and stay (a PMD-mapped one is split to PTEs); other anonymous pages stay, a wholly covered
 * THP split into small folios first (shrink_folio_list cannot swap it whole); shared (shmem) pages
 * are unmapped from this process but stay in the shared object, so a later fault maps them again.
 */
export function madviseColdOrPageout(mm: Mm, vma: Vma, start: number, end: number, pageout: boolean): void {
  const pool = mm.machine.pool;
  const pt = mm.pt;
  const cur = new PageTableCursor(pt).reset(start, end);
  while (cur.next()) {
    if (cur.kind === SEG_HUGE) {
      if ((cur.flags & (ENTRY_KIND_MASK | ENTRY_ZERO)) !== ENTRY_PRESENT) continue;
      const head = cur.pfn;
      if (folioMaybeMappedShared(pool, head)) continue;
      const segStart = cur.addr;
      if (cur.count !== HPAGE_PMD_NR) {
        if (splitFolio(mm, segStart, head + (segStart % HPAGE_PMD_SIZE) / PAGE_SIZE))
          cur.reset(segStart, end);
        continue;
      }
      pt.setPmdFlags(cur.slot, cur.flags & ~ENTRY_YOUNG);
      if (!pageout) continue;
      if (pool.flags[head] & FRAME_LAZYFREE) reclaimLazyfreePmd(mm, cur.slot, segStart);
      else splitFolio(mm, segStart, head);
      continue;
    }
    if (cur.kind !== SEG_TABLE) continue;
    let i = 0;
    while (i < cur.count) {
      const pos = cur.leafBase + cur.index + i;
      const va = cur.addr + i * PAGE_SIZE;
      const f = pt.pteFlags[pos];
      if ((f & (ENTRY_KIND_MASK | ENTRY_ZERO)) !== ENTRY_PRESENT) {
        i++;
        continue;
      }
      const pfn = pt.ptePfn[pos];
      let nr = 1;
      if (pool.isLarge(pfn)) {
        nr = folioPteBatch(mm, pos, pfn, cur.count - i);
        if (nr < HPAGE_PMD_NR) {
          if (folioMaybeMappedShared(pool, pfn) || !splitFolio(mm, va, pfn)) i++;
          continue; // split: look at the same PTE again, now a small folio
        }
      }
      if (folioMaybeMappedShared(pool, pfn)) {
        i += nr;
        continue;
      }
      for (let k = 0; k < nr; k++) pt.pteFlags[pos + k] &= ~ENTRY_YOUNG;
      if (pageout) reclaimMapped(mm, vma, pos, va, nr);
      i += nr;
    }
  }
}

/** Reclaim the folio mapped by the `nr` PTEs from `pos` (one small folio, or a whole PTE-mapped THP). */
function reclaimMapped(mm: Mm, vma: Vma, pos: number, va: number, nr: number): void {
  const pool = mm.machine.pool;
  const pt = mm.pt;
  const pfn = pt.ptePfn[pos];
  const head = pool.folioHead(pfn);
  if (pool.flags[head] & FRAME_SHMEM) {
    // No swap: the page stays in the shared object, only this mapping goes (try_to_unmap).
    if (vma.shared) discardPte(mm, pos, va);
    return;
  }
  if (pool.flags[head] & FRAME_LAZYFREE) {
    for (let k = 0; k < nr; k++) {
      if (pt.pteFlags[pos + k] & ENTRY_DIRTY) pool.flags[head] |= FRAME_DIRTY;
    }
    for (let k = 0; k < nr; k++) if (!reclaimLazyfreePte(mm, pos + k, va + k * PAGE_SIZE)) break;
    return;
  }
  // Swap-backed anonymous memory without swap stays; a large folio is split trying to swap it.
  if (nr > 1) splitFolio(mm, va, pfn);
}
