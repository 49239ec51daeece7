import {
  ENTRY_DEVICE_EXCLUSIVE,
  ENTRY_DEVICE_PRIVATE,
  ENTRY_KIND_MASK,
  ENTRY_PRESENT,
  ENTRY_PROTNONE,
  ENTRY_WRITE,
  entryOwner,
  hex,
  type Mm,
} from "@hmmkit/mm";

// Module-local copies of the entry encoding for the per-access check (see device-fault.ts).
const KIND_MASK = ENTRY_KIND_MASK;
const PRESENT = ENTRY_PRESENT;
const DEVICE_PRIVATE = ENTRY_DEVICE_PRIVATE;
const DEVICE_EXCLUSIVE = ENTRY_DEVICE_EXCLUSIVE;
const PROTNONE = ENTRY_PROTNONE;
const WRITE = ENTRY_WRITE;

/**
 * The contract's coherence promise, checked at one access (HmmCore.runDevice with
 * verifyTranslations): null if translate result `r` of device `ownerId` for `va` agrees with the CPU
 * page table of `mm` now (the same frame; writable only where the CPU entry is; device memory only
 * for this device's device-private entries), else what is wrong.
 */
export function checkTranslation(
  mm: Mm,
  ownerId: number,
  va: number,
  write: boolean,
  r: number,
): string | null {
  const pt = mm.pt;
  const slot = pt.pmdSlot(va);
  let flags = 0;
  let pfn = -1;
  if (slot >= 0) {
    const leaf = pt.leafAt(slot);
    const index = Math.floor(va / 4096) & 511;
    if (leaf < 0) {
      flags = pt.pmdFlags[slot];
      pfn = pt.pmdPfn[slot] + index;
    } else {
      flags = pt.pteFlags[leaf * 512 + index];
      pfn = pt.ptePfn[leaf * 512 + index];
    }
  }
  const kind = flags & KIND_MASK;
  // The common case first, without building any string.
  if (kind === PRESENT && (flags & PROTNONE) === 0) {
    if (r === pfn && (!write || (flags & WRITE) !== 0)) return null;
  } else if ((kind === DEVICE_PRIVATE || kind === DEVICE_EXCLUSIVE) && entryOwner(flags) === ownerId) {
    if (r === (kind === DEVICE_PRIVATE ? -2 - pfn : pfn) && (!write || (flags & WRITE) !== 0)) return null;
  }
  return staleWhy(ownerId, va, write, r, kind, flags, pfn);
}

/** What is wrong with translate result `r` for `va`, given the CPU entry (kind, flags, pfn). */
function staleWhy(
  ownerId: number,
  va: number,
  write: boolean,
  r: number,
  kind: number,
  flags: number,
  pfn: number,
): string {
  const what = write ? "write" : "read";
  const got = r >= 0 ? `system pfn ${r}` : `device pfn ${-2 - r}`;
  const own = (kind === DEVICE_PRIVATE || kind === DEVICE_EXCLUSIVE) && entryOwner(flags) === ownerId;
  if (kind === PRESENT && (flags & PROTNONE) === 0) {
    if (r !== pfn)
      return `the device's ${what} translation of ${hex(va)} is ${got}, but the CPU maps system pfn ${pfn}: a stale translation`;
    return `the device may write ${hex(va)}, but the CPU entry (pfn ${pfn}) is read-only: a stale or over-permissive translation`;
  }
  if (own) {
    if (r !== (kind === DEVICE_PRIVATE ? -2 - pfn : pfn))
      return `the device's ${what} translation of ${hex(va)} is ${got}, but the CPU entry is this device's ${kind === DEVICE_PRIVATE ? `device-private entry for device pfn ${pfn}` : `exclusive entry for system pfn ${pfn}`}: a stale translation`;
    return `the device may write ${hex(va)}, but the CPU entry is read-only: a stale or over-permissive translation`;
  }
  return `the device's ${what} translation of ${hex(va)} is ${got}, but the CPU page table has no ${kind === 0 ? "entry" : "entry this device may use"} there: a stale translation (it should have been dropped by invalidate)`;
}

/** Whether the CPU entry for `va` in `mm` is a device-exclusive entry of device `ownerId`. */
export function isOwnExclusive(mm: Mm, ownerId: number, va: number): boolean {
  const pt = mm.pt;
  const slot = pt.pmdSlot(va);
  if (slot < 0) return false;
  const leaf = pt.leafAt(slot);
  const flags = leaf < 0 ? pt.pmdFlags[slot] : pt.pteFlags[leaf * 512 + (Math.floor(va / 4096) & 511)];
  return (flags & KIND_MASK) === DEVICE_EXCLUSIVE && entryOwner(flags) === ownerId;
}
