import { HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE } from "./constants.js";
import { ENTRY_KIND_MASK, ENTRY_PRESENT, ENTRY_PROTNONE, ENTRY_YOUNG, ENTRY_ZERO } from "./entry.js";
import { FRAME_LARGE, ZERO_PFN } from "./frame-pool.js";
import { MmuNotifyEvent } from "./notifier.js";
import { rmapRemovePte } from "./rmap.js";
import { forEachAnonCandidate, forEachMapping } from "./rmap-walk.js";
import { splitHugePmd } from "./thp.js";
import type { MmStruct as Mm } from "./types.js";

/**
 * split_folio of the anonymous THP that maps `pfn` at `va` in `mm`: every PMD mapping of it (in
 * any process) is split first (unmap_folio with TTU_SPLIT_HUGE_PMD), mirrors of every process
 * mapping it get a CLEAR over the folio's range there (try_to_migrate_one), the folio becomes 512
 * small folios, and, when the machine maps the zero page, every subpage that holds only zeros is
 * remapped to the shared zero page and freed (remap_page with RMP_USE_SHARED_ZEROPAGE,
 * try_to_map_unused_to_zeropage). Fails (false) when the folio has references beyond its mappings
 * (can_split_folio), e.g. a migration in flight.
 */
export function splitFolio(mm: Mm, va: number, pfn: number): boolean {
  const machine = mm.machine;
  const pool = machine.pool;
  if (!(pool.flags[pfn] & FRAME_LARGE)) return true;
  const head = pool.folioHead(pfn);
  const b = (head / HPAGE_PMD_NR) | 0;
  if (pool.refcount[head] !== pool.largeMapcount[b]) return false;
  const base = va - (pfn - head) * PAGE_SIZE;
  forEachAnonCandidate(machine, mm, base, (m, a) => {
    const slot = m.pt.pmdSlot(a);
    if (slot < 0 || m.pt.leafAt(slot) >= 0) return;
    if ((m.pt.pmdFlags[slot] & ENTRY_KIND_MASK) !== ENTRY_PRESENT || m.pt.pmdPfn[slot] !== head) return;
    splitHugePmd(m, slot, a);
  });
  const targets: { m: Mm; start: number; end: number }[] = [];
  forEachAnonCandidate(machine, mm, base, (m, a) => {
    const v = m.findVma(a) ?? m.findVma(a + HPAGE_PMD_SIZE - PAGE_SIZE);
    if (v === null || v.shared) return;
    const start = Math.max(a, v.start);
    const end = Math.min(a + HPAGE_PMD_SIZE, v.end);
    if (mapsFolio(m, start, end, head)) targets.push({ m, start, end });
  });
  let ok = false;
  // Every process mapping the folio is inside its CLEAR while the folio is split and remapped.
  const within = (k: number): void => {
    if (k < targets.length) {
      const t = targets[k];
      t.m.notifiers.invalidate(t.start, t.end, MmuNotifyEvent.CLEAR, null, () => within(k + 1));
      return;
    }
    ok = pool.splitLarge(head);
    if (ok && machine.config.zeroPage) remapZeroSubpages(mm, base, head);
  };
  within(0);
  return ok;
}

/** Map every mapped subpage of the split folio at `head` that holds only zeros to the zero page. */
function remapZeroSubpages(mm: Mm, base: number, head: number): void {
  const machine = mm.machine;
  const pool = machine.pool;
  const content = pool.content;
  for (let i = 0; i < HPAGE_PMD_NR; i++) {
    const p = head + i;
    if (pool.mapcount[p] === 0 || !content.isZero(p)) continue;
    forEachMapping(machine, mm, base + i * PAGE_SIZE, ENTRY_PRESENT, p, (m, pos) => {
      const f = m.pt.pteFlags[pos];
      m.pt.setPte(pos, ZERO_PFN, ENTRY_PRESENT | ENTRY_ZERO | (f & (ENTRY_YOUNG | ENTRY_PROTNONE)));
      rmapRemovePte(pool, m.id, p);
      m.rssDrop(p, 1);
      pool.put(p);
    });
  }
}

function mapsFolio(m: Mm, start: number, end: number, head: number): boolean {
  for (let a = start; a < end; a += PAGE_SIZE) {
    const pos = m.pt.ptePos(a);
    if (pos < 0) continue;
    const f = m.pt.pteFlags[pos];
    const p = m.pt.ptePfn[pos];
    if ((f & ENTRY_KIND_MASK) === ENTRY_PRESENT && !(f & ENTRY_ZERO) && p >= head && p < head + HPAGE_PMD_NR)
      return true;
  }
  return false;
}
