import { alignDown, HPAGE_PMD_NR, HPAGE_PMD_SIZE } from "./constants.js";
import {
  ENTRY_DEVICE_PRIVATE,
  ENTRY_DIRTY,
  ENTRY_KIND_MASK,
  ENTRY_MIGRATION,
  ENTRY_OWNER_MASK,
  ENTRY_OWNER_SHIFT,
  ENTRY_PRESENT,
  ENTRY_PROTNONE,
  ENTRY_WRITE,
  ENTRY_YOUNG,
  ENTRY_ZERO,
} from "./entry.js";
import { FRAME_ANON_EXCLUSIVE, FRAME_DIRTY, ZERO_PFN } from "./frame-pool.js";
import { MmuNotifyEvent } from "./notifier.js";
import type { MmStruct as Mm } from "./types.js";
import { THP_ADVICE_HUGEPAGE, THP_ADVICE_NOHUGEPAGE, type Vma } from "./vma.js";

/**
 * True if a fault at `addr` in `vma` may map a PMD-sized THP: THP is enabled for the VMA (the
 * machine's `thp` mode and the VMA's MADV_HUGEPAGE / MADV_NOHUGEPAGE advice), the VMA is private
 * anonymous (shared anonymous memory is shmem, whose THP mode is `never` by default), and the
 * aligned 2 MiB range around `addr` lies inside the VMA.
 */
export function thpSuitable(mm: Mm, vma: Vma, addr: number): boolean {
  if (vma.shared) return false;
  const mode = mm.machine.config.thp;
  if (mode === "never") return false;
  if (vma.thpAdvice === THP_ADVICE_NOHUGEPAGE) return false;
  if (mode === "madvise" && vma.thpAdvice !== THP_ADVICE_HUGEPAGE) return false;
  const haddr = alignDown(addr, HPAGE_PMD_SIZE);
  return haddr >= vma.start && haddr + HPAGE_PMD_SIZE <= vma.end;
}

/**
 * Split the huge PMD in `slot` (mapping [haddr, haddr + 2 MiB)) into a leaf table of 512 PTEs
 * with the same frames and permissions (__split_huge_pmd). Mirrors are told first with a CLEAR
 * invalidation of the whole 2 MiB, as the kernel does. A THP stays a large folio; a PMD migration
 * entry becomes 512 PTE migration entries; a device-private PMD becomes 512 device-private PTEs
 * (see splitHugePmdLocked).
 */
export function splitHugePmd(mm: Mm, slot: number, haddr: number): void {
  mm.notifiers.invalidate(haddr, haddr + HPAGE_PMD_SIZE, MmuNotifyEvent.CLEAR, null, () =>
    splitHugePmdLocked(mm, slot),
  );
}

/** The split itself, for callers already inside an invalidation of the PMD's range. */
export function splitHugePmdLocked(mm: Mm, slot: number): void {
  const pt = mm.pt;
  const pool = mm.machine.pool;
  const pfn = pt.pmdPfn[slot];
  const flags = pt.pmdFlags[slot];
  const kind = flags & ENTRY_KIND_MASK;
  if (kind === ENTRY_MIGRATION || kind === ENTRY_DEVICE_PRIVATE) {
    splitNonPresentPmd(mm, slot, pfn, flags);
    return;
  }
  if (kind !== ENTRY_PRESENT) {
    throw new Error(`splitHugePmd: PMD slot ${slot} does not hold a huge entry`);
  }
  const leaf = pt.replaceHugeWithLeaf(slot);
  const base = leaf * HPAGE_PMD_NR;
  const ptePfn = pt.ptePfn;
  const pteFlags = pt.pteFlags;
  mm.machine.stats.thpSplitPmd++;
  if (flags & ENTRY_ZERO) {
    // The huge zero page splits into 512 mappings of the 4 KiB zero page.
    const zf = ENTRY_PRESENT | ENTRY_ZERO | (flags & (ENTRY_YOUNG | ENTRY_PROTNONE));
    ptePfn.fill(ZERO_PFN, base, base + HPAGE_PMD_NR);
    pteFlags.fill(zf, base, base + HPAGE_PMD_NR);
    pt.leafUsed[leaf] = HPAGE_PMD_NR;
    return;
  }
  const pteBits = flags & (ENTRY_KIND_MASK | ENTRY_WRITE | ENTRY_DIRTY | ENTRY_YOUNG | ENTRY_PROTNONE);
  // A PMD mapping keeps PageAnonExclusive on the head page only (a write fault that reuses the
  // folio sets just that one); the split hands it to every subpage (RMAP_EXCLUSIVE on the PTEs).
  const excl = pool.flags[pfn] & FRAME_ANON_EXCLUSIVE;
  const pflags = pool.flags;
  // __split_huge_pmd_locked moves a dirty PMD's dirty bit to the folio.
  if (flags & ENTRY_DIRTY) pflags[pfn] |= FRAME_DIRTY;
  for (let i = 0; i < HPAGE_PMD_NR; i++) {
    ptePfn[base + i] = pfn + i;
    pteFlags[base + i] = pteBits;
    pflags[pfn + i] = (pflags[pfn + i] & ~FRAME_ANON_EXCLUSIVE) | excl;
  }
  pt.leafUsed[leaf] = HPAGE_PMD_NR;
  // One PMD mapping (one reference) becomes 512 PTE mappings (512 references).
  const b = (pfn / HPAGE_PMD_NR) | 0;
  pool.entireMapcount[b]--;
  for (let i = 0; i < HPAGE_PMD_NR; i++) pool.mapcount[pfn + i]++;
  pool.addLargeMapping(b, mm.id, HPAGE_PMD_NR - 1);
  pool.refcount[pfn] += HPAGE_PMD_NR - 1;
}

/**
 * __split_huge_pmd_locked on a non-present PMD: a PMD migration entry or a device-private PMD
 * becomes 512 entries of the same kind for pages pfn..pfn + 511, keeping WRITE, DIRTY and the
 * owner. A migration entry holds no reference. A device-private PMD's one reference becomes 512
 * (folio_ref_add(folio, HPAGE_PMD_NR - 1)); when that PMD was the folio's only user, the device
 * folio is split as well (the pagemap's folio_split), so that each page can then be freed or
 * migrated on its own. The kernel leaves that split to a later split_folio; doing it here frees
 * the device frames of a partial munmap at once, which is what the folio split would do.
 */
function splitNonPresentPmd(mm: Mm, slot: number, pfn: number, flags: number): void {
  const pt = mm.pt;
  const leaf = pt.replaceHugeWithLeaf(slot);
  const base = leaf * HPAGE_PMD_NR;
  const pteFlags =
    flags & (ENTRY_KIND_MASK | ENTRY_WRITE | ENTRY_DIRTY | (ENTRY_OWNER_MASK << ENTRY_OWNER_SHIFT));
  for (let i = 0; i < HPAGE_PMD_NR; i++) pt.ptePfn[base + i] = pfn + i;
  pt.pteFlags.fill(pteFlags, base, base + HPAGE_PMD_NR);
  pt.leafUsed[leaf] = HPAGE_PMD_NR;
  mm.machine.stats.thpSplitPmd++;
  if ((flags & ENTRY_KIND_MASK) !== ENTRY_DEVICE_PRIVATE) return;
  const ops = mm.machine.devicePagemap((flags >>> ENTRY_OWNER_SHIFT) & ENTRY_OWNER_MASK);
  if (!ops.folioSplit(pfn)) ops.pageGet(pfn, HPAGE_PMD_NR - 1);
}
