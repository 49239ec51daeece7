import { anonVmaPrepare } from "./anon-vma.js";
import { alignDown, HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE, PTRS_PER_TABLE } from "./constants.js";
import {
  ENTRY_DEVICE_EXCLUSIVE,
  ENTRY_DEVICE_PRIVATE,
  ENTRY_DIRTY,
  ENTRY_KIND_MASK,
  ENTRY_MIGRATION,
  ENTRY_NONE,
  ENTRY_PRESENT,
  ENTRY_PROTNONE,
  ENTRY_WRITE,
  ENTRY_YOUNG,
  ENTRY_ZERO,
  entryOwner,
} from "./entry.js";
import { FRAME_ANON, FRAME_ANON_EXCLUSIVE, FRAME_LARGE, FRAME_SHMEM, ZERO_PFN } from "./frame-pool.js";
import { MmuNotifyEvent } from "./notifier.js";
import { rmapAddPmd, rmapAddPte, rmapRemovePte } from "./rmap.js";
import { splitHugePmd, thpSuitable } from "./thp.js";
import type { MmStruct as Mm } from "./types.js";
import type { Vma } from "./vma.js";

/** Result codes of {@link handleMmFault} (vm_fault_t bits, as in Linux). */
export const VM_FAULT_OK = 0;
export const VM_FAULT_OOM = 0x1;
export const VM_FAULT_SIGBUS = 0x2;
export const VM_FAULT_SIGSEGV = 0x40;
/** The fault met a migration entry: wait for the migration to finish, then retry the access. */
export const VM_FAULT_RETRY = 0x400;
/** Internal: the huge path cannot handle it; continue at PTE level. */
const VM_FAULT_FALLBACK = 0x800;

/** Fault flags (FAULT_FLAG_*). */
export const FAULT_FLAG_WRITE = 0x1;
/** The fault is on behalf of a device or another process (hmm_range_fault, GUP), not the CPU. */
export const FAULT_FLAG_REMOTE = 0x80;

/**
 * Resolve one page fault at `addr` in `vma` (handle_mm_fault). The caller has checked that the VMA
 * permits the access. Handles: none → zero page or new page (THP when allowed); write to the zero
 * page or a COW page → copy, or reuse when exclusive; shared mappings through their shmem object
 * with fault-around; device-private entries through the owner's migrateToRam; device-exclusive
 * entries restored; migration entries → VM_FAULT_RETRY.
 */
export function handleMmFault(mm: Mm, vma: Vma, addr: number, fflags: number): number {
  // One compare pair per fault: an address outside `vma` (NaN, one past user space) must never
  // index the page table, where an address at or above 2^48 would alias a user mapping.
  if (!(addr >= vma.start && addr < vma.end)) return VM_FAULT_SIGSEGV;
  const stats = mm.machine.stats;
  stats.faults++;
  const write = (fflags & FAULT_FLAG_WRITE) !== 0;
  const pt = mm.pt;
  const slot = pt.pmdSlotAlloc(addr);
  if (pt.pmdChild[slot] === 0) {
    const r = hugePmdFault(mm, vma, addr, slot, write);
    if (r !== VM_FAULT_FALLBACK) return r;
  }
  // The PTE under the slot found above (ptePosAlloc without walking the upper levels again).
  let leaf = pt.pmdChild[slot] - 1;
  if (leaf < 0) leaf = pt.allocLeaf(slot);
  const pos = leaf * PTRS_PER_TABLE + (Math.floor(addr / PAGE_SIZE) & (PTRS_PER_TABLE - 1));
  return handlePteFault(mm, vma, addr, pos, write);
}

/**
 * @internal The PTE level of handle_mm_fault (handle_pte_fault) for the PTE at `pos` of a leaf
 * table, the one that maps `addr` in `vma`. {@link handleMmFault} counts the fault before it gets
 * here; a caller that found `pos` itself counts it too.
 */
export function handlePteFault(mm: Mm, vma: Vma, addr: number, pos: number, write: boolean): number {
  const pt = mm.pt;
  const stats = mm.machine.stats;
  const flags = pt.pteFlags[pos];
  switch (flags & ENTRY_KIND_MASK) {
    case ENTRY_NONE:
      return vma.shared ? doSharedFault(mm, vma, addr, pos, write) : doAnonymousPage(mm, vma, pos, write);
    case ENTRY_PRESENT:
      if (write && !(flags & ENTRY_WRITE)) return doWpPage(mm, vma, addr, pos);
      pt.pteFlags[pos] = (flags & ~ENTRY_PROTNONE) | ENTRY_YOUNG | (write ? ENTRY_DIRTY : 0);
      return VM_FAULT_OK;
    case ENTRY_MIGRATION:
      stats.faultMigrationWait++;
      return VM_FAULT_RETRY;
    case ENTRY_DEVICE_PRIVATE: {
      stats.faultDevicePrivate++;
      const owner = entryOwner(flags);
      return mm.machine
        .devicePagemap(owner)
        .migrateToRam(mm, vma, alignDown(addr, PAGE_SIZE), pt.ptePfn[pos]);
    }
    case ENTRY_DEVICE_EXCLUSIVE:
      stats.faultExclusive++;
      restoreExclusivePte(mm, alignDown(addr, PAGE_SIZE));
      return VM_FAULT_OK;
    default:
      return VM_FAULT_SIGBUS;
  }
}

/**
 * The PMD level of handle_mm_fault (__handle_mm_fault's pmd_none / pmd_trans_huge cases) when the
 * slot holds no leaf table; VM_FAULT_FALLBACK continues at PTE level. Kept out of handleMmFault
 * so that the common 4 KiB path stays small.
 */
function hugePmdFault(mm: Mm, vma: Vma, addr: number, slot: number, write: boolean): number {
  const pt = mm.pt;
  const pmdFlags = pt.pmdFlags[slot];
  const kind = pmdFlags & ENTRY_KIND_MASK;
  const haddr = alignDown(addr, HPAGE_PMD_SIZE);
  if (kind === ENTRY_NONE) {
    if (thpSuitable(mm, vma, addr)) return doHugePmdAnonymousPage(mm, vma, slot, haddr, write);
  } else if (kind === ENTRY_PRESENT) {
    if (!write || pmdFlags & ENTRY_WRITE) {
      pt.setPmdFlags(slot, pmdFlags | ENTRY_YOUNG | (write ? ENTRY_DIRTY : 0));
      return VM_FAULT_OK;
    }
    return pmdFlags & ENTRY_ZERO
      ? doHugeZeroWpPmd(mm, vma, slot, haddr)
      : doHugePmdWpPage(mm, vma, slot, haddr);
  } else if (kind === ENTRY_MIGRATION) {
    mm.machine.stats.faultMigrationWait++;
    return VM_FAULT_RETRY;
  } else if (kind === ENTRY_DEVICE_PRIVATE) {
    // do_huge_pmd_device_private: the owner's migrate_to_ram for the order-9 device folio, told
    // which page faulted; it brings the folio home as a THP or splits the PMD.
    mm.machine.stats.faultDevicePrivate++;
    const idx = Math.floor(addr / PAGE_SIZE) % HPAGE_PMD_NR;
    return mm.machine
      .devicePagemap(entryOwner(pmdFlags))
      .migrateToRam(mm, vma, alignDown(addr, PAGE_SIZE), pt.pmdPfn[slot] + idx);
  }
  return VM_FAULT_FALLBACK;
}

/** Flags of a new present entry in `vma`: writable and dirty when the VMA is writable. */
function newEntryFlags(vma: Vma, write: boolean): number {
  if (vma.writable) return ENTRY_PRESENT | ENTRY_YOUNG | ENTRY_WRITE | ENTRY_DIRTY;
  return ENTRY_PRESENT | ENTRY_YOUNG | (write ? ENTRY_DIRTY : 0);
}

/** do_anonymous_page: none PTE in a private VMA. */
function doAnonymousPage(mm: Mm, vma: Vma, pos: number, write: boolean): number {
  const machine = mm.machine;
  anonVmaPrepare(mm, vma);
  if (!write && machine.config.zeroPage) {
    mm.pt.setPte(pos, ZERO_PFN, ENTRY_PRESENT | ENTRY_ZERO | ENTRY_YOUNG);
    machine.stats.faultZeroPage++;
    return VM_FAULT_OK;
  }
  const pool = machine.pool;
  const pfn = pool.tryAllocPage();
  if (pfn < 0) {
    machine.stats.oom++;
    return VM_FAULT_OOM;
  }
  pool.content.zero(pfn);
  pool.flags[pfn] = FRAME_ANON | FRAME_ANON_EXCLUSIVE;
  rmapAddPte(pool, mm.id, pfn);
  mm.rssAnon++;
  mm.pt.setPte(pos, pfn, newEntryFlags(vma, write));
  machine.stats.faultAnon++;
  return VM_FAULT_OK;
}

/** do_huge_pmd_anonymous_page: none PMD where a THP fits. */
function doHugePmdAnonymousPage(mm: Mm, vma: Vma, slot: number, _haddr: number, write: boolean): number {
  const machine = mm.machine;
  anonVmaPrepare(mm, vma);
  if (!write && machine.config.zeroPage && machine.config.hugeZeroPage) {
    mm.pt.setPmdHuge(slot, ZERO_PFN, ENTRY_PRESENT | ENTRY_ZERO | ENTRY_YOUNG);
    machine.stats.faultHugeZeroPage++;
    return VM_FAULT_OK;
  }
  const head = allocAnonThp(mm);
  if (head < 0) return VM_FAULT_FALLBACK;
  mm.pt.setPmdHuge(slot, head, newEntryFlags(vma, write));
  machine.stats.faultThp++;
  return VM_FAULT_OK;
}

/** Allocate a zeroed anonymous THP mapped once by a PMD of `mm` (refcount 1), or -1. */
function allocAnonThp(mm: Mm): number {
  const machine = mm.machine;
  const pool = machine.pool;
  const head = pool.tryAllocHuge();
  if (head < 0) {
    machine.stats.thpFallbacks++;
    return -1;
  }
  pool.content.zeroRange(head, HPAGE_PMD_NR);
  pool.flags.fill(FRAME_LARGE | FRAME_ANON | FRAME_ANON_EXCLUSIVE, head, head + HPAGE_PMD_NR);
  rmapAddPmd(pool, mm.id, head);
  mm.rssAnon += HPAGE_PMD_NR;
  machine.stats.thpAllocs++;
  return head;
}

/**
 * Write fault on the huge zero page (do_huge_zero_wp_pmd): replace it with a fresh THP. The THP is
 * allocated first; only a successful allocation invalidates the range, else the PMD is split
 * (with its own invalidation) and the fault continues at PTE level.
 */
function doHugeZeroWpPmd(mm: Mm, vma: Vma, slot: number, haddr: number): number {
  const head = allocAnonThp(mm);
  if (head < 0) {
    splitHugePmd(mm, slot, haddr);
    return VM_FAULT_FALLBACK;
  }
  mm.notifiers.invalidate(haddr, haddr + HPAGE_PMD_SIZE, MmuNotifyEvent.CLEAR, null, () => {
    mm.pt.setPmdHuge(slot, head, newEntryFlags(vma, true));
  });
  mm.machine.stats.cowCopies++;
  return VM_FAULT_OK;
}

/** do_huge_pmd_wp_page: reuse an exclusive THP, else split the PMD and COW at PTE level. */
function doHugePmdWpPage(mm: Mm, vma: Vma, slot: number, haddr: number): number {
  const pt = mm.pt;
  const pool = mm.machine.pool;
  const head = pt.pmdPfn[slot];
  if (pool.flags[head] & FRAME_ANON_EXCLUSIVE || pool.refcount[head] === 1) {
    pool.flags[head] |= FRAME_ANON_EXCLUSIVE;
    pt.setPmdFlags(slot, pt.pmdFlags[slot] | ENTRY_YOUNG | ENTRY_DIRTY | (vma.writable ? ENTRY_WRITE : 0));
    mm.machine.stats.cowReuses++;
    return VM_FAULT_OK;
  }
  splitHugePmd(mm, slot, haddr);
  return VM_FAULT_FALLBACK;
}

/** True if a write fault may reuse anonymous page `pfn` instead of copying it (wp_can_reuse_anon_folio). */
function canReuseAnonPage(mm: Mm, pfn: number): boolean {
  const pool = mm.machine.pool;
  if (pool.flags[pfn] & FRAME_ANON_EXCLUSIVE) return true;
  if (pool.flags[pfn] & FRAME_LARGE) {
    const b = (pfn / HPAGE_PMD_NR) | 0;
    // Copying frees the large folio sooner when only one of its pages is still mapped.
    if (pool.largeMapcount[b] <= 1) return false;
    return pool.largeFolioExclusiveTo(b, mm.id);
  }
  return pool.refcount[pfn] === 1;
}

/** do_wp_page: write fault on a present, write-protected PTE. */
function doWpPage(mm: Mm, vma: Vma, addr: number, pos: number): number {
  const pt = mm.pt;
  const pool = mm.machine.pool;
  const flags = pt.pteFlags[pos];
  const pfn = pt.ptePfn[pos];
  if (vma.shared) {
    pt.pteFlags[pos] = flags | ENTRY_WRITE | ENTRY_DIRTY | ENTRY_YOUNG;
    return VM_FAULT_OK;
  }
  if (!(flags & ENTRY_ZERO) && pool.flags[pfn] & FRAME_ANON && canReuseAnonPage(mm, pfn)) {
    pool.flags[pfn] |= FRAME_ANON_EXCLUSIVE;
    pt.pteFlags[pos] = flags | ENTRY_WRITE | ENTRY_DIRTY | ENTRY_YOUNG;
    mm.machine.stats.cowReuses++;
    return VM_FAULT_OK;
  }
  return wpPageCopy(mm, vma, addr, pos);
}

/** wp_page_copy: give this mm its own copy of the page (zero-filled when it was the zero page). */
function wpPageCopy(mm: Mm, vma: Vma, addr: number, pos: number): number {
  const machine = mm.machine;
  anonVmaPrepare(mm, vma);
  const pool = machine.pool;
  const npfn = pool.tryAllocPage();
  if (npfn < 0) {
    machine.stats.oom++;
    return VM_FAULT_OOM;
  }
  const subs = mm.notifiers;
  if (subs.size === 0) {
    // No mirror watches this mm: an invalidation would call nothing and defer nothing.
    cowReplacePage(mm, pos, npfn);
  } else {
    // Started and ended around the change rather than given a closure: this runs once per page.
    const page = alignDown(addr, PAGE_SIZE);
    subs.invalidateStart(page, page + PAGE_SIZE, MmuNotifyEvent.CLEAR, null);
    try {
      cowReplacePage(mm, pos, npfn);
    } finally {
      subs.invalidateRangeEnd();
    }
  }
  machine.stats.cowCopies++;
  return VM_FAULT_OK;
}

/** The PTE change of wp_page_copy: map the new frame `npfn` (a copy of the old page) at `pos`. */
function cowReplacePage(mm: Mm, pos: number, npfn: number): void {
  const pool = mm.machine.pool;
  const pt = mm.pt;
  const flags = pt.pteFlags[pos];
  const old = pt.ptePfn[pos];
  if (flags & ENTRY_ZERO) pool.content.zero(npfn);
  else pool.content.copyTo(old, pool.content, npfn);
  pool.flags[npfn] = FRAME_ANON | FRAME_ANON_EXCLUSIVE;
  rmapAddPte(pool, mm.id, npfn);
  mm.rssAnon++;
  pt.setPte(pos, npfn, ENTRY_PRESENT | ENTRY_WRITE | ENTRY_DIRTY | ENTRY_YOUNG);
  if (!(flags & ENTRY_ZERO)) {
    rmapRemovePte(pool, mm.id, old);
    mm.rssDrop(old, 1);
    pool.put(old);
  }
}

/** Map page `pfn` of a shmem object at PTE `pos` (one more mapping, one more reference). */
function mapShmemPage(mm: Mm, vma: Vma, pos: number, pfn: number, write: boolean): void {
  const pool = mm.machine.pool;
  pool.get(pfn);
  rmapAddPte(pool, mm.id, pfn);
  mm.rssShmem++;
  mm.pt.setPte(pos, pfn, newEntryFlags(vma, write));
}

/**
 * Fault in a shared anonymous mapping (do_read_fault / do_shared_fault on shmem). A read fault
 * first maps every page of the fault-around window that the object already holds; then the
 * faulting page is taken from the object or allocated zero-filled into it.
 */
function doSharedFault(mm: Mm, vma: Vma, addr: number, pos: number, write: boolean): number {
  const machine = mm.machine;
  const pool = machine.pool;
  const obj = vma.shmem!;
  machine.stats.faultShmem++;
  const index = vma.shmemIndex(alignDown(addr, PAGE_SIZE));
  // Past the end of the object (a shared mapping grown by mremap): shmem_fault gives SIGBUS.
  if (index >= obj.npages) return VM_FAULT_SIGBUS;
  if (!write) faultAround(mm, vma, addr, pos);
  if ((mm.pt.pteFlags[pos] & ENTRY_KIND_MASK) !== ENTRY_NONE) return VM_FAULT_OK;
  let pfn = obj.frameAt(index);
  if (pfn < 0) {
    pfn = pool.tryAllocPage();
    if (pfn < 0) {
      machine.stats.oom++;
      return VM_FAULT_OOM;
    }
    pool.content.zero(pfn);
    pool.flags[pfn] = FRAME_SHMEM;
    obj.pages[index] = pfn + 1; // the object's reference is the allocation's
  }
  mapShmemPage(mm, vma, pos, pfn, write);
  return VM_FAULT_OK;
}

/** do_fault_around: map the cached pages of the aligned fault-around window with none PTEs. */
function faultAround(mm: Mm, vma: Vma, addr: number, pos: number): void {
  const nr = mm.machine.config.faultAroundBytes / PAGE_SIZE;
  if (nr <= 1) return;
  const pteOff = pos % 512;
  const vmaOff = (alignDown(addr, PAGE_SIZE) - vma.start) / PAGE_SIZE;
  const from = Math.max(pteOff - (pteOff % nr), pteOff - Math.min(pteOff, vmaOff));
  const to = Math.min(from + nr, 512, pteOff + vma.pages - vmaOff);
  const base = pos - pteOff;
  const obj = vma.shmem!;
  const firstIndex = vma.shmemIndex(alignDown(addr, PAGE_SIZE)) - pteOff;
  const pt = mm.pt;
  for (let i = from; i < to; i++) {
    if ((pt.pteFlags[base + i] & ENTRY_KIND_MASK) !== ENTRY_NONE) continue;
    const pfn = obj.frameAt(firstIndex + i);
    if (pfn < 0) continue;
    mapShmemPage(mm, vma, base + i, pfn, false);
    if (i !== pteOff) mm.machine.stats.faultAroundPages++;
  }
}

/**
 * Give the CPU its mapping back from a device-exclusive entry at `page`: tell mirrors with an
 * EXCLUSIVE invalidation (owner null), then restore the present entry.
 */
export function restoreExclusivePte(mm: Mm, page: number): void {
  const subs = mm.notifiers;
  subs.invalidateStart(page, page + PAGE_SIZE, MmuNotifyEvent.EXCLUSIVE, null);
  try {
    const pos = mm.pt.ptePos(page);
    if (pos < 0) return;
    const flags = mm.pt.pteFlags[pos];
    if ((flags & ENTRY_KIND_MASK) !== ENTRY_DEVICE_EXCLUSIVE) return;
    mm.pt.pteFlags[pos] = ENTRY_PRESENT | ENTRY_YOUNG | (flags & (ENTRY_WRITE | ENTRY_DIRTY));
  } finally {
    subs.invalidateRangeEnd();
  }
}
