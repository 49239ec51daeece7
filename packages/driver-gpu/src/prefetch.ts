/**
 * Prefetch inside a 2 MiB VA block, as NVIDIA UVM decides it (kernel-open/nvidia-uvm/
 * uvm_perf_prefetch.c in NVIDIA/open-gpu-kernel-modules; behaviour ported, not code):
 *
 * 1. The block's pages form the leaves of a bitmap tree whose nodes are the aligned power-of-two
 *    subregions (uvm_va_block_bitmap_tree_t). A leaf is set if the page is already where the
 *    fault wants it or is being faulted now (uvm_perf_prefetch_prenotify_fault_migrations: the
 *    resident mask OR the faulted pages).
 * 2. Faults grow to big-page granularity first (grow_fault_granularity): every big page (64 KiB
 *    by default here, UVM's size for an unregistered or CPU destination) holding a faulted page
 *    counts as fully set.
 * 3. For each faulted page, walk from its leaf up to the root (here: up to the prefetch window)
 *    and keep the largest subregion in which more than `threshold` percent of the leaves are
 *    set (compute_prefetch_region: `counter * 100 > subregion_pages * threshold`, threshold 51 by
 *    default, uvm_perf_prefetch_threshold); stop once a region reaches the block's end.
 * 4. The prefetch mask is the union of those regions minus the faulted pages.
 *
 * Not ported: UVM's "first touch at the preferred location populates the whole block" shortcut
 * (hmmkit has no preferred location), and the thrashing mask (a thrashing block is pinned remote
 * and never prefetched here).
 */
import { BLOCK_PAGES } from "./device-table.js";

/** Scratch for {@link computePrefetch}: the tree's leaves and their prefix sums. */
export class PrefetchScratch {
  readonly tree = new Uint8Array(BLOCK_PAGES);
  readonly prefix = new Int16Array(BLOCK_PAGES + 1);
}

/**
 * Fill `out` with the pages of the block to prefetch, given the pages already at the destination
 * (`present`, 1 per page) and the faulted pages (`faulted`, 1 per page); returns how many.
 * `granule` and `window` are powers of two (pages), `threshold` a percentage.
 */
export function computePrefetch(
  present: Uint8Array,
  faulted: Uint8Array,
  threshold: number,
  granule: number,
  window: number,
  out: Uint8Array,
  s: PrefetchScratch,
): number {
  const tree = s.tree;
  const prefix = s.prefix;
  for (let i = 0; i < BLOCK_PAGES; i++) tree[i] = present[i] | faulted[i];
  // grow_fault_granularity: a big page with a faulted page counts as fully set.
  if (granule > 1) {
    for (let g = 0; g < BLOCK_PAGES; g += granule) {
      let any = 0;
      for (let i = g; i < g + granule; i++) any |= faulted[i];
      if (any) tree.fill(1, g, g + granule);
    }
  }
  prefix[0] = 0;
  for (let i = 0; i < BLOCK_PAGES; i++) prefix[i + 1] = prefix[i] + tree[i];
  out.fill(0);
  for (let p = 0; p < BLOCK_PAGES; p++) {
    if (!faulted[p]) continue;
    let first = -1;
    let outer = -1;
    // Subregion sizes from the leaf up: the aligned 2^k pages holding p.
    for (let size = 1; size <= window; size *= 2) {
      const a = p - (p % size);
      const count = prefix[a + size] - prefix[a];
      if (count * 100 > size * threshold) {
        first = a;
        outer = a + size;
      }
    }
    if (first >= 0) out.fill(1, first, outer);
    if (outer === BLOCK_PAGES) break;
  }
  let n = 0;
  for (let i = 0; i < BLOCK_PAGES; i++) {
    if (faulted[i]) out[i] = 0;
    n += out[i];
  }
  return n;
}
