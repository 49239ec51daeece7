/**
 * Flags of one page as the HMM core reports it to drivers (per-PTE, huge and array callbacks) and
 * to snapshot callers. The names follow the kernel's HMM_PFN_* flags; the layout is hmmkit's own:
 * a 32-bit integer, so it travels as a plain number (the kernel packs its flags in the top bits of
 * a 64-bit pfn word, which JavaScript numbers cannot hold).
 */
import { ENTRY_DIRTY, ENTRY_WRITE, ENTRY_ZERO } from "@hmmkit/mm";

// Local copies: these helpers run per PTE in the device-fault walk, where an imported binding
// is a module-cell load at every use and a local `const` folds (see device-fault.ts).
const DIRTY = ENTRY_DIRTY;
const WRITE = ENTRY_WRITE;
const ZERO = ENTRY_ZERO;

/** The pfn is valid: the page may be read through it. */
export const HMM_PFN_VALID = 1 << 0;
/** The page may be written through it (implies VALID). */
export const HMM_PFN_WRITE = 1 << 1;
/** The page cannot be accessed: no VMA, or a PROT_NONE VMA (snapshot only; faults return an error instead). */
export const HMM_PFN_ERROR = 1 << 2;
/** The CPU entry is dirty. */
export const HMM_PFN_DIRTY = 1 << 3;
/** The pfn is a device pfn of the calling device's memory (the page was migrated there). */
export const HMM_PFN_DEVICE_PRIVATE = 1 << 4;
/** The pfn is the shared zero page, or with map order 9 the huge zero page (read-only; a write fault replaces it). */
export const HMM_PFN_ZERO = 1 << 5;
/**
 * The device was granted exclusive access (make_device_exclusive); the CPU's next access revokes
 * it. In a snapshot, a device-exclusive entry of the calling device carries its frame with
 * EXCLUSIVE and without VALID (hmm_range_fault reports such an entry as not valid: its
 * dmirror byte is NONE); an entry exclusive to another device is 0.
 */
export const HMM_PFN_EXCLUSIVE = 1 << 6;
/** Snapshot only: the page lives in another device's private memory (not VALID for this device). */
export const HMM_PFN_REMOTE_PRIVATE = 1 << 7;
/** Shift of the 5-bit map order field: the page is part of a mapping of 2^order pages (9 = a 2 MiB PMD). */
export const HMM_PFN_ORDER_SHIFT = 8;
/** Mask of the map order field after shifting. */
export const HMM_PFN_ORDER_MASK = 0x1f;

/** HMM flags (VALID, WRITE, DIRTY, ZERO) of a present, accessible CPU entry with flags word `f`. */
export function hmmFlagsOfPresent(f: number): number {
  return (
    HMM_PFN_VALID |
    (f & WRITE ? HMM_PFN_WRITE : 0) |
    (f & DIRTY ? HMM_PFN_DIRTY : 0) |
    (f & ZERO ? HMM_PFN_ZERO : 0)
  );
}

/** HMM flags (VALID, DEVICE_PRIVATE, WRITE) of a CPU device-private entry owned by the caller. */
export function hmmFlagsOfDevicePrivate(f: number): number {
  return HMM_PFN_VALID | HMM_PFN_DEVICE_PRIVATE | (f & WRITE ? HMM_PFN_WRITE : 0);
}

/** hmm_pfn_to_map_order: the map order of a flags word (0 for a 4 KiB PTE, 9 for a PMD). */
export function hmmPfnToMapOrder(flags: number): number {
  return (flags >>> HMM_PFN_ORDER_SHIFT) & HMM_PFN_ORDER_MASK;
}

/** Snapshot byte encoding of the kernel's test driver (HMM_DMIRROR_PROT_*). */
export const HMM_DMIRROR_PROT_ERROR = 0xff;
export const HMM_DMIRROR_PROT_NONE = 0x00;
export const HMM_DMIRROR_PROT_READ = 0x01;
export const HMM_DMIRROR_PROT_WRITE = 0x02;
export const HMM_DMIRROR_PROT_PMD = 0x04;
export const HMM_DMIRROR_PROT_PUD = 0x08;
export const HMM_DMIRROR_PROT_ZERO = 0x10;
export const HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL = 0x20;
export const HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE = 0x30;

/**
 * The HMM_DMIRROR_PROT_* byte for a snapshot flags word, as dmirror_mkentry builds it. Another
 * device's private page and a device-exclusive entry are not VALID for the caller and encode as
 * NONE, as in the kernel. ZERO is only for the 4 KiB zero page: dmirror_mkentry tests
 * is_zero_pfn(), which is false for the huge zero page, so a huge zero PMD (ZERO with map
 * order 9) encodes as READ|PMD (0x05), not ZERO|READ|PMD.
 */
export function hmmFlagsToProt(flags: number): number {
  if (flags & HMM_PFN_ERROR) return HMM_DMIRROR_PROT_ERROR;
  if (!(flags & HMM_PFN_VALID)) return HMM_DMIRROR_PROT_NONE;
  const order = hmmPfnToMapOrder(flags);
  let prot = 0;
  if (flags & HMM_PFN_DEVICE_PRIVATE) prot = HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL;
  else if (flags & HMM_PFN_ZERO && order === 0) prot = HMM_DMIRROR_PROT_ZERO;
  prot |= flags & HMM_PFN_WRITE ? HMM_DMIRROR_PROT_WRITE : HMM_DMIRROR_PROT_READ;
  if (order === 9) prot |= HMM_DMIRROR_PROT_PMD;
  return prot;
}

/** A readable list of the flags, for messages and traces ("VALID|WRITE|order=9"). */
export function describeHmmFlags(flags: number): string {
  const names: string[] = [];
  if (flags & HMM_PFN_VALID) names.push("VALID");
  if (flags & HMM_PFN_WRITE) names.push("WRITE");
  if (flags & HMM_PFN_ERROR) names.push("ERROR");
  if (flags & HMM_PFN_DIRTY) names.push("DIRTY");
  if (flags & HMM_PFN_DEVICE_PRIVATE) names.push("DEVICE_PRIVATE");
  if (flags & HMM_PFN_ZERO) names.push("ZERO");
  if (flags & HMM_PFN_EXCLUSIVE) names.push("EXCLUSIVE");
  if (flags & HMM_PFN_REMOTE_PRIVATE) names.push("REMOTE_PRIVATE");
  const order = hmmPfnToMapOrder(flags);
  if (order) names.push(`order=${order}`);
  return names.length ? names.join("|") : "NONE";
}
