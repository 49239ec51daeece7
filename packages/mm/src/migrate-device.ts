import { anonVmaPrepare } from "./anon-vma.js";
import { alignDown, HPAGE_PMD_NR, HPAGE_PMD_SIZE, hex, PAGE_SIZE, PROT_NONE } from "./constants.js";
import {
  deviceEntryFlags,
  ENTRY_DEVICE_PRIVATE,
  ENTRY_DIRTY,
  ENTRY_KIND_MASK,
  ENTRY_MIGRATION,
  ENTRY_NONE,
  ENTRY_OWNER_SHIFT,
  ENTRY_PRESENT,
  ENTRY_PROTNONE,
  ENTRY_WRITE,
  ENTRY_YOUNG,
  ENTRY_ZERO,
  entryOwner,
} from "./entry.js";
import { MmError } from "./errors.js";
import { FRAME_ANON, FRAME_ANON_EXCLUSIVE, FRAME_LARGE } from "./frame-pool.js";
import {
  COLLECT_DONE,
  collectHugePmd,
  finalizeCompound,
  hugeHoleInsertable,
  splitCompoundEntry,
} from "./migrate-device-huge.js";
import {
  MIGRATE_PFN_COMPOUND,
  MIGRATE_PFN_DEVICE,
  MIGRATE_PFN_MIGRATE,
  MIGRATE_PFN_VALID,
  MIGRATE_PFN_WRITE,
  MIGRATE_VMA_SELECT_COMPOUND,
  MIGRATE_VMA_SELECT_DEVICE_PRIVATE,
  MIGRATE_VMA_SELECT_SYSTEM,
  type MigrateVma,
} from "./migrate-vma.js";
import { MmuNotifyEvent } from "./notifier.js";
import { rmapAddPte, rmapRemovePte } from "./rmap.js";
import { forEachMapping } from "./rmap-walk.js";
import { splitHugePmd } from "./thp.js";
import type { MmStruct as Mm } from "./types.js";
import type { Vma } from "./vma.js";

export * from "./migrate-vma.js";

function ownerBits(owner: number): number {
  return owner << ENTRY_OWNER_SHIFT;
}

/**
 * Replace one mapping of a page being collected. The migrating mm is already inside its MIGRATE
 * invalidation; a mapping in another mm (a page shared after fork) is replaced the way
 * try_to_migrate_one does it, inside a CLEAR invalidation of that page in that mm, so that its
 * mirrors drop the old translation before the entry changes.
 */
function unmapMapping(mm: Mm, m: Mm, va: number, change: () => void): void {
  if (m === mm) change();
  else m.notifiers.invalidate(va, va + PAGE_SIZE, MmuNotifyEvent.CLEAR, null, change);
}

/**
 * migrate_vma_setup: collect and unmap. Checks the range (EINVAL if unaligned, empty, not inside
 * one VMA, or the VMA is shared), sends one MIGRATE invalidation with the device as owner, then
 * per page selects: holes and zero pages of the anonymous VMA (SELECT_SYSTEM), anonymous system
 * pages (SELECT_SYSTEM; a THP is split first), and device-private pages of `pgmapOwner`
 * (SELECT_DEVICE_PRIVATE). Each selected page is replaced by a migration entry in every process
 * that maps it (other processes' mirrors get a CLEAR of that page first, as try_to_migrate sends),
 * and the migration holds a reference on it. Returns 0 even if nothing was selected.
 */
export function migrateVmaSetup(args: MigrateVma): void {
  const { mm, start, end } = args;
  if (start % PAGE_SIZE !== 0 || end % PAGE_SIZE !== 0 || end <= start) {
    throw new MmError("EINVAL", `migrate_vma_setup: bad range [${hex(start)}, ${hex(end)})`);
  }
  const vma = mm.findVma(start);
  if (vma === null || end > vma.end) {
    throw new MmError(
      "EINVAL",
      `migrate_vma_setup: [${hex(start)}, ${hex(end)}) does not lie inside one VMA`,
    );
  }
  const machine = mm.machine;
  const pool = machine.pool;
  const compound = (args.selectFlags & MIGRATE_VMA_SELECT_COMPOUND) !== 0;
  mm.notifiers.invalidate(start, end, MmuNotifyEvent.MIGRATE, args.pgmapOwner, () => {
    for (let i = 0; i < args.npages; i++) {
      const va = start + i * PAGE_SIZE;
      // A whole PMD in the range is collected as one compound entry where it can be.
      if (compound && va % HPAGE_PMD_SIZE === 0 && va + HPAGE_PMD_SIZE <= end) {
        if (collectHugePmd(args, vma, i, va) === COLLECT_DONE) {
          i += HPAGE_PMD_NR - 1;
          continue;
        }
      }
      const slot = mm.pt.pmdSlot(va);
      if (slot >= 0 && mm.pt.leafAt(slot) < 0 && (mm.pt.pmdFlags[slot] & ENTRY_KIND_MASK) !== ENTRY_NONE) {
        // A THP, the huge zero page or a device-private PMD is migrated page by page: split it first.
        const haddr = alignDown(va, HPAGE_PMD_SIZE);
        splitHugePmd(mm, slot, haddr);
      }
      const pos = mm.pt.ptePos(va);
      const flags = pos < 0 ? 0 : mm.pt.pteFlags[pos];
      const kind = flags & ENTRY_KIND_MASK;
      if (kind === ENTRY_NONE || (kind === ENTRY_PRESENT && flags & ENTRY_ZERO)) {
        if (vma.shared || !(args.selectFlags & MIGRATE_VMA_SELECT_SYSTEM)) continue;
        args.srcFlags[i] = MIGRATE_PFN_MIGRATE; // a hole: the destination starts zero-filled
        args.cpages++;
        continue;
      }
      const pfn = mm.pt.ptePfn[pos];
      if (kind === ENTRY_PRESENT) {
        if (!(args.selectFlags & MIGRATE_VMA_SELECT_SYSTEM) || !(pool.flags[pfn] & FRAME_ANON)) continue;
        if (pool.flags[pfn] & FRAME_LARGE && !pool.splitLarge(pool.folioHead(pfn))) continue;
        pool.get(pfn); // the migration's own reference
        forEachMapping(machine, mm, va, ENTRY_PRESENT, pfn, (m, p, a) =>
          unmapMapping(mm, m, a, () => {
            const f = m.pt.pteFlags[p];
            m.pt.pteFlags[p] = ENTRY_MIGRATION | (f & (ENTRY_WRITE | ENTRY_DIRTY));
            rmapRemovePte(pool, m.id, pfn);
            pool.put(pfn);
          }),
        );
        args.src[i] = pfn;
        args.srcFlags[i] =
          MIGRATE_PFN_VALID | MIGRATE_PFN_MIGRATE | (flags & ENTRY_WRITE ? MIGRATE_PFN_WRITE : 0);
        args.cpages++;
      } else if (kind === ENTRY_DEVICE_PRIVATE) {
        const owner = entryOwner(flags);
        if (!(args.selectFlags & MIGRATE_VMA_SELECT_DEVICE_PRIVATE) || owner !== args.pgmapOwner) continue;
        const ops = machine.devicePagemap(owner);
        ops.pageGet(pfn);
        forEachMapping(machine, mm, va, ENTRY_DEVICE_PRIVATE, pfn, (m, p, a) => {
          if (entryOwner(m.pt.pteFlags[p]) !== owner) return;
          unmapMapping(mm, m, a, () => {
            m.pt.pteFlags[p] = ENTRY_MIGRATION | ownerBits(owner) | (m.pt.pteFlags[p] & ENTRY_WRITE);
            ops.pagePut(pfn);
          });
        });
        args.src[i] = pfn;
        args.srcFlags[i] =
          MIGRATE_PFN_VALID |
          MIGRATE_PFN_MIGRATE |
          MIGRATE_PFN_DEVICE |
          (flags & ENTRY_WRITE ? MIGRATE_PFN_WRITE : 0);
        args.cpages++;
      }
    }
  });
}

/**
 * migrate_vma_pages: the commit point. An entry without a destination is dropped from the
 * migration; a hole whose PTE was populated meanwhile (a CPU fault won the race) is dropped too.
 */
export function migrateVmaPages(args: MigrateVma): void {
  const { mm } = args;
  for (let i = 0; i < args.npages; i++) {
    let sf = args.srcFlags[i];
    if (!(sf & MIGRATE_PFN_MIGRATE)) continue;
    if (sf & MIGRATE_PFN_COMPOUND) {
      const va = args.start + i * PAGE_SIZE;
      if (args.dst[i] < 0) {
        args.srcFlags[i] = sf & ~MIGRATE_PFN_MIGRATE;
      } else if (args.dstFlags[i] & MIGRATE_PFN_COMPOUND) {
        if (!(sf & MIGRATE_PFN_VALID) && !hugeHoleInsertable(mm, va))
          args.srcFlags[i] = sf & ~MIGRATE_PFN_MIGRATE;
      } else if (splitCompoundEntry(args, i)) {
        sf = args.srcFlags[i]; // now entry i is one page: go on below
      }
      if (args.srcFlags[i] & MIGRATE_PFN_COMPOUND || !(args.srcFlags[i] & MIGRATE_PFN_MIGRATE)) {
        i += HPAGE_PMD_NR - 1;
        continue;
      }
    }
    if (args.dst[i] < 0) {
      args.srcFlags[i] = sf & ~MIGRATE_PFN_MIGRATE;
      continue;
    }
    if (sf & MIGRATE_PFN_VALID) continue;
    const va = args.start + i * PAGE_SIZE;
    const vma = mm.findVma(va);
    const pos = mm.pt.ptePos(va);
    const f = pos < 0 ? 0 : mm.pt.pteFlags[pos];
    const free =
      (f & ENTRY_KIND_MASK) === ENTRY_NONE || ((f & ENTRY_KIND_MASK) === ENTRY_PRESENT && f & ENTRY_ZERO);
    if (vma === null || vma.shared || !free) args.srcFlags[i] = sf & ~MIGRATE_PFN_MIGRATE;
  }
}

/**
 * migrate_vma_finalize: every migration entry is replaced by a mapping of the destination (if the
 * entry migrated) or of the source again (if not); holes that migrated get a new entry. Then the
 * migration's references on sources and destinations are dropped, which frees what no longer has
 * a user. Entries zapped meanwhile (munmap, MADV_DONTNEED) are simply gone.
 */
export function migrateVmaFinalize(args: MigrateVma): void {
  const { mm } = args;
  const machine = mm.machine;
  const pool = machine.pool;
  const owner = args.pgmapOwner;
  for (let i = 0; i < args.npages; i++) {
    const sf = args.srcFlags[i];
    if (sf & MIGRATE_PFN_COMPOUND) {
      finalizeCompound(args, i);
      i += HPAGE_PMD_NR - 1;
      continue;
    }
    const va = args.start + i * PAGE_SIZE;
    const migrated = (sf & MIGRATE_PFN_MIGRATE) !== 0 && args.dst[i] >= 0;
    const dst = args.dst[i];
    const dstDevice = (args.dstFlags[i] & MIGRATE_PFN_DEVICE) !== 0;
    if (!(sf & MIGRATE_PFN_VALID)) {
      if (migrated) insertHole(mm, va, dst, dstDevice, owner);
    } else {
      const src = args.src[i];
      const srcDevice = (sf & MIGRATE_PFN_DEVICE) !== 0;
      const target = migrated ? dst : src;
      const targetDevice = migrated ? dstDevice : srcDevice;
      const exclusive = !srcDevice && (pool.flags[src] & FRAME_ANON_EXCLUSIVE) !== 0;
      let maps = 0;
      forEachMapping(machine, mm, va, ENTRY_MIGRATION, src, (m, p) => {
        const f = m.pt.pteFlags[p];
        if (entryOwner(f) !== (srcDevice ? owner : 0)) return;
        const w = (f & ENTRY_WRITE) !== 0;
        maps++;
        if (targetDevice) {
          m.pt.pteFlags[p] = deviceEntryFlags(ENTRY_DEVICE_PRIVATE, owner, w);
          m.pt.ptePfn[p] = target;
          machine.devicePagemap(owner).pageGet(target);
          if (!srcDevice) {
            m.rssAnon--;
            m.rssDevice++;
          }
        } else {
          // remove_migration_pte builds the entry from vma->vm_page_prot: PROT_NONE stays inaccessible.
          m.pt.pteFlags[p] =
            ENTRY_PRESENT |
            ENTRY_YOUNG |
            protNoneBit(m.findVma(va)) |
            (f & ENTRY_DIRTY) |
            (w ? ENTRY_WRITE | ENTRY_DIRTY : 0);
          m.pt.ptePfn[p] = target;
          pool.get(target);
          rmapAddPte(pool, m.id, target);
          if (srcDevice) {
            m.rssDevice--;
            m.rssAnon++;
          }
        }
      });
      if (!targetDevice && target !== src) {
        pool.flags[target] = FRAME_ANON | (maps === 1 && (exclusive || srcDevice) ? FRAME_ANON_EXCLUSIVE : 0);
      }
      if (srcDevice) machine.devicePagemap(owner).pagePut(src);
      else pool.put(src);
    }
    // The destination's allocation reference; a used destination is now held by its mappings.
    if (dst >= 0) {
      if (dstDevice) machine.devicePagemap(owner).pagePut(dst);
      else pool.put(dst);
    }
  }
}

function insertHole(mm: Mm, va: number, dst: number, dstDevice: boolean, owner: number): void {
  const vma = mm.findVma(va);
  if (vma === null || vma.shared) return;
  const machine = mm.machine;
  const pos = mm.pt.ptePosAlloc(va);
  const f = mm.pt.pteFlags[pos];
  const kind = f & ENTRY_KIND_MASK;
  if (kind !== ENTRY_NONE && !(kind === ENTRY_PRESENT && f & ENTRY_ZERO)) return;
  // migrate_vma_insert_page prepares the anon_vma first: without it fork would not copy the page.
  anonVmaPrepare(mm, vma);
  if (dstDevice) {
    mm.pt.setPte(pos, dst, deviceEntryFlags(ENTRY_DEVICE_PRIVATE, owner, vma.writable));
    machine.devicePagemap(owner).pageGet(dst);
    mm.rssDevice++;
  } else {
    const pool = machine.pool;
    pool.flags[dst] = FRAME_ANON | FRAME_ANON_EXCLUSIVE;
    pool.get(dst);
    rmapAddPte(pool, mm.id, dst);
    mm.rssAnon++;
    const prot = protNoneBit(vma) | (vma.writable ? ENTRY_WRITE | ENTRY_DIRTY : 0);
    mm.pt.setPte(pos, dst, ENTRY_PRESENT | ENTRY_YOUNG | prot);
  }
}

/** ENTRY_PROTNONE for a page of a PROT_NONE VMA (mk_pte with vm_page_prot PAGE_NONE), else 0. */
function protNoneBit(vma: Vma | null): number {
  return vma !== null && vma.prot === PROT_NONE ? ENTRY_PROTNONE : 0;
}
