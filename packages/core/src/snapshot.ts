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
  PAGE_SIZE,
  PageTableCursor,
  SEG_HUGE,
  SEG_TABLE,
} from "@hmmkit/mm";
import { HmmError } from "./errors.js";
import {
  HMM_PFN_ERROR,
  HMM_PFN_EXCLUSIVE,
  HMM_PFN_ORDER_SHIFT,
  HMM_PFN_REMOTE_PRIVATE,
  HMM_PFN_WRITE,
  hmmFlagsOfDevicePrivate,
  hmmFlagsOfPresent,
} from "./flags.js";
import { checkRange } from "./range.js";

// Module-local copies of the entry encoding for the per-page loop (see device-fault.ts).
const DEVICE_EXCLUSIVE = ENTRY_DEVICE_EXCLUSIVE;
const DEVICE_PRIVATE = ENTRY_DEVICE_PRIVATE;
const KIND_MASK = ENTRY_KIND_MASK;
const PRESENT = ENTRY_PRESENT;
const PROTNONE = ENTRY_PROTNONE;
const WRITE = ENTRY_WRITE;

/**
 * Most pages one snapshot call may cover: 2^20 (4 GiB of address space, 8 MiB of result arrays).
 * Snapshot a larger range in pieces.
 */
export const SNAPSHOT_MAX_PAGES = 2 ** 20;

/** EINVAL if [start, end) has more than SNAPSHOT_MAX_PAGES pages. */
export function checkSnapshotSize(op: string, start: number, end: number): void {
  const n = (end - start) / PAGE_SIZE;
  if (n > SNAPSHOT_MAX_PAGES)
    throw new HmmError(
      "EINVAL",
      `${op}: [${hex(start)}, ${hex(end)}) is ${n} pages, more than the ${SNAPSHOT_MAX_PAGES} one call may cover (${(SNAPSHOT_MAX_PAGES * PAGE_SIZE) / 2 ** 30} GiB): snapshot it in pieces`,
      "RANGE_TOO_LARGE",
    );
}

/** A snapshot of a range: per page, the frame (or -1) and the HMM_PFN_* flags. */
export interface RangeSnapshot {
  readonly start: number;
  readonly pfns: Int32Array;
  readonly flags: Int32Array;
}

/**
 * hmm_range_fault without HMM_PFN_REQ_FAULT: report the CPU page table of [start, end) as device
 * `owner` would see it, faulting nothing. Per page: ERROR outside any VMA or in a PROT_NONE VMA;
 * 0 for none and migration entries; VALID (+WRITE, DIRTY, ZERO, order 9 under a huge PMD) for
 * present pages; VALID|DEVICE_PRIVATE for the owner's own device-private pages (order 9 under a
 * device-private PMD); REMOTE_PRIVATE (not VALID) for another device's; EXCLUSIVE with the frame
 * (not VALID) for an entry exclusive to the owner, 0 for one exclusive to another device.
 */
export function snapshotRange(mm: Mm, owner: number, start: number, end: number): RangeSnapshot {
  checkRange("snapshot", start, end);
  checkSnapshotSize("snapshot", start, end);
  const n = (end - start) / PAGE_SIZE;
  const pfns = new Int32Array(n).fill(-1);
  const flags = new Int32Array(n);
  // VMA coverage first: pages outside a VMA, or in a PROT_NONE one, are errors.
  for (let i = 0; i < n; ) {
    const va = start + i * PAGE_SIZE;
    const vma = mm.findVma(va);
    if (vma === null) {
      flags[i++] = HMM_PFN_ERROR;
      continue;
    }
    const stop = Math.min(n, (vma.end - start) / PAGE_SIZE);
    if (!vma.readable) for (; i < stop; i++) flags[i] = HMM_PFN_ERROR;
    else i = stop;
  }
  const pt = mm.pt;
  const cur = new PageTableCursor(pt).reset(start, end);
  while (cur.next()) {
    const i0 = (cur.addr - start) / PAGE_SIZE;
    if (cur.kind === SEG_HUGE) {
      const f = cur.flags;
      const kind = f & KIND_MASK;
      if (kind === DEVICE_PRIVATE) {
        // hmm_vma_handle_absent_pmd: the owner's device-private PMD, every page with the PMD order.
        const own = entryOwner(f) === owner;
        const df = own ? hmmFlagsOfDevicePrivate(f) | (9 << HMM_PFN_ORDER_SHIFT) : HMM_PFN_REMOTE_PRIVATE;
        for (let i = 0; i < cur.count; i++) {
          if (flags[i0 + i] & HMM_PFN_ERROR) continue;
          if (own) pfns[i0 + i] = cur.pfn + cur.index + i;
          flags[i0 + i] = df;
        }
        continue;
      }
      if (kind !== PRESENT || f & PROTNONE) continue;
      const hf = hmmFlagsOfPresent(f) | (9 << HMM_PFN_ORDER_SHIFT);
      for (let i = 0; i < cur.count; i++) {
        if (flags[i0 + i] & HMM_PFN_ERROR) continue;
        pfns[i0 + i] = cur.pfn + cur.index + i;
        flags[i0 + i] = hf;
      }
    } else if (cur.kind === SEG_TABLE) {
      const base = cur.leafBase + cur.index;
      for (let i = 0; i < cur.count; i++) {
        if (flags[i0 + i] & HMM_PFN_ERROR) continue;
        const f = pt.pteFlags[base + i];
        const kind = f & KIND_MASK;
        if (kind === PRESENT && !(f & PROTNONE)) {
          pfns[i0 + i] = pt.ptePfn[base + i];
          flags[i0 + i] = hmmFlagsOfPresent(f);
        } else if (kind === DEVICE_PRIVATE) {
          if (entryOwner(f) === owner) {
            pfns[i0 + i] = pt.ptePfn[base + i];
            flags[i0 + i] = hmmFlagsOfDevicePrivate(f);
          } else flags[i0 + i] = HMM_PFN_REMOTE_PRIVATE;
        } else if (kind === DEVICE_EXCLUSIVE && entryOwner(f) === owner) {
          // Not VALID (hmm_range_fault would fault it to report it), but described, so that a
          // coherence check can match the caller's exclusive translation to it.
          pfns[i0 + i] = pt.ptePfn[base + i];
          flags[i0 + i] = HMM_PFN_EXCLUSIVE | (f & WRITE ? HMM_PFN_WRITE : 0);
        }
      }
    }
  }
  return { start, pfns, flags };
}
