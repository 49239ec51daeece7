import { alignDown, HPAGE_PMD_SIZE } from "./constants.js";
import {
  ENTRY_DEVICE_EXCLUSIVE,
  ENTRY_DEVICE_PRIVATE,
  ENTRY_KIND_MASK,
  ENTRY_MIGRATION,
  ENTRY_PRESENT,
  ENTRY_ZERO,
  entryOwner,
} from "./entry.js";
import { rmapRemovePmd, rmapRemovePte } from "./rmap.js";
import { splitHugePmd } from "./thp.js";
import type { MmStruct as Mm } from "./types.js";
import { PageTableCursor, SEG_HUGE, SEG_TABLE } from "./walker.js";

/**
 * Clear every entry in [start, end) and drop what the entries held (zap_page_range). The caller
 * has already sent the invalidation (UNMAP, CLEAR or RELEASE) for the range. A huge PMD only
 * partly inside the range is split first.
 *
 * Emptied leaf tables: when unmapping (`dontneed` false) every one is freed, as free_pgtables
 * frees the tables of the removed VMAs. For MADV_DONTNEED (`dontneed` true) PT_RECLAIM frees a
 * table only if the range covers its whole 2 MiB (reclaim_pt_is_enabled tests the part of the
 * range under that one PMD): a smaller range leaves an empty table behind, and a later fault
 * under it maps 4 KiB pages instead of a THP.
 */
export function zapRange(mm: Mm, start: number, end: number, dontneed = false): void {
  const cur = new PageTableCursor(mm.pt).reset(start, end);
  const pt = mm.pt;
  while (cur.next()) {
    if (cur.kind === SEG_HUGE) {
      const haddr = alignDown(cur.addr, HPAGE_PMD_SIZE);
      if (cur.addr === haddr && cur.end === haddr + HPAGE_PMD_SIZE) {
        zapHugePmd(mm, cur.slot);
        continue;
      }
      // The split happens inside the caller's invalidation of [start, end); the kernel also
      // notifies the whole PMD, and so do we, nested.
      splitHugePmd(mm, cur.slot, haddr);
    } else if (cur.kind !== SEG_TABLE) continue;
    const leaf = pt.leafAt(cur.slot);
    const base = leaf * 512;
    for (let i = cur.index, n = cur.index + cur.count; i < n; i++) zapPte(mm, base + i);
    if (!dontneed || cur.count === 512) pt.freeLeafIfEmpty(leaf);
  }
}

/** Clear the PTE at `pos` and release what it referred to. */
export function zapPte(mm: Mm, pos: number): void {
  const pt = mm.pt;
  const flags = pt.pteFlags[pos];
  const kind = flags & ENTRY_KIND_MASK;
  if (kind === 0) return;
  const pfn = pt.ptePfn[pos];
  pt.clearPte(pos);
  if (kind === ENTRY_PRESENT || kind === ENTRY_DEVICE_EXCLUSIVE) {
    if (flags & ENTRY_ZERO) return;
    const pool = mm.machine.pool;
    rmapRemovePte(pool, mm.id, pfn);
    mm.rssDrop(pfn, 1);
    pool.put(pfn);
  } else if (kind === ENTRY_DEVICE_PRIVATE) {
    mm.rssDevice--;
    mm.machine.devicePagemap(entryOwner(flags)).pagePut(pfn);
  } else if (kind === ENTRY_MIGRATION) {
    // A migration entry holds no reference of its own: the migration in flight holds the page and
    // will find the entry gone when it tries to restore it.
    if (entryOwner(flags) !== 0) mm.rssDevice--;
    else mm.rssAnon--;
  }
}

/**
 * Clear the huge PMD in `slot` and release its folio (zap_huge_pmd): a THP's reference and PMD
 * mapping; a device-private PMD's reference on its order-9 device folio (the device frees it at
 * zero); a PMD migration entry holds none (the migration in flight does).
 */
export function zapHugePmd(mm: Mm, slot: number): void {
  const pt = mm.pt;
  const flags = pt.pmdFlags[slot];
  const head = pt.pmdPfn[slot];
  pt.clearPmd(slot);
  const kind = flags & ENTRY_KIND_MASK;
  if (kind === ENTRY_DEVICE_PRIVATE) {
    mm.rssDevice -= 512;
    mm.machine.devicePagemap(entryOwner(flags)).pagePut(head);
    return;
  }
  if (kind === ENTRY_MIGRATION) {
    if (entryOwner(flags) !== 0) mm.rssDevice -= 512;
    else mm.rssAnon -= 512;
    return;
  }
  if (kind !== ENTRY_PRESENT || flags & ENTRY_ZERO) return;
  const pool = mm.machine.pool;
  rmapRemovePmd(pool, mm.id, head);
  mm.rssDrop(head, 512);
  pool.put(head);
}
