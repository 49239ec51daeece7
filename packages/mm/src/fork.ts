import {
  ENTRY_DEVICE_EXCLUSIVE,
  ENTRY_DEVICE_PRIVATE,
  ENTRY_KIND_MASK,
  ENTRY_MIGRATION,
  ENTRY_PRESENT,
  ENTRY_WRITE,
  ENTRY_ZERO,
  entryOwner,
} from "./entry.js";
import { restoreExclusivePte } from "./fault.js";
import { FRAME_ANON_EXCLUSIVE } from "./frame-pool.js";
import { MmuNotifyEvent } from "./notifier.js";
import { rmapAddPmd, rmapAddPte } from "./rmap.js";
import type { MmStruct as Mm } from "./types.js";
import type { Vma } from "./vma.js";
import { PageTableCursor, SEG_HUGE, SEG_TABLE } from "./walker.js";

/**
 * fork(): copy `parent`'s VMAs into the empty `child` (dup_mmap). Shared mappings and private
 * mappings that were never faulted are not copied: the child faults them in (vma_needs_copy).
 * Private pages become copy-on-write: both sides write-protected, mapcount raised, no longer
 * exclusive; the parent's mirrors are told with PROTECTION_PAGE over each copied VMA.
 */
export function dupMm(parent: Mm, child: Mm): void {
  for (const vma of parent.vmas) {
    const cv = vma.clone();
    if (vma.shared) vma.shmem!.users++;
    cv.anonVma = vma.anonVma === 0 ? 0 : parent.machine.newAnonVmaId();
    // anon_vma_fork links the child's VMA to the parent's anon_vmas as well as its own.
    cv.forkChild = vma.anonVma !== 0;
    child.vmas.insert(cv);
    if (!vma.shared && vma.anonVma !== 0) {
      parent.notifiers.invalidate(vma.start, vma.end, MmuNotifyEvent.PROTECTION_PAGE, null, () =>
        copyPageRange(parent, child, vma),
      );
    }
  }
}

function copyPageRange(parent: Mm, child: Mm, vma: Vma): void {
  const pool = parent.machine.pool;
  const ppt = parent.pt;
  const cpt = child.pt;
  const cur = new PageTableCursor(ppt).reset(vma.start, vma.end);
  while (cur.next()) {
    if (cur.kind === SEG_HUGE) {
      const hkind = cur.flags & ENTRY_KIND_MASK;
      if (hkind === ENTRY_DEVICE_PRIVATE || hkind === ENTRY_MIGRATION) {
        copyHugeNonPresentPmd(parent, child, cur.slot, cur.addr, cur.pfn, cur.flags);
        continue;
      }
      if (hkind !== ENTRY_PRESENT) continue;
      const f = cur.flags & ~ENTRY_WRITE;
      ppt.setPmdFlags(cur.slot, f);
      cpt.setPmdHuge(cpt.pmdSlotAlloc(cur.addr), cur.pfn, f);
      if (cur.flags & ENTRY_ZERO) continue;
      const head = cur.pfn;
      pool.get(head);
      rmapAddPmd(pool, child.id, head);
      for (let i = 0; i < 512; i++) pool.flags[head + i] &= ~FRAME_ANON_EXCLUSIVE;
      child.rssAnon += 512;
      continue;
    }
    if (cur.kind !== SEG_TABLE) continue;
    // copy_pte_range allocates the child's table before looking at the parent's entries, so a
    // parent table that is empty (MADV_DONTNEED of part of its range leaves one) gives the child
    // an empty table too: a fault under it then maps 4 KiB pages, not a THP.
    const cslot = cpt.pmdSlotAlloc(cur.addr);
    let cleaf = cpt.leafAt(cslot);
    if (cleaf < 0) cleaf = cpt.allocLeaf(cslot);
    const pbase = ppt.leafAt(cur.slot) * 512;
    const cbase = cleaf * 512;
    for (let i = cur.index, n = cur.index + cur.count; i < n; i++) {
      let f = ppt.pteFlags[pbase + i];
      let kind = f & ENTRY_KIND_MASK;
      if (kind === 0) continue;
      if (kind === ENTRY_DEVICE_EXCLUSIVE) {
        // The device loses exclusive access; the entry is copied as the present page it maps.
        restoreExclusivePte(parent, cur.addr + (i - cur.index) * 4096);
        f = ppt.pteFlags[pbase + i];
        kind = ENTRY_PRESENT;
      }
      const pfn = ppt.ptePfn[pbase + i];
      const ro = f & ~ENTRY_WRITE;
      if (kind === ENTRY_PRESENT) {
        if (!(f & ENTRY_ZERO)) {
          pool.get(pfn);
          rmapAddPte(pool, child.id, pfn);
          pool.flags[pfn] &= ~FRAME_ANON_EXCLUSIVE;
          child.rssAnon++;
        }
        ppt.pteFlags[pbase + i] = ro;
        cpt.setPte(cbase + i, pfn, ro);
      } else if (kind === ENTRY_DEVICE_PRIVATE) {
        parent.machine.devicePagemap(entryOwner(f)).pageGet(pfn);
        child.rssDevice++;
        ppt.pteFlags[pbase + i] = ro;
        cpt.setPte(cbase + i, pfn, ro);
      } else if (kind === ENTRY_MIGRATION) {
        if (entryOwner(f) !== 0) child.rssDevice++;
        else child.rssAnon++;
        ppt.pteFlags[pbase + i] = ro;
        cpt.setPte(cbase + i, pfn, ro);
      }
    }
  }
}

/**
 * copy_huge_non_present_pmd: a device-private PMD (or a PMD migration entry) is copied to the
 * child as is, and a writable one is made read-only in both (device-private entries have no
 * read-exclusive variant), so the next write on either side faults. The child's entry holds one
 * more reference on the order-9 device folio (folio_try_dup_anon_rmap_pmd, which cannot fail for
 * device-private folios); a migration entry holds none.
 */
function copyHugeNonPresentPmd(
  parent: Mm,
  child: Mm,
  slot: number,
  addr: number,
  pfn: number,
  flags: number,
): void {
  const ro = flags & ~ENTRY_WRITE;
  parent.pt.setPmdFlags(slot, ro);
  child.pt.setPmdHuge(child.pt.pmdSlotAlloc(addr), pfn, ro);
  const owner = entryOwner(flags);
  if ((flags & ENTRY_KIND_MASK) === ENTRY_DEVICE_PRIVATE) {
    parent.machine.devicePagemap(owner).pageGet(pfn);
    child.rssDevice += 512;
  } else if (owner !== 0) child.rssDevice += 512;
  else child.rssAnon += 512;
}
