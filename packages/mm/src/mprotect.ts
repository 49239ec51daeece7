import { alignDown, HPAGE_PMD_SIZE } from "./constants.js";
import {
  ENTRY_DEVICE_EXCLUSIVE,
  ENTRY_DEVICE_PRIVATE,
  ENTRY_KIND_MASK,
  ENTRY_MIGRATION,
  ENTRY_PRESENT,
  ENTRY_PROTNONE,
  ENTRY_WRITE,
  ENTRY_ZERO,
} from "./entry.js";
import { FRAME_ANON, FRAME_ANON_EXCLUSIVE } from "./frame-pool.js";
import { MmuNotifyEvent } from "./notifier.js";
import { splitHugePmd } from "./thp.js";
import type { MmStruct as Mm } from "./types.js";
import type { Vma } from "./vma.js";
import { PageTableCursor, SEG_HUGE, SEG_NONE, SEG_TABLE } from "./walker.js";

/** True if any entry (or huge entry) exists in [start, end). */
export function populated(mm: Mm, start: number, end: number): boolean {
  const cur = new PageTableCursor(mm.pt).reset(start, end);
  while (cur.next()) if (cur.kind !== SEG_NONE) return true;
  return false;
}

/**
 * Flags of a present entry after its VMA's protection changed (change_pte_range): PROT_NONE makes
 * it protnone; a writable VMA makes it writable only where no write fault is needed first, i.e. in
 * shared mappings and on exclusive anonymous pages (can_change_pte_writable). The zero page and
 * pages still shared after fork stay write-protected.
 */
function presentFlags(mm: Mm, vma: Vma, flags: number, pfn: number): number {
  let f = flags & ~(ENTRY_WRITE | ENTRY_PROTNONE);
  if (vma.prot === 0) return f | ENTRY_PROTNONE;
  if (!vma.writable) return f;
  if (vma.shared) return f | ENTRY_WRITE;
  const pool = mm.machine.pool;
  if (
    !(flags & ENTRY_ZERO) &&
    (pool.flags[pfn] & (FRAME_ANON | FRAME_ANON_EXCLUSIVE)) === (FRAME_ANON | FRAME_ANON_EXCLUSIVE)
  ) {
    f |= ENTRY_WRITE;
  }
  return f;
}

/** Flags of a non-present entry after a protection change: writable variants become readable. */
function swapEntryFlags(vma: Vma, flags: number): number {
  const kind = flags & ENTRY_KIND_MASK;
  // Like the kernel, migration and device-private entries always lose write here ("a protection
  // check is difficult, so just be safe"); a later write fault restores it where allowed.
  if (kind === ENTRY_MIGRATION || kind === ENTRY_DEVICE_PRIVATE) return flags & ~ENTRY_WRITE;
  if (kind === ENTRY_DEVICE_EXCLUSIVE && !vma.writable) return flags & ~ENTRY_WRITE;
  return flags;
}

/**
 * Apply `vma.prot` (already updated) to the entries of [start, end) (change_protection). Sends a
 * PROTECTION_VMA invalidation over the range when it has any page table, as the kernel does only
 * where there is something to change. A huge PMD partly inside the range is split.
 */
export function changeProtection(mm: Mm, vma: Vma, start: number, end: number): void {
  if (!populated(mm, start, end)) return;
  mm.notifiers.invalidate(start, end, MmuNotifyEvent.PROTECTION_VMA, null, () => {
    const pt = mm.pt;
    const cur = new PageTableCursor(pt).reset(start, end);
    while (cur.next()) {
      if (cur.kind === SEG_HUGE) {
        const haddr = alignDown(cur.addr, HPAGE_PMD_SIZE);
        if (cur.addr === haddr && cur.end === haddr + HPAGE_PMD_SIZE) {
          if ((cur.flags & ENTRY_KIND_MASK) === ENTRY_PRESENT) {
            pt.setPmdFlags(cur.slot, presentFlags(mm, vma, cur.flags, cur.pfn));
          } else {
            // change_huge_pmd on a PMD migration entry or a device-private PMD: made readable.
            pt.setPmdFlags(cur.slot, swapEntryFlags(vma, cur.flags));
          }
          continue;
        }
        splitHugePmd(mm, cur.slot, haddr);
      } else if (cur.kind !== SEG_TABLE) continue;
      const base = pt.leafAt(cur.slot) * 512;
      const pfns = pt.ptePfn;
      const flagsArr = pt.pteFlags;
      for (let i = base + cur.index, n = i + cur.count; i < n; i++) {
        const f = flagsArr[i];
        const kind = f & ENTRY_KIND_MASK;
        if (kind === ENTRY_PRESENT) flagsArr[i] = presentFlags(mm, vma, f, pfns[i]);
        else if (kind !== 0) flagsArr[i] = swapEntryFlags(vma, f);
      }
    }
  });
}
