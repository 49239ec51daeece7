import {
  alignDown,
  ENTRY_DEVICE_PRIVATE,
  ENTRY_KIND_MASK,
  HPAGE_PMD_NR,
  HPAGE_PMD_SIZE,
  MIGRATE_PFN_COMPOUND,
  MIGRATE_PFN_MIGRATE,
  MIGRATE_PFN_VALID,
  MIGRATE_VMA_SELECT_DEVICE_PRIVATE,
  MigrateVma,
  type Mm,
  migrateVmaFinalize,
  migrateVmaPages,
  migrateVmaSetup,
  PAGE_SIZE,
  splitHugePmd,
  VM_FAULT_OK,
  VM_FAULT_SIGBUS,
} from "@hmmkit/mm";
import type { Device } from "./device.js";
import { compoundSelect, devicePmdSlot, type MigrateResult, pieces, selectedPages } from "./migration.js";
import { mmapLock } from "./mmap-lock.js";
import { checkRange } from "./range.js";
import type { Steps } from "./scheduler.js";

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
 * failed or was removed (the data must come home either way). A device-private PMD comes home
 * whole into a THP (`thp`, if the caller allocated one, else a new one), or page by page into
 * 4 KiB frames when no THP can be allocated. Pages for which no system frame can be allocated
 * stay on the device. `injectable`: an explicit migrateToRam, which consumes a failure injected
 * with `Device.failNextAlloc` (CPU faults, eviction and evacuation do not); for a device-private
 * PMD it fails the THP, and the pages come home one by one.
 */
export function migrateBack(
  dev: Device,
  mm: Mm,
  a: number,
  b: number,
  injectable = false,
  thp = -1,
): MigrateResult {
  const args = new MigrateVma(mm, a, b, dev.ownerId, MIGRATE_VMA_SELECT_DEVICE_PRIVATE | compoundSelect(dev));
  migrateVmaSetup(args);
  const selected = selectedPages(args);
  const pool = mm.machine.pool;
  let allocFailed = 0;
  for (let i = 0; i < args.npages; i++) {
    const sf = args.srcFlags[i];
    if (!(sf & MIGRATE_PFN_MIGRATE)) continue;
    const va = a + i * PAGE_SIZE;
    if (sf & MIGRATE_PFN_COMPOUND) {
      let head = thp;
      thp = -1;
      if (head < 0) head = injectable && dev.takeAllocFailure() ? -1 : pool.tryAllocHuge();
      for (let j = 0; j < HPAGE_PMD_NR; j++) {
        const spfn = head >= 0 ? head + j : pool.tryAllocPage();
        if (spfn < 0) {
          allocFailed++;
          continue;
        }
        copyHome(dev, mm, va + j * PAGE_SIZE, args.src[i] + j, spfn);
        if (head >= 0) continue;
        args.dst[i + j] = spfn;
        args.dstFlags[i + j] = MIGRATE_PFN_VALID;
      }
      if (head >= 0) {
        args.dst[i] = head;
        args.dstFlags[i] = MIGRATE_PFN_VALID | MIGRATE_PFN_COMPOUND;
      } else dev.stats.compoundFallbacks++;
      i += HPAGE_PMD_NR - 1;
      continue;
    }
    const spfn = injectable && dev.takeAllocFailure() ? -1 : pool.tryAllocPage();
    if (spfn < 0) {
      allocFailed++;
      continue;
    }
    copyHome(dev, mm, va, args.src[i], spfn);
    args.dst[i] = spfn;
    args.dstFlags[i] = MIGRATE_PFN_VALID;
  }
  if (thp >= 0) pool.put(thp); // nothing to bring home as a whole PMD after all
  migrateVmaPages(args);
  migrateVmaFinalize(args);
  let migrated = 0;
  for (let i = 0; i < args.npages; i++) {
    const sf = args.srcFlags[i];
    if (args.dst[i] < 0 || !(sf & MIGRATE_PFN_MIGRATE)) continue;
    if (sf & MIGRATE_PFN_COMPOUND) {
      migrated += HPAGE_PMD_NR;
      dev.stats.compoundToRam++;
      i += HPAGE_PMD_NR - 1;
    } else migrated++;
  }
  dev.stats.migratedToRam += migrated;
  dev.stats.bytesToRam += migrated * PAGE_SIZE;
  return { selected, migrated, allocFailed };
}

/** Copy device frame `dpfn` into system frame `spfn`: through the driver while it is healthy. */
function copyHome(dev: Device, mm: Mm, va: number, dpfn: number, spfn: number): void {
  if (dev.state !== "active" || !dev.dispatcher.copyFromDevice(mm.id, va, dpfn, spfn)) {
    dev.memory.content.copyTo(dpfn, mm.machine.pool.content, spfn);
  }
}

/**
 * dev_pagemap_ops.migrate_to_ram: the CPU touched `dev`'s private page at `va`. A page mapped by
 * a PTE comes home alone (as the kernel's test driver does). A device-private PMD
 * (do_huge_pmd_device_private) comes home whole into a new THP, mapped by a PMD again; if no THP
 * can be allocated, the PMD is split into 512 device-private PTEs and only the faulting page comes
 * home. Returns a VM_FAULT code: SIGBUS if the page could not come home (no system memory).
 */
export function migrateOnCpuFault(dev: Device, mm: Mm, va: number, dpfn: number): number {
  dev.stats.cpuFaultsOnDevicePages++;
  if (devicePmdSlot(dev, mm, va) >= 0) {
    const haddr = alignDown(va, HPAGE_PMD_SIZE);
    const thp = mm.machine.pool.tryAllocHuge();
    if (thp >= 0 && migrateBack(dev, mm, haddr, haddr + HPAGE_PMD_SIZE, false, thp).migrated > 0)
      return VM_FAULT_OK;
    // No THP (or the folio could not move whole): split the PMD, bring the one page home.
    if (thp < 0) dev.stats.compoundFallbacks++;
    const again = devicePmdSlot(dev, mm, va);
    if (again >= 0) splitHugePmd(mm, again, haddr);
  }
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
