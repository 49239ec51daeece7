import { HPAGE_PMD_SIZE, type Machine, type Mm, PAGE_SIZE } from "@hmmkit/mm";
import type { Device } from "./device.js";
import { findDeviceFolio } from "./device-rmap.js";
import { migrateBack } from "./migrate-to-ram.js";

/** Where the folio headed by `dpfn` is mapped now (see findDeviceFolio). */
export function findInstalled(machine: Machine, dev: Device, dpfn: number): { mm: Mm; va: number } | null {
  return findDeviceFolio(machine, dev, dpfn);
}

/** Bring the folio headed by `dpfn` home from wherever it is mapped; returns the pages moved. */
export function migrateFolioHome(machine: Machine, dev: Device, dpfn: number): number {
  const at = findInstalled(machine, dev, dpfn);
  if (at === null) return 0;
  if (!dev.memory.isHuge(dpfn)) return migrateBack(dev, at.mm, at.va, at.va + PAGE_SIZE).migrated;
  // The whole 2 MiB, VMA by VMA (a partial munmap or mprotect may have cut it).
  let moved = 0;
  const end = at.va + HPAGE_PMD_SIZE;
  for (let a = at.va; a < end; ) {
    const vma = at.mm.vmas.findFrom(a);
    if (vma === null || vma.start >= end) break;
    const s = Math.max(a, vma.start);
    const b = Math.min(end, vma.end);
    moved += migrateBack(dev, at.mm, s, b).migrated;
    a = b;
  }
  return moved;
}

/**
 * Evict `dev`'s oldest folios to system memory until at least `npages` pages moved (see
 * HmmCore.evict; the arguments are checked there); returns how many moved.
 */
export function evictOldest(machine: Machine, dev: Device, npages: number): number {
  let moved = 0;
  for (const dpfn of dev.memory.oldestInUse(npages)) {
    if (moved >= npages) break;
    const r = migrateFolioHome(machine, dev, dpfn);
    moved += r;
    dev.stats.evictions += r;
  }
  return moved;
}

/** Bring every page of `dev` home (used on removal and failure). */
export function evacuate(machine: Machine, dev: Device): void {
  for (let guard = 0; guard < 4 && dev.memory.used > 0; guard++) {
    for (const dpfn of dev.memory.oldestInUse(dev.memory.npages)) migrateFolioHome(machine, dev, dpfn);
  }
}

/** How many of `dev`'s folios are still mapped somewhere (after evacuate: the ones that could not come home). */
export function countInstalled(machine: Machine, dev: Device): number {
  let n = 0;
  for (const dpfn of dev.memory.oldestInUse(dev.memory.npages))
    if (findInstalled(machine, dev, dpfn) !== null) n++;
  return n;
}
