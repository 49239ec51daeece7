import { PAGE_SIZE } from "./constants.js";
import { ENTRY_KIND_MASK } from "./entry.js";
import type { MachineState as Machine, MmStruct as Mm } from "./types.js";

/**
 * Visit every live address space whose PTE at `va` has kind `kind` and frame `pfn` (the reverse
 * map walk the kernel does with anon_vma chains). The simulator has no mremap, so an anonymous
 * page shared after fork sits at the same virtual address in every process that maps it, and
 * looking at that one address in each mm finds all its mappings.
 */
export function forEachMapping(
  machine: Machine,
  va: number,
  kind: number,
  pfn: number,
  fn: (mm: Mm, pos: number) => void,
): void {
  const page = va - (va % PAGE_SIZE);
  for (const mm of machine.mms) {
    const pos = mm.pt.ptePos(page);
    if (pos < 0) continue;
    if ((mm.pt.pteFlags[pos] & ENTRY_KIND_MASK) === kind && mm.pt.ptePfn[pos] === pfn) fn(mm, pos);
  }
}

/**
 * Visit every live address space whose PMD at `haddr` (2 MiB aligned) is a huge entry of kind
 * `kind` with frame `pfn`: the PMD mappings of a large folio (a THP, or an order-9 device folio),
 * found the same way as {@link forEachMapping}.
 */
export function forEachPmdMapping(
  machine: Machine,
  haddr: number,
  kind: number,
  pfn: number,
  fn: (mm: Mm, slot: number) => void,
): void {
  for (const mm of machine.mms) {
    const slot = mm.pt.pmdSlot(haddr);
    if (slot < 0 || mm.pt.pmdChild[slot] !== 0) continue;
    if ((mm.pt.pmdFlags[slot] & ENTRY_KIND_MASK) === kind && mm.pt.pmdPfn[slot] === pfn) fn(mm, slot);
  }
}
