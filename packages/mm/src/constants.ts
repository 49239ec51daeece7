/** Page size constants of the simulated x86-64 machine (4-level paging, 48-bit virtual addresses). */

/** log2 of the base page size. */
export const PAGE_SHIFT = 12;
/** Base page size in bytes (4 KiB). */
export const PAGE_SIZE = 4096;
/** log2 of the span of one PMD entry (a huge page). */
export const PMD_SHIFT = 21;
/** Bytes mapped by one PMD entry: a transparent huge page (2 MiB). */
export const HPAGE_PMD_SIZE = 2 * 1024 * 1024;
/** Base pages in one huge page. */
export const HPAGE_PMD_NR = 512;
/** Folio order of a PMD-sized huge page (log2 of HPAGE_PMD_NR). */
export const HPAGE_PMD_ORDER = 9;
/** Entries per page-table page at every level. */
export const PTRS_PER_TABLE = 512;
/** Width of a virtual address in bits. */
export const VA_BITS = 48;
/** First address past user space (the kernel's TASK_SIZE on x86-64 with 4-level paging). */
export const TASK_SIZE = 2 ** 47 - PAGE_SIZE;
/** Default top of the mmap area; mappings without a hint are placed top-down below it. */
export const DEFAULT_MMAP_BASE = 0x7f00_0000_0000;
/** Lowest address mmap hands out (vm.mmap_min_addr). */
export const MMAP_MIN_ADDR = 0x10000;

/** Protection bits, as in mman.h. */
export const PROT_NONE = 0;
export const PROT_READ = 1;
export const PROT_WRITE = 2;

/** mmap flags, as in mman.h (only those the simulator implements). */
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const MAP_FIXED_NOREPLACE = 0x100000;

/** madvise advice values, as in mman.h. */
export const MADV_DONTNEED = 4;
/** Lazily free the pages: reclaim may discard them unless they are written again first. */
export const MADV_FREE = 8;
export const MADV_HUGEPAGE = 14;
export const MADV_NOHUGEPAGE = 15;
/** Deactivate the pages (LRU only; nothing the page table shows, except THP splits). */
export const MADV_COLD = 20;
/** Reclaim the pages now. */
export const MADV_PAGEOUT = 21;
/** Collapse the range into THPs synchronously. */
export const MADV_COLLAPSE = 25;

/** mremap flags, as in mman.h. */
export const MREMAP_MAYMOVE = 1;
export const MREMAP_FIXED = 2;
export const MREMAP_DONTUNMAP = 4;

/**
 * Round the non-negative `x` down to a multiple of the power of two `align` (exact up to 2^53).
 * Addresses pass 2^32, where `%` on doubles is a call to fmod; dividing by a power of two and
 * flooring is exact and stays in registers.
 */
export function alignDown(x: number, align: number): number {
  return Math.floor(x / align) * align;
}

/** Round the non-negative `x` up to a multiple of the power of two `align` (exact up to 2^53). */
export function alignUp(x: number, align: number): number {
  return Math.ceil(x / align) * align;
}

/** Format an address the way kernel logs do, with a 0x prefix and `_` every 4 hex digits. */
export function hex(addr: number): string {
  const s = addr.toString(16);
  let out = "";
  for (let i = 0; i < s.length; i++) {
    if (i > 0 && (s.length - i) % 4 === 0) out += "_";
    out += s[i];
  }
  return `0x${out}`;
}
