import {
  ENTRY_DEVICE_PRIVATE,
  ENTRY_KIND_MASK,
  entryOwner,
  HPAGE_PMD_SIZE,
  hex,
  MIGRATE_PFN_DEVICE,
  MIGRATE_PFN_MIGRATE,
  MIGRATE_PFN_VALID,
  MIGRATE_VMA_SELECT_DEVICE_PRIVATE,
  MIGRATE_VMA_SELECT_SYSTEM,
  MigrateVma,
  type Mm,
  migrateVmaFinalize,
  migrateVmaPages,
  migrateVmaSetup,
  PAGE_SIZE,
  VM_FAULT_OK,
  VM_FAULT_SIGBUS,
} from "@hmmkit/mm";
import type { Device } from "./device.js";
import { HmmError } from "./errors.js";
import { hmmFlagsOfDevicePrivate } from "./flags.js";
import { mmapLock } from "./mmap-lock.js";
import { checkRange } from "./range.js";
import type { Steps } from "./scheduler.js";

/** What a migration did. */
export interface MigrateResult {
  /** Pages selected for migration (holes included), as migrate_vma's cpages. */
  selected: number;
  /** Pages that ended up migrated. */
  migrated: number;
  /**
   * Selected pages that stayed where they were because no destination frame could be allocated:
   * device memory full (eviction off, or nothing could be evicted), system memory full on the
   * way home, or a failure injected with `Device.failNextAlloc`. The other selected pages that
   * did not migrate lost a race (a CPU fault populated a hole meanwhile).
   */
  allocFailed: number;
}

/** Services the migration code needs from the core. */
export interface MigrationHost {
  /** Free at least one device frame of `dev` by evicting its oldest pages; false if none could be. */
  evictFor(dev: Device): boolean;
}

/**
 * Split [start, end) into pieces that stay inside one VMA and one PMD (migrate_vma works per VMA),
 * looked up lazily as the caller finishes each piece: a missing or unreadable VMA is EINVAL when
 * the loop reaches it, after the pieces before it migrated (lib/test_hmm.c's
 * dmirror_migrate_to_device and dmirror_migrate_to_system check vma_lookup and VM_READ per
 * iteration and return -EINVAL there, keeping what they already moved).
 */
function* pieces(mm: Mm, start: number, end: number, op: string): Generator<[number, number]> {
  let a = start;
  while (a < end) {
    const vma = mm.findVma(a);
    if (vma === null || !vma.readable) {
      const done = a > start ? `; [${hex(start)}, ${hex(a)}) was migrated` : "";
      const why = vma === null ? "no mapping at" : `PROT_NONE mapping ${vma} at`;
      throw new HmmError("EINVAL", `${op}: ${why} ${hex(a)}${done}`);
    }
    const pmdEnd = a - (a % HPAGE_PMD_SIZE) + HPAGE_PMD_SIZE;
    const next = Math.min(end, vma.end, pmdEnd);
    yield [a, next];
    a = next;
  }
}

/**
 * Migrate [start, end) of `mm` to `dev`'s memory, as the kernel's test driver does with
 * migrate_vma: per VMA and PMD-sized piece, setup (MIGRATE invalidation owned by the device,
 * migration entries), a preemption point, a device frame and a `copyToDevice` per selected page
 * (holes and the zero page are zero-filled), another preemption point, then pages + finalize:
 * device-private entries replace the migration entries. Migrated pages are then reported to the
 * driver through its mirror callbacks. A VMA that is missing or not readable gives EINVAL when the
 * loop reaches it; the pieces before it stay migrated and reported. If the
 * driver fails, or the device fails or is removed during a preemption point, the piece in flight
 * is rolled back (every source restored) and the device's DriverError (or ENODEV) is thrown.
 */
export function* migrateToDeviceSteps(
  host: MigrationHost,
  dev: Device,
  mm: Mm,
  start: number,
  end: number,
): Steps<MigrateResult> {
  checkRange("migrate to device", start, end);
  const lock = mmapLock(mm);
  yield* lock.read();
  try {
    return yield* migrateToDeviceLocked(host, dev, mm, start, end);
  } finally {
    lock.readUnlock();
  }
}

function* migrateToDeviceLocked(
  host: MigrationHost,
  dev: Device,
  mm: Mm,
  start: number,
  end: number,
): Steps<MigrateResult> {
  const res: MigrateResult = { selected: 0, migrated: 0, allocFailed: 0 };
  const stats = dev.stats;
  for (const [a, b] of pieces(mm, start, end, "migrate to device")) {
    if (dev.state !== "active") throw dev.failure ?? new HmmError("ENODEV", `device ${dev.name} was removed`);
    const args = new MigrateVma(mm, a, b, dev.ownerId, MIGRATE_VMA_SELECT_SYSTEM);
    migrateVmaSetup(args);
    res.selected += args.cpages;
    // From setup to finalize the pages are locked behind migration entries: whatever ends this
    // piece early (a driver failure, the device failing or being removed while preempted, an
    // exception, or the scheduler abandoning this thread) must restore every source.
    let done = false;
    try {
      yield "migrate:collected";
      // The device may have failed or been removed while this thread was preempted.
      let failed = dev.state !== "active";
      for (let i = 0; i < args.npages && !failed; i++) {
        if (!(args.srcFlags[i] & MIGRATE_PFN_MIGRATE)) continue;
        // An injected failure skips the page as dmirror_migrate_alloc_and_copy does when
        // dmirror_devmem_alloc_page fails (HMM_DMIRROR_FLAG_FAIL_ALLOC): no eviction is tried.
        const injected = dev.takeAllocFailure();
        let dpfn = injected ? -1 : dev.memory.alloc();
        if (dpfn < 0 && !injected && dev.config.evictOnPressure !== false && host.evictFor(dev))
          dpfn = dev.memory.alloc();
        if (dpfn < 0) {
          res.allocFailed++; // no room: this page stays in system memory
          continue;
        }
        args.dst[i] = dpfn;
        const va = a + i * PAGE_SIZE;
        const spfn = args.srcFlags[i] & MIGRATE_PFN_VALID ? args.src[i] : -1;
        if (!dev.dispatcher.copyToDevice(mm.id, va, spfn, dpfn)) {
          failed = true;
          break;
        }
        args.dstFlags[i] = MIGRATE_PFN_VALID | MIGRATE_PFN_DEVICE;
      }
      yield "migrate:copied";
      if (failed || dev.state !== "active")
        throw (
          dev.failure ?? dev.dispatcher.failure ?? new HmmError("ENODEV", `device ${dev.name} was removed`)
        );
      migrateVmaPages(args);
      migrateVmaFinalize(args);
      done = true;
    } finally {
      // The driver failed mid-copy, or the device failed or was removed meanwhile (its pagemap
      // may be gone): nothing of this piece migrates; every source is restored.
      if (!done) rollback(dev, args);
    }
    // Remember where each migrated device frame lives (for eviction, and for bringing it home if
    // the driver fails while the pages are reported), count it, and turn dstFlags into its HMM
    // flags: 0 for an entry that did not migrate.
    const pt = mm.pt;
    for (let i = 0; i < args.npages; i++) {
      let flags = 0;
      if (args.dst[i] >= 0 && args.srcFlags[i] & MIGRATE_PFN_MIGRATE) {
        const va = a + i * PAGE_SIZE;
        const pos = pt.ptePos(va);
        if (
          pos >= 0 &&
          (pt.pteFlags[pos] & ENTRY_KIND_MASK) === ENTRY_DEVICE_PRIVATE &&
          entryOwner(pt.pteFlags[pos]) === dev.ownerId &&
          pt.ptePfn[pos] === args.dst[i]
        ) {
          stats.migratedToDevice++;
          stats.bytesToDevice += PAGE_SIZE;
          if (!(args.srcFlags[i] & MIGRATE_PFN_VALID)) stats.zeroFilledToDevice++;
          res.migrated++;
          dev.memory.noteInstalled(args.dst[i], mm.id, va);
          flags = hmmFlagsOfDevicePrivate(pt.pteFlags[pos]);
        }
      }
      args.dstFlags[i] = flags;
    }
    // Then report them to the driver, one run of consecutive migrated pages at a time.
    dev.bindings.get(mm.id)?.reported.add(Math.floor(a / HPAGE_PMD_SIZE));
    for (let i = 0; i < args.npages; ) {
      if (args.dstFlags[i] === 0) {
        i++;
        continue;
      }
      let j = i + 1;
      while (j < args.npages && args.dstFlags[j] !== 0) j++;
      if (!dev.dispatcher.mirrorRange(mm.id, a + i * PAGE_SIZE, j - i, args.dst, i, args.dstFlags, i)) {
        throw dev.dispatcher.failure!;
      }
      i = j;
    }
  }
  return res;
}

/** Undo a piece of migration to the device: free its device frames and restore every source. */
function rollback(dev: Device, args: MigrateVma): void {
  for (let i = 0; i < args.npages; i++) {
    if (args.dst[i] >= 0) dev.memory.put(args.dst[i]);
    args.dst[i] = -1;
    args.dstFlags[i] = 0;
  }
  migrateVmaPages(args);
  migrateVmaFinalize(args);
}

/**
 * Bring pages of [start, end) that live in `dev`'s memory back to system memory (the test
 * driver's MIGRATE_TO_SYS), copying each with the driver's `copyFromDevice`. Returns how many
 * moved.
 */
export function* migrateToRamSteps(dev: Device, mm: Mm, start: number, end: number): Steps<MigrateResult> {
  checkRange("migrate to RAM", start, end);
  const res: MigrateResult = { selected: 0, migrated: 0, allocFailed: 0 };
  const lock = mmapLock(mm);
  yield* lock.read();
  try {
    for (const [a, b] of pieces(mm, start, end, "migrate to RAM")) {
      const r = migrateBack(dev, mm, a, b, true);
      res.selected += r.selected;
      res.migrated += r.migrated;
      res.allocFailed += r.allocFailed;
      yield "migrate:to-ram";
    }
  } finally {
    lock.readUnlock();
  }
  return res;
}

/**
 * Migrate this device's private pages in [a, b) (one VMA) back to new system frames. Copies with
 * the driver's copyFromDevice while the device is healthy; with the core's own copy once it
 * failed or was removed (the data must come home either way). Pages for which no system frame
 * can be allocated stay on the device. `injectable`: an explicit migrateToRam, which consumes a
 * failure injected with `Device.failNextAlloc` (CPU faults, eviction and evacuation do not).
 */
export function migrateBack(dev: Device, mm: Mm, a: number, b: number, injectable = false): MigrateResult {
  const args = new MigrateVma(mm, a, b, dev.ownerId, MIGRATE_VMA_SELECT_DEVICE_PRIVATE);
  migrateVmaSetup(args);
  const pool = mm.machine.pool;
  let allocFailed = 0;
  for (let i = 0; i < args.npages; i++) {
    if (!(args.srcFlags[i] & MIGRATE_PFN_MIGRATE)) continue;
    const spfn = injectable && dev.takeAllocFailure() ? -1 : pool.tryAllocPage();
    if (spfn < 0) {
      allocFailed++;
      continue;
    }
    const dpfn = args.src[i];
    const va = a + i * PAGE_SIZE;
    if (dev.state !== "active" || !dev.dispatcher.copyFromDevice(mm.id, va, dpfn, spfn)) {
      dev.memory.content.copyTo(dpfn, pool.content, spfn);
    }
    args.dst[i] = spfn;
    args.dstFlags[i] = MIGRATE_PFN_VALID;
  }
  migrateVmaPages(args);
  migrateVmaFinalize(args);
  let migrated = 0;
  for (let i = 0; i < args.npages; i++)
    if (args.dst[i] >= 0 && args.srcFlags[i] & MIGRATE_PFN_MIGRATE) migrated++;
  dev.stats.migratedToRam += migrated;
  dev.stats.bytesToRam += migrated * PAGE_SIZE;
  return { selected: args.cpages, migrated, allocFailed };
}

/**
 * dev_pagemap_ops.migrate_to_ram: the CPU touched `dev`'s private page at `va`. Migrates that one
 * page home (as the kernel's test driver does) and returns a VM_FAULT code: SIGBUS if it could
 * not (no system memory).
 */
export function migrateOnCpuFault(dev: Device, mm: Mm, va: number, dpfn: number): number {
  dev.stats.cpuFaultsOnDevicePages++;
  const r = migrateBack(dev, mm, va, va + PAGE_SIZE);
  if (r.migrated === 1) return VM_FAULT_OK;
  // Someone else may have migrated it meanwhile; the retried access will tell.
  const pos = mm.pt.ptePos(va);
  const still =
    pos >= 0 &&
    (mm.pt.pteFlags[pos] & ENTRY_KIND_MASK) === ENTRY_DEVICE_PRIVATE &&
    mm.pt.ptePfn[pos] === dpfn;
  return still ? VM_FAULT_SIGBUS : VM_FAULT_OK;
}
