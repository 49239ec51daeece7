/**
 * One device page-table entry in one Int32: `pfn * 16 | EXCL | DEVICE | WRITE | PRESENT`, 0 for
 * none. The four low bits are what the device's translation needs (is there an entry, may it
 * write, is the frame in device memory) and what `translations` reports (device-exclusive). A
 * 2 MiB entry is one of these, with the first frame of the PMD (the entry of its page i is the
 * block's entry plus i * PTE_PFN_MUL); the table's inspection calls (entryAt, blockEntriesInto)
 * report 4 KiB entries in it too, though a leaf keeps each page's frame and flag byte apart.
 */
import {
  HMM_PFN_DEVICE_PRIVATE,
  HMM_PFN_EXCLUSIVE,
  HMM_PFN_VALID,
  HMM_PFN_WRITE,
  hmmPfnToMapOrder,
} from "@hmmkit/core";

/** The entry is present (never 0, even for frame 0). */
export const PTE_PRESENT = 1;
/** The device may write through the entry. */
export const PTE_WRITE = 2;
/** The frame is a device pfn of this device's memory. */
export const PTE_DEVICE = 4;
/** The entry is device-exclusive (make_device_exclusive). */
export const PTE_EXCLUSIVE = 8;
/** Multiplier of the pfn (the four flag bits below it). */
export const PTE_PFN_MUL = 16;
/** Frames the encoding can hold: pfn * 16 must stay a positive Int32. */
export const PTE_MAX_PFN = 2 ** 27 - 1;

// The shifts below keep HMM_PFN_WRITE (bit 1) and move DEVICE_PRIVATE (bit 4) and EXCLUSIVE
// (bit 6) to bits 2 and 3; checked once here, so the hot copies in device-table.ts can rely on
// them.
if (HMM_PFN_WRITE !== 2 || HMM_PFN_DEVICE_PRIVATE !== 16 || HMM_PFN_EXCLUSIVE !== 64)
  throw new Error("pte-encoding: the HMM_PFN_* bit layout changed");

/** The flag bits of an entry for HMM_PFN_* `flags`. */
export function pteBits(flags: number): number {
  return PTE_PRESENT | (flags & 2) | ((flags >> 2) & 4) | ((flags >> 3) & 8);
}

/** The HMM_PFN_* flags an entry's bits stand for (VALID, WRITE, DEVICE_PRIVATE, EXCLUSIVE). */
export function pteHmmFlags(e: number): number {
  return (
    HMM_PFN_VALID |
    (e & PTE_WRITE ? HMM_PFN_WRITE : 0) |
    (e & PTE_DEVICE ? HMM_PFN_DEVICE_PRIVATE : 0) |
    (e & PTE_EXCLUSIVE ? HMM_PFN_EXCLUSIVE : 0)
  );
}

/** The entry for frame `pfn` with HMM_PFN_* `flags`. The caller checks `pfn` is in range. */
export function encodePte(pfn: number, flags: number): number {
  return pfn * PTE_PFN_MUL + pteBits(flags);
}

/** The frame of entry `e` (non-zero). */
export function ptePfn(e: number): number {
  return e >>> 4;
}

/** The map order of HMM_PFN_* flags (re-exported for the table's callers). */
export const mapOrder = hmmPfnToMapOrder;
