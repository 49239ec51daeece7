/**
 * Counters only the gpu driver has, beside the common DeviceStats names (tlbFlushes,
 * pagesDropped, prefetchedPages, evictions, mirrorBytes) it keeps in `DeviceContext.stats`.
 * Cumulative; `GpuDriver.gpuStats`.
 */
export class GpuStats {
  /** Fault batches handleFaults serviced. */
  batches = 0;
  /** Fault entries in those batches (duplicates included). */
  faultEntries = 0;
  /** Entries that repeated a page already in their batch (coalesced, as UVM's fetch does). */
  duplicateFaults = 0;
  /** (address space, 2 MiB VA block) groups serviced: one per block per batch. */
  blocksServiced = 0;
  /** migrateToDevice calls made (one per contiguous region). */
  migrateCalls = 0;
  /** deviceFault calls made for remote mappings (one per contiguous region). */
  remoteFaultCalls = 0;
  /** Faulted pages the block-level service left untranslatable, faulted again one by one. */
  fallbackFaults = 0;
  /** Entries cancelled (EFAULT, EPERM, ENOMEM). */
  cancelled = 0;
  /** Blocks that reached the access-counter threshold (translate missed once to notify). */
  accessNotifications = 0;
  /** Blocks evicted to make room (their pages count in DeviceStats.evictions). */
  evictedBlocks = 0;
  /** Migrations of a block whose pages had gone home since its last migration (CPU<->GPU bounces). */
  thrashingBounces = 0;
  /** Blocks pinned remote by thrashing detection. */
  thrashingPins = 0;
  /** Faults serviced remotely because their block was pinned. */
  pinnedFaults = 0;
  /** 2 MiB entries split into 4 KiB entries (partial invalidations). */
  hugeSplits = 0;
  /** Bytes allocated for the table and residency records, spare capacity of the growable arrays included. */
  capacityBytes = 0;
}
