import { HPAGE_PMD_SIZE, PAGE_SIZE } from "./constants.js";
import { ENTRY_KIND_MASK } from "./entry.js";
import type { MachineState as Machine, MmStruct as Mm } from "./types.js";

/**
 * Visit every address at which an anonymous page mapped at `va` in `from` may be mapped in some
 * live address space (the candidates of the kernel's anon_vma rmap walk): the page's linear index
 * (vma.pgoff plus its page offset in the VMA, as page->index) located in every private VMA that
 * covers it. Until an mremap has moved a private VMA, the linear index of every address is its
 * page number, so the candidates are `va` itself in every mm and the walk looks nowhere else.
 */
export function forEachAnonCandidate(
  machine: Machine,
  from: Mm,
  va: number,
  fn: (mm: Mm, va: number) => void,
): void {
  const page = va - (va % PAGE_SIZE);
  if (!machine.anonMoved) {
    for (const mm of machine.mms) fn(mm, page);
    return;
  }
  const v0 = from.findVma(page);
  if (v0?.shared) return;
  // An address no longer mapped in `from` (its VMA moved since the caller looked) is taken at the
  // index it had when mapped, its page number.
  const index = v0 === null ? page / PAGE_SIZE : v0.pgoff + (page - v0.start) / PAGE_SIZE;
  for (const mm of machine.mms) {
    for (const v of mm.vmas) {
      if (v.shared || index < v.pgoff || index >= v.pgoff + v.pages) continue;
      fn(mm, v.start + (index - v.pgoff) * PAGE_SIZE);
    }
  }
}

/**
 * Visit every live address space whose PTE for the anonymous page mapped at `va` in `from` has
 * kind `kind` and frame `pfn` (the reverse map walk the kernel does with anon_vma chains); `fn`
 * gets the mm, the PTE position and the page's address in that mm.
 */
export function forEachMapping(
  machine: Machine,
  from: Mm,
  va: number,
  kind: number,
  pfn: number,
  fn: (mm: Mm, pos: number, va: number) => void,
): void {
  forEachAnonCandidate(machine, from, va, (mm, a) => {
    const pos = mm.pt.ptePos(a);
    if (pos < 0) return;
    if ((mm.pt.pteFlags[pos] & ENTRY_KIND_MASK) === kind && mm.pt.ptePfn[pos] === pfn) fn(mm, pos, a);
  });
}

/**
 * Visit every live address space that maps the large folio mapped by the PMD at `haddr` (2 MiB
 * aligned) in `from` with a huge entry of kind `kind` and frame `pfn`: the PMD mappings of a THP
 * or an order-9 device folio, found the same way as {@link forEachMapping} (an mremap moves a
 * PMD whole only to a 2 MiB aligned address). `fn` gets the mm, the PMD slot and the address.
 */
export function forEachPmdMapping(
  machine: Machine,
  from: Mm,
  haddr: number,
  kind: number,
  pfn: number,
  fn: (mm: Mm, slot: number, va: number) => void,
): void {
  forEachAnonCandidate(machine, from, haddr, (mm, a) => {
    if (a % HPAGE_PMD_SIZE !== 0) return;
    const slot = mm.pt.pmdSlot(a);
    if (slot < 0 || mm.pt.pmdChild[slot] !== 0) return;
    if ((mm.pt.pmdFlags[slot] & ENTRY_KIND_MASK) === kind && mm.pt.pmdPfn[slot] === pfn) fn(mm, slot, a);
  });
}
