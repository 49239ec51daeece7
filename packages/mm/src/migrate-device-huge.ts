import { anonVmaPrepare } from "./anon-vma.js";
import { HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE } from "./constants.js";
import {
  deviceEntryFlags,
  ENTRY_DEVICE_PRIVATE,
  ENTRY_DIRTY,
  ENTRY_KIND_MASK,
  ENTRY_MIGRATION,
  ENTRY_NONE,
  ENTRY_OWNER_SHIFT,
  ENTRY_PRESENT,
  ENTRY_WRITE,
  ENTRY_YOUNG,
  ENTRY_ZERO,
  entryOwner,
} from "./entry.js";
import { FRAME_ANON, FRAME_ANON_EXCLUSIVE, FRAME_LARGE } from "./frame-pool.js";
import {
  MIGRATE_PFN_COMPOUND,
  MIGRATE_PFN_DEVICE,
  MIGRATE_PFN_MIGRATE,
  MIGRATE_PFN_VALID,
  MIGRATE_PFN_WRITE,
  MIGRATE_VMA_SELECT_DEVICE_PRIVATE,
  MIGRATE_VMA_SELECT_SYSTEM,
  type MigrateVma,
} from "./migrate-vma.js";
import { MmuNotifyEvent } from "./notifier.js";
import { rmapAddPmd, rmapAddPte, rmapRemovePmd } from "./rmap.js";
import { forEachAnonCandidate, forEachPmdMapping } from "./rmap-walk.js";
import { splitHugePmd, splitHugePmdLocked } from "./thp.js";
import type { MmStruct as Mm } from "./types.js";
import type { Vma } from "./vma.js";

// The PMD-level half of migrate_vma (v6.18+, MIGRATE_VMA_SELECT_COMPOUND): collecting a whole
// PMD as one compound entry, splitting it when the destination is base pages, and putting PMD
// entries back at finalize.

/** Result of {@link collectHugePmd}: the 512 entries were dealt with, or the caller goes on per page. */
export const COLLECT_DONE = 0;
export const COLLECT_PER_PAGE = 1;

/**
 * Replace one PMD mapping of a folio being collected: in the migrating mm directly (it is inside
 * its MIGRATE invalidation), in another mm inside a CLEAR invalidation of the 2 MiB there.
 */
function unmapPmdMapping(mm: Mm, m: Mm, haddr: number, change: () => void): void {
  if (m === mm) change();
  else m.notifiers.invalidate(haddr, haddr + HPAGE_PMD_SIZE, MmuNotifyEvent.CLEAR, null, change);
}

/**
 * migrate_vma_collect_huge_pmd / migrate_vma_collect_hole for the PMD at `va` (2 MiB aligned,
 * wholly inside the range), entry index `i`. A pmd_none hole or the huge zero page of an
 * anonymous VMA becomes one MIGRATE|COMPOUND hole (SELECT_SYSTEM); a THP mapped only by PMDs and
 * held by nothing else becomes one compound entry, its PMDs replaced by PMD migration entries
 * (SELECT_SYSTEM); an order-9 device folio of `pgmapOwner` mapped only by PMDs likewise
 * (SELECT_DEVICE_PRIVATE). Entries that are not selected are skipped whole; a PTE table, or a
 * folio that is also PTE-mapped or pinned, goes back to the per-page path (which splits it).
 */
export function collectHugePmd(args: MigrateVma, vma: Vma, i: number, va: number): number {
  const mm = args.mm;
  const pt = mm.pt;
  const machine = mm.machine;
  const pool = machine.pool;
  const slot = pt.pmdSlot(va);
  if (slot >= 0 && pt.pmdChild[slot] !== 0) return COLLECT_PER_PAGE;
  const f = slot < 0 ? 0 : pt.pmdFlags[slot];
  const kind = f & ENTRY_KIND_MASK;
  const sel = args.selectFlags;
  if (kind === ENTRY_NONE || (kind === ENTRY_PRESENT && f & ENTRY_ZERO)) {
    // Only anonymous memory can be populated; the huge zero page counts as a hole.
    if (vma.shared || !(sel & MIGRATE_VMA_SELECT_SYSTEM)) return COLLECT_DONE;
    args.srcFlags[i] = MIGRATE_PFN_MIGRATE | MIGRATE_PFN_COMPOUND;
    args.cpages++;
    return COLLECT_DONE;
  }
  const write = f & ENTRY_WRITE ? MIGRATE_PFN_WRITE : 0;
  const head = pt.pmdPfn[slot];
  if (kind === ENTRY_PRESENT) {
    if (!(sel & MIGRATE_VMA_SELECT_SYSTEM) || !(pool.flags[head] & FRAME_ANON)) return COLLECT_DONE;
    const b = (head / HPAGE_PMD_NR) | 0;
    // migrate_vma_check_page: every reference must be a mapping, and every mapping a PMD here.
    if (pool.entireMapcount[b] !== pool.largeMapcount[b] || pool.refcount[head] !== pool.largeMapcount[b])
      return COLLECT_PER_PAGE;
    pool.get(head); // the migration's own reference
    forEachPmdMapping(machine, mm, va, ENTRY_PRESENT, head, (m, s, at) =>
      unmapPmdMapping(mm, m, at, () => {
        m.pt.setPmdFlags(s, ENTRY_MIGRATION | (m.pt.pmdFlags[s] & (ENTRY_WRITE | ENTRY_DIRTY)));
        rmapRemovePmd(pool, m.id, head);
        pool.put(head);
      }),
    );
    args.src[i] = head;
    args.srcFlags[i] = MIGRATE_PFN_VALID | MIGRATE_PFN_MIGRATE | MIGRATE_PFN_COMPOUND | write;
    args.cpages++;
    return COLLECT_DONE;
  }
  if (kind === ENTRY_DEVICE_PRIVATE) {
    const owner = entryOwner(f);
    if (!(sel & MIGRATE_VMA_SELECT_DEVICE_PRIVATE) || owner !== args.pgmapOwner) return COLLECT_DONE;
    const ops = machine.devicePagemap(owner);
    let maps = 0;
    forEachPmdMapping(machine, mm, va, ENTRY_DEVICE_PRIVATE, head, (m, s) => {
      if (entryOwner(m.pt.pmdFlags[s]) === owner) maps++;
    });
    if (ops.folioRefs(head) !== maps) return COLLECT_PER_PAGE;
    ops.pageGet(head);
    forEachPmdMapping(machine, mm, va, ENTRY_DEVICE_PRIVATE, head, (m, s, at) => {
      if (entryOwner(m.pt.pmdFlags[s]) !== owner) return;
      unmapPmdMapping(mm, m, at, () => {
        m.pt.setPmdFlags(
          s,
          ENTRY_MIGRATION | (owner << ENTRY_OWNER_SHIFT) | (m.pt.pmdFlags[s] & ENTRY_WRITE),
        );
        ops.pagePut(head);
      });
    });
    args.src[i] = head;
    args.srcFlags[i] =
      MIGRATE_PFN_VALID | MIGRATE_PFN_MIGRATE | MIGRATE_PFN_DEVICE | MIGRATE_PFN_COMPOUND | write;
    args.cpages++;
    return COLLECT_DONE;
  }
  // Another migration's PMD entry: skipped (the kernel waits and walks again).
  return COLLECT_DONE;
}

/**
 * True if an order-9 folio can be inserted for a compound hole at `va`
 * (migrate_vma_insert_huge_pmd_page): an anonymous VMA holds the whole aligned PMD, and the PMD is
 * still none or the huge zero page (a CPU fault may have filled it meanwhile).
 */
export function hugeHoleInsertable(mm: Mm, va: number): boolean {
  const vma = mm.findVma(va);
  if (vma === null || vma.shared || va < vma.start || va + HPAGE_PMD_SIZE > vma.end) return false;
  const slot = mm.pt.pmdSlot(va);
  if (slot < 0) return true;
  if (mm.pt.pmdChild[slot] !== 0) return false;
  const f = mm.pt.pmdFlags[slot];
  const kind = f & ENTRY_KIND_MASK;
  return kind === ENTRY_NONE || (kind === ENTRY_PRESENT && (f & ENTRY_ZERO) !== 0);
}

/**
 * A compound source entry `i` whose destination is base pages: make it 512 single entries, as
 * migrate_vma_split_unmapped_folio does. A hole becomes 512 holes (a huge zero page is split into
 * 4 KiB zero pages first). A THP or device folio is split: its PMD migration entries (in every mm
 * that maps it) become PTE migration entries, the folio becomes 512 order-0 folios each held by
 * the migration, and entry i + j gets page head + j. Returns false if the device folio could not
 * be split (the entry then stays compound and does not migrate).
 */
export function splitCompoundEntry(args: MigrateVma, i: number): boolean {
  const mm = args.mm;
  const machine = mm.machine;
  const sf = args.srcFlags[i] & ~MIGRATE_PFN_COMPOUND;
  const va = args.start + i * PAGE_SIZE;
  if (!(sf & MIGRATE_PFN_VALID)) {
    const slot = mm.pt.pmdSlot(va);
    if (slot >= 0 && mm.pt.pmdChild[slot] === 0 && mm.pt.pmdFlags[slot] & ENTRY_ZERO)
      splitHugePmd(mm, slot, va);
    args.srcFlags.fill(MIGRATE_PFN_MIGRATE, i, i + HPAGE_PMD_NR);
    return true;
  }
  const head = args.src[i];
  const device = (sf & MIGRATE_PFN_DEVICE) !== 0;
  const owner = device ? args.pgmapOwner : 0;
  if (device) {
    if (!machine.devicePagemap(owner).folioSplit(head)) {
      // Still one compound entry, not migrating: finalize puts its PMDs back.
      args.srcFlags[i] &= ~MIGRATE_PFN_MIGRATE;
      return false;
    }
  } else {
    machine.pool.splitUnmappedLarge(head);
  }
  forEachPmdMapping(machine, mm, va, ENTRY_MIGRATION, head, (m, s) => {
    if (entryOwner(m.pt.pmdFlags[s]) === owner) splitHugePmdLocked(m, s);
  });
  for (let j = 0; j < HPAGE_PMD_NR; j++) {
    args.src[i + j] = head + j;
    args.srcFlags[i + j] = sf;
  }
  return true;
}

/** Insert the order-9 destination `dst` of a compound hole at `va`: one PMD (migrate_vma_insert_huge_pmd_page). */
function insertHugeHole(mm: Mm, va: number, dst: number, dstDevice: boolean, owner: number): void {
  if (!hugeHoleInsertable(mm, va)) return;
  const vma = mm.findVma(va)!;
  anonVmaPrepare(mm, vma);
  const machine = mm.machine;
  const slot = mm.pt.pmdSlotAlloc(va);
  if (dstDevice) {
    mm.pt.setPmdHuge(slot, dst, deviceEntryFlags(ENTRY_DEVICE_PRIVATE, owner, vma.writable));
    machine.devicePagemap(owner).pageGet(dst);
    mm.rssDevice += HPAGE_PMD_NR;
    return;
  }
  const pool = machine.pool;
  pool.flags.fill(FRAME_LARGE | FRAME_ANON | FRAME_ANON_EXCLUSIVE, dst, dst + HPAGE_PMD_NR);
  pool.get(dst);
  rmapAddPmd(pool, mm.id, dst);
  mm.rssAnon += HPAGE_PMD_NR;
  mm.pt.setPmdHuge(slot, dst, ENTRY_PRESENT | ENTRY_YOUNG | (vma.writable ? ENTRY_WRITE | ENTRY_DIRTY : 0));
}

/**
 * Put back the mappings of compound source `src` in `m` (remove_migration_pmd, or
 * remove_migration_ptes where a partial MADV_DONTNEED split the PMD migration entry meanwhile),
 * mapping `target` (the destination if the entry migrated, else the source). Returns the
 * mappings restored (0 or 1: one per address space).
 */
function restoreHuge(
  m: Mm,
  va: number,
  src: number,
  srcDevice: boolean,
  target: number,
  targetDevice: boolean,
  owner: number,
): number {
  const pt = m.pt;
  const machine = m.machine;
  const pool = machine.pool;
  const slot = pt.pmdSlot(va);
  if (slot < 0) return 0;
  const srcOwner = srcDevice ? owner : 0;
  const leaf = pt.pmdChild[slot] - 1;
  const rss = (n: number) => {
    if (srcDevice === targetDevice) return;
    if (targetDevice) {
      m.rssAnon -= n;
      m.rssDevice += n;
    } else {
      m.rssDevice -= n;
      m.rssAnon += n;
    }
  };
  if (leaf < 0) {
    const f = pt.pmdFlags[slot];
    if ((f & ENTRY_KIND_MASK) !== ENTRY_MIGRATION || pt.pmdPfn[slot] !== src || entryOwner(f) !== srcOwner)
      return 0;
    const w = (f & ENTRY_WRITE) !== 0;
    if (targetDevice) {
      pt.setPmdHuge(slot, target, deviceEntryFlags(ENTRY_DEVICE_PRIVATE, owner, w));
      machine.devicePagemap(owner).pageGet(target);
    } else {
      pt.setPmdHuge(
        slot,
        target,
        ENTRY_PRESENT | ENTRY_YOUNG | (f & ENTRY_DIRTY) | (w ? ENTRY_WRITE | ENTRY_DIRTY : 0),
      );
      pool.get(target);
      rmapAddPmd(pool, m.id, target);
    }
    rss(HPAGE_PMD_NR);
    return 1;
  }
  let restored = 0;
  const base = leaf * HPAGE_PMD_NR;
  for (let j = 0; j < HPAGE_PMD_NR; j++) {
    const p = base + j;
    const f = pt.pteFlags[p];
    if ((f & ENTRY_KIND_MASK) !== ENTRY_MIGRATION || pt.ptePfn[p] !== src + j || entryOwner(f) !== srcOwner)
      continue;
    const w = (f & ENTRY_WRITE) !== 0;
    pt.ptePfn[p] = target + j;
    if (targetDevice) {
      pt.pteFlags[p] = deviceEntryFlags(ENTRY_DEVICE_PRIVATE, owner, w);
      machine.devicePagemap(owner).pageGet(target + j);
    } else {
      pt.pteFlags[p] = ENTRY_PRESENT | ENTRY_YOUNG | (f & ENTRY_DIRTY) | (w ? ENTRY_WRITE | ENTRY_DIRTY : 0);
      pool.get(target + j);
      rmapAddPte(pool, m.id, target + j);
    }
    restored++;
  }
  rss(restored);
  return restored > 0 ? 1 : 0;
}

/**
 * migrate_vma_finalize for compound entry `i` (still compound after migrateVmaPages): a hole that
 * migrated gets its order-9 destination as one PMD; a folio's migration entries are replaced by
 * the destination (migrated) or the source again (not migrated) in every mm. Then the migration's
 * reference on the source and the allocation reference on the destination(s) are dropped.
 */
export function finalizeCompound(args: MigrateVma, i: number): void {
  const mm = args.mm;
  const machine = mm.machine;
  const pool = machine.pool;
  const owner = args.pgmapOwner;
  const sf = args.srcFlags[i];
  const va = args.start + i * PAGE_SIZE;
  const dst = args.dst[i];
  const dstDevice = (args.dstFlags[i] & MIGRATE_PFN_DEVICE) !== 0;
  const migrated =
    (sf & MIGRATE_PFN_MIGRATE) !== 0 && dst >= 0 && (args.dstFlags[i] & MIGRATE_PFN_COMPOUND) !== 0;
  if (!(sf & MIGRATE_PFN_VALID)) {
    if (migrated) insertHugeHole(mm, va, dst, dstDevice, owner);
  } else {
    const src = args.src[i];
    const srcDevice = (sf & MIGRATE_PFN_DEVICE) !== 0;
    const target = migrated ? dst : src;
    const targetDevice = migrated ? dstDevice : srcDevice;
    const exclusive = !srcDevice && (pool.flags[src] & FRAME_ANON_EXCLUSIVE) !== 0;
    const newThp = !targetDevice && target !== src;
    if (newThp) pool.flags.fill(FRAME_LARGE | FRAME_ANON, target, target + HPAGE_PMD_NR);
    let maps = 0;
    forEachAnonCandidate(machine, mm, va, (m, at) => {
      if (at % HPAGE_PMD_SIZE === 0) maps += restoreHuge(m, at, src, srcDevice, target, targetDevice, owner);
    });
    if (newThp && maps === 1 && (exclusive || srcDevice)) {
      pool.flags.fill(FRAME_LARGE | FRAME_ANON | FRAME_ANON_EXCLUSIVE, target, target + HPAGE_PMD_NR);
    }
    if (srcDevice) machine.devicePagemap(owner).pagePut(src);
    else pool.put(src);
  }
  // The allocation references: the order-9 destination, and any base pages a caller filled in
  // for the entries of a compound source that was not split after all.
  for (let j = 0; j < HPAGE_PMD_NR; j++) {
    const d = args.dst[i + j];
    if (d < 0) continue;
    if (args.dstFlags[i + j] & MIGRATE_PFN_DEVICE) machine.devicePagemap(owner).pagePut(d);
    else pool.put(d);
  }
}
