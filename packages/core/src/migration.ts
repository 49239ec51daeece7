import {
  alignDown,
  ENTRY_DEVICE_PRIVATE,
  ENTRY_KIND_MASK,
  entryOwner,
  HPAGE_PMD_NR,
  HPAGE_PMD_ORDER,
  HPAGE_PMD_SIZE,
  hex,
  MIGRATE_PFN_COMPOUND,
  MIGRATE_PFN_DEVICE,
  MIGRATE_PFN_MIGRATE,
  MIGRATE_PFN_VALID,
  MIGRATE_VMA_SELECT_COMPOUND,
  MIGRATE_VMA_SELECT_SYSTEM,
  MigrateVma,
  type Mm,
  migrateVmaFinalize,
  migrateVmaPages,
  migrateVmaSetup,
  PAGE_SIZE,
} from "@hmmkit/mm";
import type { Device } from "./device.js";
import { HmmError } from "./errors.js";
import { HMM_PFN_ORDER_SHIFT, hmmFlagsOfDevicePrivate } from "./flags.js";
import { mmapLock } from "./mmap-lock.js";
import { checkRange } from "./range.js";
import type { Steps } from "./scheduler.js";

/** What a migration did. */
export interface MigrateResult {
  /**
   * Pages selected for migration (holes included), as migrate_vma's cpages, except that a
   * compound entry (a whole PMD, with compoundMigration) counts its 512 pages where the kernel's
   * cpages counts it once.
   */
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
export function* pieces(mm: Mm, start: number, end: number, op: string): Generator<[number, number]> {
  let a = start;
  while (a < end) {
    const vma = mm.findVma(a);
    if (vma === null || !vma.readable) {
      const done = a > start ? `; [${hex(start)}, ${hex(a)}) was migrated` : "";
      const why = vma === null ? "no mapping at" : `PROT_NONE mapping ${vma} at`;
      throw new HmmError("EINVAL", `${op}: ${why} ${hex(a)}${done}`);
    }
    const pmdEnd = alignDown(a, HPAGE_PMD_SIZE) + HPAGE_PMD_SIZE;
    const next = Math.min(end, vma.end, pmdEnd);
    yield [a, next];
    a = next;
  }
}

/** MIGRATE_VMA_SELECT_COMPOUND when the device takes order-9 folios. */
export function compoundSelect(dev: Device): number {
  return dev.config.compoundMigration === true ? MIGRATE_VMA_SELECT_COMPOUND : 0;
}

/** Pages selected by a migrate_vma setup: a compound entry counts its 512 pages. */
export function selectedPages(args: MigrateVma): number {
  let n = 0;
  for (let i = 0; i < args.npages; i++) {
    const sf = args.srcFlags[i];
    if (sf & MIGRATE_PFN_MIGRATE) n += sf & MIGRATE_PFN_COMPOUND ? HPAGE_PMD_NR : 1;
  }
  return n;
}

/**
 * One device frame for a migration. An injected failure (`Device.failNextAlloc`) skips the page
 * as dmirror_migrate_alloc_and_copy does when dmirror_devmem_alloc_page fails
 * (HMM_DMIRROR_FLAG_FAIL_ALLOC): no eviction is tried. A full device evicts its oldest pages.
 */
function allocDevicePage(host: MigrationHost, dev: Device): number {
  const injected = dev.takeAllocFailure();
  let dpfn = injected ? -1 : dev.memory.alloc();
  if (dpfn < 0 && !injected && dev.config.evictOnPressure !== false && host.evictFor(dev))
    dpfn = dev.memory.alloc();
  return dpfn;
}

/**
 * An order-9 device folio. An injected failure fails it (the kernel test driver's huge
 * allocation failing: the caller falls back to base pages); when no block is free the oldest
 * folios are evicted first (a whole block goes home at once) and the allocation is tried again.
 */
function allocDeviceFolio(host: MigrationHost, dev: Device): number {
  if (dev.takeAllocFailure()) return -1;
  const mem = dev.memory;
  let head = mem.allocHuge();
  if (head < 0 && mem.freeBlockCount === 0 && dev.config.evictOnPressure !== false && host.evictFor(dev))
    head = mem.allocHuge();
  return head;
}

/**
 * The copy step for compound entry `i` at `va` (source frames from `spfn`, or -1 for a hole): an
 * order-9 device folio filled page by page with consecutive frames, or, when none can be
 * allocated, base pages for all 512 (dmirror's fallback: migrateVmaPages then splits the source).
 * Every allocated frame is put in `dst` before its copy, so a rollback frees it. False if the
 * driver failed.
 */
function copyCompoundToDevice(
  host: MigrationHost,
  dev: Device,
  mm: Mm,
  args: MigrateVma,
  i: number,
  va: number,
  spfn: number,
  res: MigrateResult,
): boolean {
  const disp = dev.dispatcher;
  const head = allocDeviceFolio(host, dev);
  if (head >= 0) {
    args.dst[i] = head;
    for (let j = 0; j < HPAGE_PMD_NR; j++)
      if (!disp.copyToDevice(mm.id, va + j * PAGE_SIZE, spfn < 0 ? -1 : spfn + j, head + j)) return false;
    args.dstFlags[i] = MIGRATE_PFN_VALID | MIGRATE_PFN_DEVICE | MIGRATE_PFN_COMPOUND;
    return true;
  }
  dev.stats.compoundFallbacks++;
  for (let j = 0; j < HPAGE_PMD_NR; j++) {
    const dpfn = allocDevicePage(host, dev);
    if (dpfn < 0) {
      res.allocFailed++;
      continue;
    }
    args.dst[i + j] = dpfn;
    if (!disp.copyToDevice(mm.id, va + j * PAGE_SIZE, spfn < 0 ? -1 : spfn + j, dpfn)) return false;
    args.dstFlags[i + j] = MIGRATE_PFN_VALID | MIGRATE_PFN_DEVICE;
  }
  return true;
}

function countToDevice(dev: Device, pages: number, zeroFilled: boolean): void {
  const stats = dev.stats;
  stats.migratedToDevice += pages;
  stats.bytesToDevice += pages * PAGE_SIZE;
  if (zeroFilled) stats.zeroFilledToDevice += pages;
  if (pages === HPAGE_PMD_NR) stats.compoundToDevice++;
}

/**
 * The HMM flags (VALID|DEVICE_PRIVATE[|WRITE], order 9) of the device-private PMD a compound
 * entry left at `va`, or 0 if it did not migrate as one (the PMD is not this device's folio).
 */
function migratedHugeFlags(dev: Device, mm: Mm, va: number, args: MigrateVma, i: number): number {
  if (args.dst[i] < 0 || !(args.srcFlags[i] & MIGRATE_PFN_MIGRATE)) return 0;
  const slot = devicePmdSlot(dev, mm, va);
  if (slot < 0 || mm.pt.pmdPfn[slot] !== args.dst[i]) return 0;
  return hmmFlagsOfDevicePrivate(mm.pt.pmdFlags[slot]) | (HPAGE_PMD_ORDER << HMM_PFN_ORDER_SHIFT);
}

/** The PMD slot at `va` if it holds a device-private PMD of `dev`, else -1. */
export function devicePmdSlot(dev: Device, mm: Mm, va: number): number {
  const pt = mm.pt;
  const slot = pt.pmdSlot(va);
  if (slot < 0 || pt.pmdChild[slot] !== 0) return -1;
  const f = pt.pmdFlags[slot];
  return (f & ENTRY_KIND_MASK) === ENTRY_DEVICE_PRIVATE && entryOwner(f) === dev.ownerId ? slot : -1;
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
  for (const [a, b] of pieces(mm, start, end, "migrate to device")) {
    if (dev.state !== "active") throw dev.failure ?? new HmmError("ENODEV", `device ${dev.name} was removed`);
    const args = new MigrateVma(mm, a, b, dev.ownerId, MIGRATE_VMA_SELECT_SYSTEM | compoundSelect(dev));
    migrateVmaSetup(args);
    res.selected += selectedPages(args);
    // From setup to finalize the pages are locked behind migration entries: whatever ends this
    // piece early (a driver failure, the device failing or being removed while preempted, an
    // exception, or the scheduler abandoning this thread) must restore every source.
    let done = false;
    try {
      yield "migrate:collected";
      // The device may have failed or been removed while this thread was preempted.
      let failed = dev.state !== "active";
      for (let i = 0; i < args.npages && !failed; i++) {
        const sf = args.srcFlags[i];
        if (!(sf & MIGRATE_PFN_MIGRATE)) continue;
        const va = a + i * PAGE_SIZE;
        const spfn = sf & MIGRATE_PFN_VALID ? args.src[i] : -1;
        if (sf & MIGRATE_PFN_COMPOUND) {
          failed = !copyCompoundToDevice(host, dev, mm, args, i, va, spfn, res);
          i += HPAGE_PMD_NR - 1;
          continue;
        }
        const dpfn = allocDevicePage(host, dev);
        if (dpfn < 0) {
          res.allocFailed++; // no room: this page stays in system memory
          continue;
        }
        args.dst[i] = dpfn;
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
    // Remember where each migrated device folio lives (for eviction, and for bringing it home if
    // the driver fails while the pages are reported), count it, and turn dstFlags into its HMM
    // flags: 0 for an entry that did not migrate.
    const pt = mm.pt;
    for (let i = 0; i < args.npages; i++) {
      const va = a + i * PAGE_SIZE;
      if (args.srcFlags[i] & MIGRATE_PFN_COMPOUND) {
        const flags = migratedHugeFlags(dev, mm, va, args, i);
        if (flags !== 0) {
          countToDevice(dev, HPAGE_PMD_NR, !(args.srcFlags[i] & MIGRATE_PFN_VALID));
          res.migrated += HPAGE_PMD_NR;
          dev.memory.noteInstalled(args.dst[i], mm.id, va);
        }
        args.dstFlags[i] = flags;
        i += HPAGE_PMD_NR - 1;
        continue;
      }
      let flags = 0;
      if (args.dst[i] >= 0 && args.srcFlags[i] & MIGRATE_PFN_MIGRATE) {
        const pos = pt.ptePos(va);
        if (
          pos >= 0 &&
          (pt.pteFlags[pos] & ENTRY_KIND_MASK) === ENTRY_DEVICE_PRIVATE &&
          entryOwner(pt.pteFlags[pos]) === dev.ownerId &&
          pt.ptePfn[pos] === args.dst[i]
        ) {
          countToDevice(dev, 1, !(args.srcFlags[i] & MIGRATE_PFN_VALID));
          res.migrated++;
          dev.memory.noteInstalled(args.dst[i], mm.id, va);
          flags = hmmFlagsOfDevicePrivate(pt.pteFlags[pos]);
        }
      }
      args.dstFlags[i] = flags;
    }
    // Then report them to the driver: a device-private PMD as one huge PMD (mirrorPmd, or 512
    // pages), other pages one run of consecutive migrated pages at a time.
    dev.bindings.get(mm.id)?.reported.add(Math.floor(a / HPAGE_PMD_SIZE));
    for (let i = 0; i < args.npages; ) {
      if (args.srcFlags[i] & MIGRATE_PFN_COMPOUND) {
        const va = a + i * PAGE_SIZE;
        if (args.dstFlags[i] !== 0 && !dev.dispatcher.mirrorPmd(mm.id, va, args.dst[i], args.dstFlags[i]))
          throw dev.dispatcher.failure!;
        i += HPAGE_PMD_NR;
        continue;
      }
      if (args.dstFlags[i] === 0) {
        i++;
        continue;
      }
      let j = i + 1;
      while (j < args.npages && args.dstFlags[j] !== 0 && !(args.srcFlags[j] & MIGRATE_PFN_COMPOUND)) j++;
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
