import type { MmStruct as Mm } from "./types.js";
import type { Vma } from "./vma.js";

/**
 * anon_vma_prepare: make sure a private VMA has an anon_vma before the first anonymous page is
 * mapped in it: a neighbour's reusable one if there is one, else a new one. Every path that maps
 * a new anonymous page into a VMA calls it (do_anonymous_page, do_huge_pmd_anonymous_page,
 * migrate_vma_insert_page, the COW paths): fork copies only VMAs that have one (vma_needs_copy),
 * so a page mapped without it would be lost to the child.
 */
export function anonVmaPrepare(mm: Mm, vma: Vma): void {
  if (vma.anonVma !== 0 || vma.shared) return;
  vma.anonVma = mm.vmas.findMergeableAnonVma(vma) || mm.machine.newAnonVmaId();
}
