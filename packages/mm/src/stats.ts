import type { NotifierCounters } from "./notifier.js";

/**
 * Counters of one simulated machine's memory manager. All are plain numbers, cumulative since the
 * machine was created; `snapshot()` copies them.
 */
export class MmStats {
  /** Page faults handled (CPU and remote/device-initiated), of every kind below. */
  faults = 0;
  /** Faults on a none PTE that mapped a fresh zero-filled anonymous 4 KiB page. */
  faultAnon = 0;
  /** Read faults that mapped the shared zero page. */
  faultZeroPage = 0;
  /** Faults that mapped a freshly allocated THP with one PMD. */
  faultThp = 0;
  /** Read faults that mapped the huge zero page. */
  faultHugeZeroPage = 0;
  /** Faults in shared (shmem) mappings. */
  faultShmem = 0;
  /** Pages mapped by fault-around in shared mappings (beyond the faulting page). */
  faultAroundPages = 0;
  /** Write faults that copied a page (COW break, or a write to the zero page). */
  cowCopies = 0;
  /** Write faults that reused a write-protected page because it was exclusive. */
  cowReuses = 0;
  /** Faults on device-private entries (migrated back to RAM). */
  faultDevicePrivate = 0;
  /** Faults that hit a migration entry and had to wait. */
  faultMigrationWait = 0;
  /** Faults that restored a device-exclusive entry. */
  faultExclusive = 0;
  /** Accesses refused with SIGSEGV (no VMA, or the VMA forbids the access). */
  segv = 0;
  /** Faults that failed for lack of memory. */
  oom = 0;
  /** THPs allocated (faults and huge-zero-page write faults). */
  thpAllocs = 0;
  /** THP faults that fell back to 4 KiB pages because no huge frame was free. */
  thpFallbacks = 0;
  /** PMD splits (a huge mapping turned into 512 PTEs). */
  thpSplitPmd = 0;
  /** Invalidation traffic, shared by every address space of the machine. */
  readonly notifier: NotifierCounters = { ranges: 0, calls: 0, pages: 0 };

  /** A plain copy of every counter. */
  snapshot(): MmStatsSnapshot {
    const { notifier, ...rest } = this;
    return {
      ...rest,
      notifierRanges: notifier.ranges,
      notifierCalls: notifier.calls,
      notifierPages: notifier.pages,
    };
  }
}

/** Plain-object form of {@link MmStats}. */
export type MmStatsSnapshot = Omit<{ [K in keyof MmStats]: MmStats[K] }, "notifier" | "snapshot"> & {
  notifierRanges: number;
  notifierCalls: number;
  notifierPages: number;
};
