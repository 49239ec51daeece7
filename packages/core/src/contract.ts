/**
 * The hmmkit driver contract: what a device driver plugin implements and what the HMM core
 * promises when it calls it. This is Aneesh Kumar's design from the HMM v12 review: the core
 * keeps no mirror page table; on a device fault it walks the CPU page table and calls the driver
 * with each PTE's details, and a driver keeps its own mirror only if it needs one.
 *
 * Threading and locking, for every callback: the core calls a driver from one simulated thread at
 * a time and never re-enters it. `mirror*` callbacks run after the core checked, under the
 * driver's update lock, that no invalidation of the range ran since the walk began
 * (mmu_interval_read_retry was false), so the entries they describe are exactly the CPU page
 * table's entries at that moment, and any later change reaches `invalidate` first. Addresses are
 * bytes (numbers up to 2^47), pfns are 4 KiB frame numbers, sizes are pages unless named bytes.
 *
 * Callbacks are synchronous: one that returns a Promise or any other thenable fails its device
 * at once (DriverError, code DRIVER_ASYNC; the core attaches a no-op rejection handler, so the
 * rejection cannot kill the process). Any other return value is ignored.
 *
 * Re-entry: what a callback may call, as the kernel's locks allow it. Refused calls throw an
 * HmmError EDEADLK and fail the device (DriverError EDEADLK, code DRIVER_REENTRY) even if the
 * driver catches the error.
 *
 *   callback            runs under (kernel)                      mm syscalls,      core operations
 *                                                                faulting CPU
 *                                                                access (any mm)
 *   mirrorPte/Pmd/Ptes  driver update lock + mmap_lock (read)    refused           refused
 *   invalidate          notifier locks, inside the mm operation  refused           refused
 *   copyToDevice        migrate_vma, pages locked, mmap_lock     refused           refused
 *   copyFromDevice      migrate_vma, pages locked (CPU fault)    refused           refused
 *   translations        driver update lock (inspection)          refused           refused
 *   unbind              the core's unbind (notifier going away)  refused           refused
 *   release             nothing (the device is detached)         allowed           allowed; ENODEV
 *                                                                                  on its own device
 *   translate           the device's translation hardware        refused           refused
 *   handleFaults        nothing (the driver's fault thread)      allowed           allowed
 *
 * Mm syscalls are mmap, munmap, mremap, mprotect, madvise, fork and exit (through Mm and
 * Process); a CPU access that hits a present page needs no lock and is allowed, one that faults is
 * refused. Core operations are every HmmCore method that acts (addDevice, removeDevice, bind, unbind, deviceFault, snapshot,
 * makeExclusive, migrateToDevice, migrateToRam, evict, translations, reap, and their step forms).
 *
 * DMA (`DeviceContext.dma`) runs only inside a copy callback and only on the frames it was
 * given: `systemToDevice(spfn, dpfn)` or `zeroDevicePage(dpfn)` in copyToDevice,
 * `deviceToSystem(dpfn, spfn)` in copyFromDevice. Anything else (another frame, a pfn out of range
 * or not an integer, DMA outside a copy) throws and fails the device (code DRIVER_DMA).
 *
 * A callback that throws (any value: an Error, a string, an object without a prototype, a
 * Symbol, a Proxy, a RangeError from a runaway recursion) fails its device only: the core
 * detaches the driver, drops what it mirrored, brings its pages home with its own copy, and
 * reports a DriverError naming the device, the callback and the address; a migration in flight
 * is rolled back. A failure in `release` is recorded and changes nothing else.
 *
 * Errors have partial effects, as in the kernel. A device fault walks its range in PMD-sized
 * chunks and commits each chunk to the driver (the mirror callbacks) before walking the next;
 * like hmm_range_fault it faults pages in as it walks, so when it meets a page with no VMA or in
 * a PROT_NONE VMA (EFAULT) or needs a write fault in a read-only VMA (EPERM), the pages before
 * that page stay faulted in, the chunks before it stay committed (a kernel driver calling
 * hmm_range_fault per chunk, as lib/test_hmm.c's dmirror_fault does per 64 pages, would hold
 * them), and the chunk holding the error is not reported. A migration works per VMA and stops
 * with EINVAL at the first missing or unreadable VMA, after migrating (and reporting) the ones
 * before it, as dmirror_migrate_to_device does; makeExclusive stops at the first page
 * make_device_exclusive refuses, keeping the pages before it exclusive.
 *
 * This device's own device-private pages are reported, never faulted, even on a write fault
 * when they are not writable (shared after fork, or after mprotect): hmm_vma_handle_pte "just
 * reports the PFN" when dev_private_owner matches. They arrive without WRITE; the fault's
 * result counts them (`DeviceFaultResult.reportedReadOnly`) and the caller decides (the kernel's
 * test driver returns EFAULT and the page stays on the device; to write it, migrate it home).
 */
import type { MmuNotifyEvent } from "@hmmkit/mm";
import type { DeviceFaultBatch } from "./device-access.js";

/*
 * What a driver author needs to know beyond the callbacks:
 *
 * - Device memory belongs to the core. The core allocates every device frame (in the device's
 *   DeviceMemory, `DeviceContext.memory`) before `copyToDevice`, holds a reference per CPU entry
 *   that points at it, and frees it when the last goes (dev_pagemap_ops.page_free); the driver
 *   only copies data, with `DeviceContext.dma`. A driver never allocates or frees frames. A
 *   migration that finds no free frame (and cannot evict one) leaves the page in system memory
 *   and counts it in `MigrateResult.allocFailed`. `HmmCore.removeDevice` brings every page home
 *   first and refuses (EBUSY) if some cannot come home.
 * - Invalidations can cover huge ranges: RELEASE covers all of user space ([0, TASK_SIZE), 2^35
 *   pages) when an address space exits, and fork sends PROTECTION_PAGE over every private
 *   writable VMA. Never loop over the pages of [start, end): clip it to what you hold (walk your
 *   own mirror for the range).
 * - A THP split is told as a CLEAR of the whole 2 MiB PMD. Its order around the operation that
 *   caused it: MADV_DONTNEED and migration send their own event for the partial range first and
 *   the whole-PMD CLEAR nested inside it (zap_page_range / migrate_vma_setup split while
 *   zapping); mprotect and munmap split the PMD when they split the VMA, so the whole-PMD CLEAR
 *   comes first, then PROTECTION_VMA or UNMAP for the range.
 * - Mirror callbacks must be applied before they return: the entries they describe are stable
 *   only during the call; the next invalidation of the range may come as soon as they return.
 *   Likewise `invalidate` must have dropped the range's translations when it returns.
 * - Flags are the HMM_PFN_* bits of flags.ts, including the map order (`hmmPfnToMapOrder`: 0 for
 *   a 4 KiB page, 9 for a page of a 2 MiB PMD).
 * - An `owner` (MIGRATE and EXCLUSIVE events, device-private entries) is a pagemap owner id:
 *   your own is `DeviceContext.ownerId`.
 * - `HmmCore.mmById(mmId)` gives the address space behind an `mmId`; `Device.driver` is the
 *   driver instance the core built.
 * - Counters that only the driver knows (its TLB or mirror flushes, translations dropped by
 *   invalidations, prefetched pages, its own evictions, the bytes of its mirror structures) go in
 *   `DeviceContext.stats` under the same names for every driver: `tlbFlushes`, `pagesDropped`,
 *   `prefetchedPages`, `evictions`, and `stats.setMirrorBytes(bytes)` (which keeps the peak).
 */

/** The API version of this contract. Plugins declare the version they target (semver). */
export const HMM_API_VERSION = "1.0.0";

/**
 * Which of the two designs a driver follows: `per-pte` (Aneesh's: the core calls the driver per
 * PTE and the driver keeps whatever mirror it wants) or `shared-mirror` (HMM v12's: the driver
 * reads the core-maintained shared mirror `hmm_pt`, provided by @hmmkit/legacy).
 */
export type DriverDesign = "per-pte" | "shared-mirror";

/** One translation a driver holds, as reported by {@link HmmDriver.translations}. */
export interface DeviceTranslation {
  /** Address space (mm id) the translation belongs to. */
  readonly mmId: number;
  /** Virtual address of the first page, aligned to the mapping size. */
  readonly va: number;
  /** First frame: a system pfn, or a device pfn when `devicePrivate`. */
  readonly pfn: number;
  /** Pages covered: 2^order consecutive pages and frames. */
  readonly order: number;
  /** The device may write through it. */
  readonly writable: boolean;
  /** The frame is in this device's memory. */
  readonly devicePrivate: boolean;
  /**
   * The translation is device-exclusive (reported with HMM_PFN_EXCLUSIVE by makeExclusive): the
   * CPU entry is a device-exclusive entry of this device, which a snapshot describes with
   * HMM_PFN_EXCLUSIVE and the frame but not VALID. Absent means false.
   */
  readonly exclusive?: boolean;
}

/**
 * A device driver. Implement at least one of `mirrorPte` and `mirrorPtes`; the core picks one
 * (the array form if it is the only one, or if the device config asks for it) and reports its
 * choice as `Device.callbackMode`. `mirrorPmd` is optional: without it a huge (2 MiB) CPU mapping
 * is reported as 512 pages through the chosen form.
 */
export interface HmmDriver {
  /**
   * One CPU page-table entry, after a device fault made it valid for the requested access (or
   * after a migration or make-exclusive put it in place). `flags` holds HMM_PFN_* bits: always
   * VALID; WRITE if the device may write; DIRTY; ZERO for the zero page; DEVICE_PRIVATE if `pfn`
   * is a device pfn of this device; EXCLUSIVE for exclusive access; the map order (0, or 9 when the
   * page is part of a 2 MiB PMD reported page by page). Called once per page, in address order.
   * Return nothing; throwing fails the device.
   */
  mirrorPte?(mmId: number, va: number, pfn: number, flags: number): void;

  /**
   * A whole huge PMD: 512 pages from `va` (2 MiB aligned) mapping frames `pfn`..`pfn + 511`, with
   * `flags` as for mirrorPte and map order 9. Called once per PMD even when the fault covered only
   * part of it (the whole PMD is valid and stable). A device-private PMD of this device (see
   * copyToDevice) arrives here too, with DEVICE_PRIVATE and device frames. Optional.
   */
  mirrorPmd?(mmId: number, va: number, pfn: number, flags: number): void;

  /**
   * The array form: `count` consecutive pages from `va`, all in one leaf table (or one huge PMD),
   * with their frames and flags in `pfns[i]` and `flags[i]`. The arrays are the core's scratch
   * buffers (copies): read them during the call, do not keep them; writing them changes nothing.
   */
  mirrorPtes?(mmId: number, va: number, count: number, pfns: Int32Array, flags: Int32Array): void;

  /**
   * The CPU page table of [start, end) in address space `mmId` is about to change (an MMU
   * notifier invalidation). Drop every translation in the range before returning; after the
   * return the CPU entries change and the old frames may be freed. `event` says why
   * (MmuNotifyEvent); `owner` is the pagemap owner id (`DeviceContext.ownerId`) of the device
   * behind a MIGRATE or EXCLUSIVE event, if any, else null (a MIGRATE owned by this device is the
   * core migrating pages to or from this device's memory.
   * A driver may skip it, as the kernel's test driver does, only if it also drops a page's
   * translation in `copyFromDevice`: pages migrated to the device are reported through the
   * mirror callbacks afterwards, pages migrated home are not). Called for every overlapping
   * change, including RELEASE when the address space exits. The range may be huge (RELEASE is
   * all of user space): clip it to the translations you hold, never loop over its pages.
   */
  invalidate(mmId: number, start: number, end: number, event: MmuNotifyEvent, owner: number | null): void;

  /**
   * Migration to device memory: copy the page at `va` from system frame `spfn` into device
   * frame `dpfn` (allocated by the core in this device's memory, and freed by it: the driver
   * never allocates or frees device frames), using
   * `DeviceContext.dma`. `spfn` is -1 when there is no source page (a hole or the zero page):
   * zero-fill `dpfn` instead. Not copying loses the page's data.
   *
   * With `compoundMigration: true` in the device config (the driver's MIGRATE_VMA_SELECT_COMPOUND),
   * a whole PMD (a THP, or a 2 MiB hole or huge zero page) moves as one order-9 device folio: this
   * is still called once per 4 KiB page, 512 times in address order, with consecutive `spfn` (or
   * -1) and consecutive `dpfn` starting at a multiple of 512, and the result is reported as one
   * device-private PMD (`mirrorPmd`, or 512 pages with order 9). When no free 512-frame block is
   * left the PMD is split and each page gets its own frame, as for a base page.
   */
  copyToDevice(mmId: number, va: number, spfn: number, dpfn: number): void;

  /**
   * Migration back to system memory (the seed's copy_from_device): copy device frame `dpfn`,
   * which held the page at `va`, into the new system frame `spfn`. Called when the CPU touches a
   * device-private page, on an explicit migrate-to-RAM, on eviction, and on device removal. The
   * device's translation of `va` in `mmId` is stale from here on (the MIGRATE invalidation came
   * first; other address spaces sharing the page get a CLEAR). A device-private PMD comes home
   * whole: 512 calls with consecutive frames into a new THP (or, when no THP can be allocated, a
   * CPU fault first splits the PMD, with a CLEAR of its 2 MiB, and brings only the faulting page).
   */
  copyFromDevice(mmId: number, va: number, dpfn: number, spfn: number): void;

  /**
   * The device no longer mirrors address space `mmId` (HmmCore.unbind, the kernel test driver's
   * file close): its interval notifier is gone, so no further invalidation of `mmId` will come.
   * Drop every translation of `mmId`. Its pages in device memory stay there and still come home
   * through `copyFromDevice` when the CPU touches them. Optional; a driver without it must not
   * use its translations of `mmId` again.
   */
  unbind?(mmId: number): void;

  /**
   * The device is being removed (after its pages went home). Free driver resources. Optional.
   * Runs with no lock held, after the device was detached: mm syscalls are allowed here, core
   * operations on this device give ENODEV.
   */
  release?(): void;

  /**
   * The device's translation hardware (its TLB or page-table walker), the hot path of every
   * device access (HmmCore.runDevice): translate the page at `va` (4 KiB aligned) of address
   * space `mmId` for a read (`write` false) or a write or atomic (`write` true). Return the system
   * pfn the access goes to (>= 0: a remote access over the bus), `deviceFrameResult(dpfn)` for a
   * frame of this device's memory, or TRANSLATE_MISS when no translation the driver holds allows
   * the access (none, or a read-only one for a write): the access stalls, a fault goes into the
   * fault buffer, and the access is replayed after `handleFaults`. Return a small integer and
   * allocate nothing: it runs once per access. It must not call the core or change mm state
   * (refused, EDEADLK). A translation must be what the CPU page table maps now (same frame; writable
   * only if the CPU entry is; device memory only for this device's device-private entries): runs
   * with `verifyTranslations` (the default) check every access and fail a device that returns a
   * stale or wrong frame (code DRIVER_STALE). Optional: a driver without it mirrors only, and
   * runDevice refuses its device (EOPNOTSUPP).
   */
  translate?(mmId: number, va: number, write: boolean): number;

  /**
   * The device's fault handler (a driver's fault-servicing thread, UVM's bottom half): service a
   * batch of faults the hardware raised, in arrival order, duplicates included. Decide what to
   * make valid (the page, its 2 MiB block, a prefetch window) and where (migrate or map remotely),
   * and call the core: `deviceFault`, `migrateToDevice`, `migrateToRam` or `evict` on your own
   * device (inject TOKENS.HmmCore; `HmmCore.device(DeviceContext.name)` is your Device). Cancel an
   * entry the core refused (`batch.cancel(i, errno)`): its access is cancelled instead of replayed.
   * After the return the hardware replays every stalled access; one that misses again faults
   * again (an invalidation may have come in between), and one still unserviced after
   * MAX_FAULT_ROUNDS rounds fails the device (code DRIVER_STUCK).
   *
   * Runs with nothing held, so core operations are allowed. Return nothing (the batch is done when
   * it returns), or a step generator (a `function*` using `yield* core.deviceFaultSteps(...)`)
   * which the core runs to completion and which lets the scheduler interleave other threads at
   * its preemption points. Optional: without it every entry is serviced by
   * `deviceFault(page, page + 4 KiB, write)`, one call per distinct page, cancelling what fails.
   */
  handleFaults?(batch: DeviceFaultBatch): void | Generator<string, void, void>;

  /**
   * Every translation the driver holds now, for coherence checks. Not on any hot path. A huge
   * translation may be reported once with order 9 or as 512 pages. At most one per page of the
   * VMAs of the address spaces the device is bound to, plus 1024 (TRANSLATIONS_MARGIN): a driver
   * yielding more (an endless iterator) fails (code DRIVER_LIMIT).
   */
  translations(): Iterable<DeviceTranslation>;
}

/** A driver class, constructed by the core through dependency injection (see tokens). */
export type DriverClass = new (...args: never[]) => HmmDriver;

/** How the core reports mirrored pages to a driver: mirrorPte per page, or mirrorPtes per leaf run. */
export type CallbackMode = "per-pte" | "array";

/** What a driver package exports (as `default` or `plugin`). */
export interface HmmPlugin {
  /** Short name, used in messages and stats (`gpu`, `iotlb`). */
  readonly name: string;
  /** The contract version the driver targets (semver), e.g. "1.0.0" or "^1.0.0". */
  readonly apiVersion: string;
  /** Which design the driver follows. */
  readonly design: DriverDesign;
  /** The driver class. Constructor parameters need explicit `@inject(TOKEN)` decorators. */
  readonly driver: DriverClass;
  /** One-line description. */
  readonly description?: string;
  /**
   * The device config keys the driver reads besides the core's own (name, memoryPages,
   * callbackMode, pmdCallback, evictOnPressure, compoundMigration, faultBuffer). Any other key in a DeviceConfig
   * is refused.
   */
  readonly configKeys?: readonly string[];
  /**
   * The mirror form `callbackMode: "auto"` (the default) picks for this plugin's devices when its
   * driver has both: "per-pte" (mirrorPte per page, the default) or "array" (mirrorPtes per leaf
   * run, the shape in which hmm_range_fault hands a kernel driver its range->hmm_pfns). A device
   * config's explicit callbackMode still wins.
   */
  readonly callbackMode?: CallbackMode;
}
