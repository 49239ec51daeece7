import { HPAGE_PMD_NR } from "./constants.js";
import { FRAME_LARGE, type FramePool } from "./frame-pool.js";

// Mapping accounting (the kernel's folio_add/remove_rmap_*). These keep mapcounts and the large
// folio's mm-id slots; references (refcount) are taken and dropped by the callers.

/** One more PTE maps page `pfn` in mm `mmId`. */
export function rmapAddPte(pool: FramePool, mmId: number, pfn: number): void {
  pool.mapcount[pfn]++;
  if (pool.flags[pfn] & FRAME_LARGE) pool.addLargeMapping((pfn / HPAGE_PMD_NR) | 0, mmId, 1);
}

/** A PTE of mm `mmId` stopped mapping page `pfn`. */
export function rmapRemovePte(pool: FramePool, mmId: number, pfn: number): void {
  pool.mapcount[pfn]--;
  if (pool.flags[pfn] & FRAME_LARGE) pool.removeLargeMapping((pfn / HPAGE_PMD_NR) | 0, mmId, 1);
}

/** One more PMD maps the large folio headed by `head` in mm `mmId`. */
export function rmapAddPmd(pool: FramePool, mmId: number, head: number): void {
  const b = (head / HPAGE_PMD_NR) | 0;
  pool.entireMapcount[b]++;
  pool.addLargeMapping(b, mmId, 1);
}

/** A PMD of mm `mmId` stopped mapping the large folio headed by `head`. */
export function rmapRemovePmd(pool: FramePool, mmId: number, head: number): void {
  const b = (head / HPAGE_PMD_NR) | 0;
  pool.entireMapcount[b]--;
  pool.removeLargeMapping(b, mmId, 1);
}
