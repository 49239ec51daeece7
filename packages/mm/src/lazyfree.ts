import { HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE } from "./constants.js";
import { ENTRY_DIRTY, ENTRY_KIND_MASK, ENTRY_PRESENT, ENTRY_ZERO } from "./entry.js";
import { FRAME_DIRTY, FRAME_LAZYFREE, type FramePool } from "./frame-pool.js";
import { MmuNotifyEvent } from "./notifier.js";
import { splitHugePmdLocked } from "./thp.js";
import type { MachineState as Machine, MmStruct as Mm } from "./types.js";
import { PageTableCursor, SEG_HUGE, SEG_TABLE } from "./walker.js";
import { zapPte } from "./zap.js";

/** True if the folio of `pfn` was lazily freed by MADV_FREE and not dirtied since. */
export function folioLazyfree(pool: FramePool, pfn: number): boolean {
  return (pool.flags[pool.folioHead(pfn)] & FRAME_LAZYFREE) !== 0;
}

/** True if the folio of `pfn` has no references beyond its mappings (reclaim may drop it). */
function onlyMapped(pool: FramePool, head: number): boolean {
  if (pool.isLarge(head)) return pool.refcount[head] === pool.largeMapcount[(head / HPAGE_PMD_NR) | 0];
  return pool.refcount[head] === pool.mapcount[head];
}

/**
 * Reclaim of one PTE mapping of a lazyfree folio (try_to_unmap_one's MADV_FREE case): a dirty PTE
 * dirties the folio; a clean folio with no extra references loses the mapping (discarded: the PTE
 * becomes none, the table stays), while a dirty one is swap-backed again (no longer lazyfree) and
 * kept. Mirrors get a CLEAR of the page first. Returns true if the mapping was discarded.
 */
export function reclaimLazyfreePte(mm: Mm, pos: number, va: number): boolean {
  const pool = mm.machine.pool;
  const pt = mm.pt;
  const head = pool.folioHead(pt.ptePfn[pos]);
  if (pt.pteFlags[pos] & ENTRY_DIRTY) pool.flags[head] |= FRAME_DIRTY;
  if (pool.flags[head] & FRAME_DIRTY || !onlyMapped(pool, head)) {
    pool.flags[head] &= ~FRAME_LAZYFREE;
    return false;
  }
  discardPte(mm, pos, va);
  return true;
}

/**
 * Unmap the PTE at `pos` (page `va`) inside a CLEAR of that page (try_to_unmap_one's range for a
 * small folio). The paired start/end calls allocate nothing when no mirror watches the page.
 */
export function discardPte(mm: Mm, pos: number, va: number): void {
  mm.notifiers.invalidateStart(va, va + PAGE_SIZE, MmuNotifyEvent.CLEAR, null);
  try {
    zapPte(mm, pos);
  } finally {
    mm.notifiers.invalidateRangeEnd();
  }
}

/**
 * Reclaim of a PMD-mapped lazyfree THP at `haddr`: a clean one is discarded, leaving an empty PTE
 * table behind (so later faults there map 4 KiB pages); a re-dirtied one becomes swap-backed again
 * and only its PMD is split. Mirrors get a CLEAR of the 2 MiB first. True if discarded.
 */
export function reclaimLazyfreePmd(mm: Mm, slot: number, haddr: number): boolean {
  const pool = mm.machine.pool;
  const pt = mm.pt;
  const head = pt.pmdPfn[slot];
  if (pt.pmdFlags[slot] & ENTRY_DIRTY) pool.flags[head] |= FRAME_DIRTY;
  const discard = !(pool.flags[head] & FRAME_DIRTY) && onlyMapped(pool, head);
  if (!discard) pool.flags[head] &= ~FRAME_LAZYFREE;
  mm.notifiers.invalidate(haddr, haddr + HPAGE_PMD_SIZE, MmuNotifyEvent.CLEAR, null, () => {
    splitHugePmdLocked(mm, slot);
    if (!discard) return;
    const base = pt.leafAt(slot) * HPAGE_PMD_NR;
    for (let i = 0; i < HPAGE_PMD_NR; i++) zapPte(mm, base + i);
  });
  return discard;
}

/**
 * Memory pressure: discard every clean lazily-freed page of every process (shrink_folio_list on
 * lazyfree anonymous folios), visiting processes in creation order. Returns true if anything was
 * freed. Called by the frame allocator before it reports ENOMEM.
 */
export function reclaimLazyfree(machine: Machine): boolean {
  const pool = machine.pool;
  const before = pool.freeFrames;
  for (const mm of machine.mms) {
    const pt = mm.pt;
    const cur = new PageTableCursor(pt);
    for (const v of mm.vmas.toArray()) {
      if (v.shared) continue;
      cur.reset(v.start, v.end);
      while (cur.next()) {
        if (cur.kind === SEG_HUGE) {
          if ((cur.flags & (ENTRY_KIND_MASK | ENTRY_ZERO)) !== ENTRY_PRESENT) continue;
          if (!(pool.flags[cur.pfn] & FRAME_LAZYFREE)) continue;
          if (cur.addr % HPAGE_PMD_SIZE === 0 && cur.count === HPAGE_PMD_NR)
            reclaimLazyfreePmd(mm, cur.slot, cur.addr);
          continue;
        }
        if (cur.kind !== SEG_TABLE) continue;
        for (let i = 0; i < cur.count; i++) {
          const pos = cur.leafBase + cur.index + i;
          const f = pt.pteFlags[pos];
          if ((f & (ENTRY_KIND_MASK | ENTRY_ZERO)) !== ENTRY_PRESENT) continue;
          if (!folioLazyfree(pool, pt.ptePfn[pos])) continue;
          reclaimLazyfreePte(mm, pos, cur.addr + i * PAGE_SIZE);
        }
      }
    }
  }
  return pool.freeFrames > before;
}
