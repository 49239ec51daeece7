import { alignDown, alignUp, HPAGE_PMD_NR, HPAGE_PMD_SIZE, hex, PAGE_SIZE } from "./constants.js";
import {
  ENTRY_DEVICE_EXCLUSIVE,
  ENTRY_DEVICE_PRIVATE,
  ENTRY_DIRTY,
  ENTRY_KIND_MASK,
  ENTRY_NONE,
  ENTRY_PRESENT,
  ENTRY_PROTNONE,
  ENTRY_WRITE,
  ENTRY_YOUNG,
  ENTRY_ZERO,
} from "./entry.js";
import { MmError } from "./errors.js";
import { FAULT_FLAG_REMOTE, handleMmFault, restoreExclusivePte } from "./fault.js";
import { FRAME_ANON, FRAME_ANON_EXCLUSIVE, FRAME_LARGE, FRAME_SHMEM } from "./frame-pool.js";
import { madviseHoleError, madviseWalkVmas } from "./madvise-walk.js";
import { MmuNotifyEvent } from "./notifier.js";
import { rmapAddPmd, rmapRemovePte } from "./rmap.js";
import type { MmStruct as Mm } from "./types.js";
import { THP_ADVICE_NOHUGEPAGE, type Vma } from "./vma.js";

/** Outcomes of collapsing one 2 MiB range (enum scan_result, the ones the simulator meets). */
const SCAN_SUCCEED = 0;
const SCAN_PMD_MAPPED = 1;
/** No page table there: the call stops with EINVAL. */
const SCAN_PMD_NULL = 2;
/** A page with references beyond its mappings: skipped, EAGAIN at the end. */
const SCAN_PAGE_COUNT = 3;
/** An entry that could not be brought back (a migration in flight): stop with EAGAIN. */
const SCAN_PAGE_LOCK = 4;

/**
 * MADV_COLLAPSE of [start, end) (madvise_collapse): every 2 MiB-aligned range wholly inside the
 * advice range is copied into a new THP mapped by a PMD (collapse_huge_page): new frames, the
 * contents copied (holes and zero-page entries become zeros), the old pages' mappings in this
 * process dropped (another process sharing them after fork keeps them). khugepaged's max_ptes_*
 * limits do not apply. A range already PMD-mapped (the huge zero page too) counts as collapsed.
 * Errors, as Linux 6.18 gives them: EINVAL at the first VMA of the range that is VM_NOHUGEPAGE,
 * at the first 2 MiB range not inside one THP-eligible VMA, or at the first range without a page
 * table (ranges before it stay collapsed, later ones are not tried); EAGAIN when a page had extra
 * references (the other ranges are collapsed); ENOMEM when no huge frame is free; then ENOMEM if
 * the advice range had a hole. Device-private and device-exclusive entries
 * are brought back first, as the swap-in step does.
 */
export function madviseCollapse(mm: Mm, start: number, end: number): void {
  // madvise_walk_vmas: each VMA of the range in turn, from where the range meets it; each
  // madvise_collapse call scans to the end of the advice range (revalidating the VMA per 2 MiB).
  const hole = madviseWalkVmas(mm, start, end, (v, cur) => {
    if (!collapseAllowed(v))
      throw new MmError("EINVAL", `madvise: MADV_COLLAPSE in ${v}, which is MADV_NOHUGEPAGE`);
    collapseRanges(mm, alignUp(cur, HPAGE_PMD_SIZE), alignDown(end, HPAGE_PMD_SIZE));
  });
  if (hole) throw madviseHoleError(start, end);
}

/** madvise_collapse's loop over [hstart, hend), one 2 MiB range at a time. */
function collapseRanges(mm: Mm, hstart: number, hend: number): void {
  let busyAt = -1;
  for (let a = hstart; a < hend; a += HPAGE_PMD_SIZE) {
    const v = mm.findVma(a);
    // hugepage_vma_revalidate: the range must lie in one VMA that may hold a THP.
    if (v === null || v.end < a + HPAGE_PMD_SIZE || !collapseAllowed(v)) {
      throw new MmError(
        "EINVAL",
        `madvise: MADV_COLLAPSE of [${hex(a)}, +2M), which is not inside one THP-eligible mapping`,
      );
    }
    const r = collapseOne(mm, v, a);
    if (r === SCAN_PMD_NULL)
      throw new MmError("EINVAL", `madvise: MADV_COLLAPSE of [${hex(a)}, +2M): no page table there`);
    if (r === SCAN_PAGE_LOCK)
      throw new MmError("EAGAIN", `madvise: MADV_COLLAPSE of [${hex(a)}, +2M) met a page under migration`);
    if (r === SCAN_PAGE_COUNT) busyAt = a;
  }
  if (busyAt >= 0)
    throw new MmError(
      "EAGAIN",
      `madvise: MADV_COLLAPSE of [${hex(busyAt)}, +2M): a page has extra references`,
    );
}

/** thp_vma_allowable_order for a forced collapse: anything but VM_NOHUGEPAGE (sysfs is ignored). */
function collapseAllowed(v: Vma): boolean {
  return v.thpAdvice !== THP_ADVICE_NOHUGEPAGE;
}

function collapseOne(mm: Mm, vma: Vma, haddr: number): number {
  const pt = mm.pt;
  let slot = pt.pmdSlot(haddr);
  if (slot < 0) return SCAN_PMD_NULL;
  if (pt.leafAt(slot) < 0) {
    // check_pmd_state: a PMD that is not present (migration, device-private) counts as none.
    return (pt.pmdFlags[slot] & ENTRY_KIND_MASK) === ENTRY_PRESENT ? SCAN_PMD_MAPPED : SCAN_PMD_NULL;
  }
  if (vma.shared) return collapseShmem(mm, vma, haddr);
  const pool = mm.machine.pool;
  // __collapse_huge_page_swapin: device entries come back to RAM first.
  for (let i = 0; i < HPAGE_PMD_NR; i++) {
    const va = haddr + i * PAGE_SIZE;
    const pos = pt.ptePos(va);
    if (pos < 0) return SCAN_PMD_NULL;
    const kind = pt.pteFlags[pos] & ENTRY_KIND_MASK;
    if (kind === ENTRY_DEVICE_EXCLUSIVE) restoreExclusivePte(mm, va);
    else if (kind === ENTRY_DEVICE_PRIVATE) handleMmFault(mm, vma, va, FAULT_FLAG_REMOTE);
    const k = pt.pteFlags[pt.ptePos(va)] & ENTRY_KIND_MASK;
    if (k !== ENTRY_NONE && k !== ENTRY_PRESENT) return SCAN_PAGE_LOCK;
  }
  // __collapse_huge_page_isolate: every page must be held by its mappings only.
  for (let i = 0; i < HPAGE_PMD_NR; i++) {
    const pos = pt.ptePos(haddr + i * PAGE_SIZE);
    const f = pt.pteFlags[pos];
    if ((f & ENTRY_KIND_MASK) !== ENTRY_PRESENT || f & ENTRY_ZERO) continue;
    const head = pool.folioHead(pt.ptePfn[pos]);
    const maps = pool.isLarge(head) ? pool.largeMapcount[(head / HPAGE_PMD_NR) | 0] : pool.mapcount[head];
    if (pool.refcount[head] !== maps) return SCAN_PAGE_COUNT;
  }
  const dst = pool.tryAllocHuge();
  if (dst < 0)
    throw new MmError("ENOMEM", `madvise: MADV_COLLAPSE of [${hex(haddr)}, +2M): no free huge frame`);
  mm.notifiers.invalidate(haddr, haddr + HPAGE_PMD_SIZE, MmuNotifyEvent.CLEAR, null, () => {
    const content = pool.content;
    for (let i = 0; i < HPAGE_PMD_NR; i++) {
      const pos = pt.ptePos(haddr + i * PAGE_SIZE);
      const f = pt.pteFlags[pos];
      const pfn = pt.ptePfn[pos];
      if ((f & ENTRY_KIND_MASK) !== ENTRY_PRESENT || f & ENTRY_ZERO) {
        content.zero(dst + i);
        pt.clearPte(pos);
        continue;
      }
      content.copyTo(pfn, content, dst + i);
      pt.clearPte(pos);
      rmapRemovePte(pool, mm.id, pfn);
      mm.rssDrop(pfn, 1);
      pool.put(pfn);
    }
    pt.clearPmd(pt.pmdSlot(haddr));
    slot = pt.pmdSlotAlloc(haddr);
    pool.flags.fill(FRAME_LARGE | FRAME_ANON | FRAME_ANON_EXCLUSIVE, dst, dst + HPAGE_PMD_NR);
    rmapAddPmd(pool, mm.id, dst);
    mm.rssAnon += HPAGE_PMD_NR;
    const prot = vma.prot === 0 ? ENTRY_PROTNONE : vma.writable ? ENTRY_WRITE : 0;
    pt.setPmdHuge(slot, dst, ENTRY_PRESENT | ENTRY_YOUNG | ENTRY_DIRTY | prot);
  });
  mm.machine.stats.thpAllocs++;
  return SCAN_SUCCEED;
}

/**
 * collapse_file for a shared mapping: the object's pages of the range become one large folio in
 * the object (new frames, contents copied, missing pages zero), and this process maps it with a
 * PMD. Pages other processes map too make it EAGAIN (the kernel unmaps them there first).
 */
function collapseShmem(mm: Mm, vma: Vma, haddr: number): number {
  const pool = mm.machine.pool;
  const pt = mm.pt;
  const obj = vma.shmem!;
  const first = vma.shmemIndex(haddr);
  if (first + HPAGE_PMD_NR > obj.npages) return SCAN_PMD_NULL;
  for (let i = 0; i < HPAGE_PMD_NR; i++) {
    const pos = pt.ptePos(haddr + i * PAGE_SIZE);
    const kind = pos < 0 ? ENTRY_NONE : pt.pteFlags[pos] & ENTRY_KIND_MASK;
    if (kind !== ENTRY_NONE && kind !== ENTRY_PRESENT) return SCAN_PAGE_LOCK;
    // Pages mapped by other processes too: collapse_file would unmap them there first; the
    // simulator does not, and reports the page as busy.
    const old = obj.frameAt(first + i);
    if (old >= 0 && pool.mapcount[old] > (kind === ENTRY_PRESENT ? 1 : 0)) return SCAN_PAGE_COUNT;
  }
  const dst = pool.tryAllocHuge();
  if (dst < 0)
    throw new MmError("ENOMEM", `madvise: MADV_COLLAPSE of [${hex(haddr)}, +2M): no free huge frame`);
  mm.notifiers.invalidate(haddr, haddr + HPAGE_PMD_SIZE, MmuNotifyEvent.CLEAR, null, () => {
    const content = pool.content;
    for (let i = 0; i < HPAGE_PMD_NR; i++) {
      const pos = pt.ptePos(haddr + i * PAGE_SIZE);
      if ((pt.pteFlags[pos] & ENTRY_KIND_MASK) === ENTRY_PRESENT) {
        const pfn = pt.ptePfn[pos];
        pt.clearPte(pos);
        rmapRemovePte(pool, mm.id, pfn);
        mm.rssShmem--;
        pool.put(pfn);
      }
      const old = obj.frameAt(first + i);
      if (old >= 0) {
        content.copyTo(old, content, dst + i);
        pool.put(old); // the page cache's reference on the old page
      } else content.zero(dst + i);
      obj.pages[first + i] = dst + i + 1;
    }
    pt.clearPmd(pt.pmdSlot(haddr));
    const slot = pt.pmdSlotAlloc(haddr);
    pool.flags.fill(FRAME_LARGE | FRAME_SHMEM, dst, dst + HPAGE_PMD_NR);
    // One page-cache reference per page (already held by the allocation for the first) plus the PMD.
    pool.refcount[dst] += HPAGE_PMD_NR - 1;
    pool.get(dst);
    rmapAddPmd(pool, mm.id, dst);
    mm.rssShmem += HPAGE_PMD_NR;
    const prot = vma.prot === 0 ? ENTRY_PROTNONE : vma.writable ? ENTRY_WRITE : 0;
    pt.setPmdHuge(slot, dst, ENTRY_PRESENT | ENTRY_YOUNG | ENTRY_DIRTY | prot);
  });
  mm.machine.stats.thpAllocs++;
  return SCAN_SUCCEED;
}
