import {
  ENTRY_DEVICE_EXCLUSIVE,
  ENTRY_DEVICE_PRIVATE,
  ENTRY_KIND_MASK,
  ENTRY_OWNER_MASK,
  ENTRY_OWNER_SHIFT,
  ENTRY_PRESENT,
  ENTRY_PROTNONE,
  HPAGE_PMD_SIZE,
  type Mm,
  PAGE_SIZE,
} from "@hmmkit/mm";
import type { PmdSet } from "./pmd-set.js";

// Module-local copies of the entry encoding for the per-page loop (see device-fault.ts).
const DEVICE_EXCLUSIVE = ENTRY_DEVICE_EXCLUSIVE;
const DEVICE_PRIVATE = ENTRY_DEVICE_PRIVATE;
const KIND_MASK = ENTRY_KIND_MASK;
const OWNER_MASK = ENTRY_OWNER_MASK;
const OWNER_SHIFT = ENTRY_OWNER_SHIFT;
const PRESENT = ENTRY_PRESENT;
const PROTNONE = ENTRY_PROTNONE;

/** Pages per PMD (2 MiB / 4 KiB). */
const PTRS_PER_PMD = 512;

/**
 * True for a CPU entry whose page a device `owner` may hold a translation of: a present,
 * accessible page, or this device's own device-private or device-exclusive entry.
 */
function mirrorable(f: number, owner: number): boolean {
  const kind = f & KIND_MASK;
  if (kind === PRESENT) return (f & PROTNONE) === 0;
  if (kind === DEVICE_PRIVATE || kind === DEVICE_EXCLUSIVE)
    return ((f >>> OWNER_SHIFT) & OWNER_MASK) === owner;
  return false;
}

/** Mirrorable pages of [start, end), which lies inside one PMD. */
function countInPmd(mm: Mm, owner: number, start: number, end: number): number {
  const pt = mm.pt;
  const slot = pt.pmdSlot(start);
  if (slot < 0) return 0;
  const n = (end - start) / PAGE_SIZE;
  const leaf = pt.leafAt(slot);
  if (leaf < 0) return mirrorable(pt.pmdFlags[slot], owner) ? n : 0;
  const flags = pt.pteFlags;
  const base = leaf * PTRS_PER_PMD + (Math.floor(start / PAGE_SIZE) & (PTRS_PER_PMD - 1));
  let count = 0;
  for (let i = 0; i < n; i++) if (mirrorable(flags[base + i], owner)) count++;
  return count;
}

/**
 * How many pages of an invalidation of [start, end) device `owner` may have translations of,
 * counted without trusting the driver: pages inside the 2 MiB regions the core reported to this
 * device in `mm` (`reported` holds their PMD indices, va / 2 MiB) that the CPU page table maps now
 * (the invalidation has begun, the entries have not changed yet): present pages, and this
 * device's device-private and device-exclusive entries. An upper bound of what the driver drops,
 * and far from the range's size for the huge ranges of RELEASE and fork's PROTECTION_PAGE. The
 * work is per reported region, never per page of the range.
 */
export function countInvalidatedPages(
  mm: Mm,
  owner: number,
  reported: PmdSet,
  start: number,
  end: number,
): number {
  if (reported.size === 0) return 0;
  const first = Math.floor(start / HPAGE_PMD_SIZE);
  const last = Math.floor((end - 1) / HPAGE_PMD_SIZE);
  let count = 0;
  const one = (k: number) => {
    const a = Math.max(start, k * HPAGE_PMD_SIZE);
    const b = Math.min(end, (k + 1) * HPAGE_PMD_SIZE);
    count += countInPmd(mm, owner, a, b);
  };
  reported.forEachIn(first, last, one);
  return count;
}
