/** Counters of one device (and, summed, of the whole core). All cumulative. */
export class DeviceStats {
  /** Device fault requests (deviceFault calls). */
  deviceFaults = 0;
  /** Of those, the ones a fault handler made while servicing a batch of the access path. */
  batchedDeviceFaults = 0;
  /** Walk-and-commit rounds (one per PMD-sized chunk of a fault, retries included). */
  faultChunks = 0;
  /** Pages reported to the driver by fault commits. */
  pagesMirrored = 0;
  /** Per-PTE callbacks made. */
  pteCallbacks = 0;
  /** mirrorPmd (whole PMD) callbacks made. */
  pmdCallbacks = 0;
  /** Array callbacks made. */
  arrayCallbacks = 0;
  /** CPU page faults the core ran on the device's behalf (handle_mm_fault with FAULT_FLAG_REMOTE). */
  cpuFaultsForDevice = 0;
  /** CPU faults that hit this device's private pages (migrated back to RAM). */
  cpuFaultsOnDevicePages = 0;
  /** invalidate callbacks delivered to the driver. */
  invalidations = 0;
  /**
   * Pages those callbacks may have dropped, counted without trusting the driver: pages of the
   * invalidated range inside the 2 MiB regions the core reported to this device in that address
   * space, mapped by the CPU page table when the invalidation began (present pages, and this
   * device's device-private and device-exclusive entries). Not the range's size: a process exit
   * (RELEASE over all of user space) or a fork (PROTECTION_PAGE over every VMA) counts what the
   * device could hold there, not 2^35 pages. The cost model charges `invalidatePageNs` per page.
   */
  invalidatedPages = 0;
  /** Pages migrated to device memory. */
  migratedToDevice = 0;
  /** Bytes copied to device memory (4 KiB per page, zero-fills included). */
  bytesToDevice = 0;
  /** Pages of those that were zero-filled rather than copied (holes and the zero page). */
  zeroFilledToDevice = 0;
  /** Pages migrated back to system memory. */
  migratedToRam = 0;
  /** Bytes copied back to system memory. */
  bytesToRam = 0;
  /** Whole PMDs migrated to device memory as one order-9 device folio (compoundMigration). */
  compoundToDevice = 0;
  /** Device-private PMDs brought home whole as a THP. */
  compoundToRam = 0;
  /** Compound migrations that fell back to base pages (no free order-9 block, or no THP at home). */
  compoundFallbacks = 0;
  /** Pages evicted from device memory to make room. */
  evictions = 0;
  /** Fault chunks retried because an invalidation overlapped them (or a migration was in flight). */
  retries = 0;
  /** Driver callbacks that threw (the device was failed and detached). */
  driverFailures = 0;
  /** Pages made device-exclusive. */
  exclusivePages = 0;
  /** Snapshot walks. */
  snapshots = 0;

  // ---- the device access path (HmmCore.runDevice); counted by the core ----------------------
  /** Device accesses completed (reads, writes and atomics; replays are not counted again). */
  accesses = 0;
  /** Translations asked of the driver that hit (first tries and replays). */
  translationHits = 0;
  /** Translations that missed (each raised a fault into the fault buffer). */
  translationMisses = 0;
  /** Faults raised into the fault buffer (one per stalled access per round, duplicates included). */
  accessFaults = 0;
  /** Fault batches handed to the driver's handleFaults. */
  faultBatches = 0;
  /** Stalled accesses replayed after a batch. */
  replays = 0;
  /** Accesses cancelled: their fault was cancelled by the driver, or the device failed. */
  fatalFaults = 0;
  /** Accesses that went to a system frame (over the bus). */
  remoteAccesses = 0;
  /** Accesses that went to a frame of the device's own memory. */
  localAccesses = 0;

  // ---- counted by the driver (same names for every driver) --------------------------------
  /** Device TLB or mirror flushes the driver did (whole-structure or per-range, one per flush). */
  tlbFlushes = 0;
  /** Translations (4 KiB pages) the driver dropped because of invalidations. */
  pagesDropped = 0;
  /** Pages the driver faulted or migrated beyond the faulting ones (prefetch). */
  prefetchedPages = 0;
  /** Bytes of the driver's own mirror structures (page tables, TLB) now. */
  mirrorBytes = 0;
  /** Highest `mirrorBytes` seen. */
  mirrorBytesPeak = 0;

  /** Set `mirrorBytes` (and raise `mirrorBytesPeak` to it). */
  setMirrorBytes(bytes: number): void {
    this.mirrorBytes = bytes;
    if (bytes > this.mirrorBytesPeak) this.mirrorBytesPeak = bytes;
  }

  /** Add every counter of `o` into this one. */
  add(o: DeviceStats): void {
    for (const k of Object.keys(o) as (keyof DeviceStats)[]) {
      const v = o[k];
      if (typeof v === "number") (this as Record<string, unknown>)[k] = (this[k] as number) + v;
    }
  }

  /** A plain copy. */
  snapshot(): Record<string, number> {
    return { ...this } as unknown as Record<string, number>;
  }
}

/** Statistics of the HMM core: one DeviceStats per device (by name), and their sum. */
export class HmmStats {
  readonly devices = new Map<string, DeviceStats>();

  /** The counters of device `name` (created on first use). */
  device(name: string): DeviceStats {
    let s = this.devices.get(name);
    if (s === undefined) {
      s = new DeviceStats();
      this.devices.set(name, s);
    }
    return s;
  }

  /** The sum over all devices. */
  total(): DeviceStats {
    const t = new DeviceStats();
    for (const s of this.devices.values()) t.add(s);
    return t;
  }
}
