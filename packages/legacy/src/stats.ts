/** Counters of one hmm_pt (directory tree). All cumulative. */
export class HmmPtStats {
  /** Page entries written valid (hmm_pte_from_pfn or a device address into an invalid entry). */
  entriesWritten = 0;
  /** Page entries cleared by invalidations (hmm_mirror_update_pt). */
  entriesCleared = 0;
  /** Directories allocated (hmm_pt_iter_populate). */
  directoriesAllocated = 0;
  /** Directories pruned (freed when their count reached zero). */
  directoriesPruned = 0;
  /** Directories allocated again within REALLOC_SOON_WALKS walks of being pruned at the same address. */
  directoriesReallocatedSoon = 0;
  /** Delayed pruning only: queued directories a walker came back to (an allocation saved). */
  directoriesRevived = 0;
  /** Directory lock acquisitions (hmm_pt_iter_directory_lock; the root lock included). */
  lockAcquisitions = 0;
  /** References walkers took on the way down (hmm_pt_iter_protect_directory and new directories). */
  walkerRefs = 0;

  /** A plain copy. */
  snapshot(): Record<string, number> {
    return { ...this } as unknown as Record<string, number>;
  }
}

/**
 * Counters of one shared-mirror device (all its mirrors), beside the DeviceStats every driver
 * keeps. Directory counters are its mirrors' hmm_pt counters summed (a tree shared by several
 * devices is counted once, in `SharedMirror.tables()`).
 */
export interface LegacyStats extends Record<string, number> {
  /** hmm_mirror_fault calls. */
  mirrorFaults: number;
  /** Walks that found a missing or write-protected CPU entry (-ENOENT): CPU fault, then retry. */
  enoentFaults: number;
  /** Walks restarted with -EAGAIN (the PMD changed under the walk, or after an -ENOENT CPU fault). */
  eagainRetries: number;
  /** Driver update callbacks (invalidations and fault events). */
  updates: number;
  /** Faults told to back off by an overlapping invalidation (event->backoff, then -EAGAIN). */
  backoffs: number;
  /** Dirty page entries found when clearing (set_page_dirty on the CPU page in v12). */
  dirtyPages: number;
  /** CPU faults on device pages whose device address came from hmm_pt. */
  copyFromDeviceViaHmmPt: number;
  /** CPU faults on device pages whose hmm_pt entry was already gone (the core's device frame was used). */
  copyFromDeviceUnmirrored: number;
  /** Bytes of the hmm_pt directory trees of this device's mirrors. */
  sharedMirrorBytes: number;
  /** Of those: leaf directories (page entries). */
  sharedMirrorLeafBytes: number;
  /** Of those: upper directories and the root arrays. */
  sharedMirrorDirectoryBytes: number;
  /** Bytes of the driver's own device page table (as the driver reports it). */
  driverTableBytes: number;
}

/** Counters a SharedMirror keeps itself (the rest of LegacyStats comes from its tables). */
export interface LegacyCounters {
  mirrorFaults: number;
  enoentFaults: number;
  eagainRetries: number;
  updates: number;
  backoffs: number;
  dirtyPages: number;
  copyFromDeviceViaHmmPt: number;
  copyFromDeviceUnmirrored: number;
  driverTableBytes: number;
}
