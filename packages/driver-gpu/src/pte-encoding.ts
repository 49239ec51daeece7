/**
 * One device page-table entry in one Int32: `(pfn + 1) * 8 | EXCL | DEVICE | WRITE`, 0 for none.
 * The +1 keeps frame 0 distinct from "no entry"; the three low bits are what the device's
 * translation needs (may it write, is the frame in device memory) and what `translations` reports
 * (device-exclusive). A 2 MiB entry uses the same encoding with the first frame of the PMD.
 */
import { HMM_PFN_DEVICE_PRIVATE, HMM_PFN_EXCLUSIVE, HMM_PFN_WRITE, hmmPfnToMapOrder } from "@hmmkit/core";

/** The device may write through the entry. */
export const PTE_WRITE = 1;
/** The frame is a device pfn of this device's memory. */
export const PTE_DEVICE = 2;
/** The entry is device-exclusive (make_device_exclusive). */
export const PTE_EXCLUSIVE = 4;
/** Multiplier of `pfn + 1` (the three flag bits below it). */
export const PTE_PFN_MUL = 8;
/** Frames the encoding can hold: (pfn + 1) * 8 must stay a positive Int32. */
export const PTE_MAX_PFN = 2 ** 28 - 2;

// The shifts below move HMM_PFN_WRITE (bit 1), DEVICE_PRIVATE (bit 4) and EXCLUSIVE (bit 6) to
// bits 0, 1 and 2; checked once here, so the hot copies in device-table.ts can rely on them.
if (HMM_PFN_WRITE !== 2 || HMM_PFN_DEVICE_PRIVATE !== 16 || HMM_PFN_EXCLUSIVE !== 64)
  throw new Error("pte-encoding: the HMM_PFN_* bit layout changed");

/** The entry for frame `pfn` with HMM_PFN_* `flags`. The caller checks `pfn` is in range. */
export function encodePte(pfn: number, flags: number): number {
  return (pfn + 1) * 8 + (((flags >> 1) & 1) | ((flags >> 3) & 2) | ((flags >> 4) & 4));
}

/** The frame of entry `e` (non-zero). */
export function ptePfn(e: number): number {
  return (e >>> 3) - 1;
}

/** The map order of HMM_PFN_* flags (re-exported for the table's callers). */
export const mapOrder = hmmPfnToMapOrder;
