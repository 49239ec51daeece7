import { hex, PAGE_SIZE, PROT_READ, PROT_WRITE } from "./constants.js";
import type { ShmemObject } from "./shmem.js";
import { VmaTree, type VmaTreeBlock, type VmaTreeItem } from "./vma-tree.js";

/** THP advice recorded on a VMA (VM_HUGEPAGE / VM_NOHUGEPAGE). */
export const THP_ADVICE_NONE = 0;
export const THP_ADVICE_HUGEPAGE = 1;
export const THP_ADVICE_NOHUGEPAGE = 2;

/**
 * A virtual memory area: [start, end) with one protection and one backing. Private anonymous
 * VMAs get an `anonVma` id on their first fault (anon_vma_prepare); shared anonymous VMAs map
 * `shmem` starting at page offset `pgoff`. A private VMA's `pgoff` is the linear page index of its
 * start (its page number when mapped; mremap moves it unchanged).
 */
export class Vma implements VmaTreeItem<Vma> {
  constructor(
    /** First address; changes only through the VmaList holding the VMA (it indexes the bounds). */
    readonly start: number,
    /** End (exclusive); changes only through the VmaList holding the VMA. */
    readonly end: number,
    public prot: number,
    readonly shared: boolean,
    public thpAdvice: number,
    /** MAP_NORESERVE (VM_NORESERVE): such VMAs never merge with accounted ones. */
    readonly noreserve: boolean,
    public anonVma: number,
    readonly shmem: ShmemObject | null,
    public pgoff: number,
  ) {}

  /**
   * The VMA was forked from a parent's VMA that had an anon_vma, so its anon_vma chain also
   * links the parent's (vma_is_fork_child). The kernel neither lends such an anon_vma to a
   * neighbour nor merges such a VMA with an unfaulted one, to keep the anon_vma root lock from
   * covering ever more folios.
   */
  forkChild = false;

  /**
   * VM_ACCOUNT: the VMA's pages are charged to the commit limit. Set by mmap for private writable
   * mappings (not MAP_NORESERVE) and by mprotect making a never-writable private VMA writable;
   * cleared by mprotect making it read-only while it has no anon_vma yet. It is a VMA flag outside
   * the access bits, so VMAs that differ in it neither merge nor lend each other an anon_vma.
   */
  account = false;

  /** @internal */ treePrev: Vma | null = null;
  /** @internal */ treeNext: Vma | null = null;
  /** @internal */ treeLeaf: VmaTreeBlock<Vma> | null = null;

  get readable(): boolean {
    return (this.prot & PROT_READ) !== 0;
  }

  get writable(): boolean {
    return (this.prot & PROT_WRITE) !== 0;
  }

  /** Pages in the VMA. */
  get pages(): number {
    return (this.end - this.start) / PAGE_SIZE;
  }

  /** Page offset in the shmem object of address `va` (shared VMAs). */
  shmemIndex(va: number): number {
    return this.pgoff + (va - this.start) / PAGE_SIZE;
  }

  /** An unlinked copy of this VMA over [start, end) (default: the same bounds). */
  clone(start = this.start, end = this.end): Vma {
    const v = new Vma(
      start,
      end,
      this.prot,
      this.shared,
      this.thpAdvice,
      this.noreserve,
      this.anonVma,
      this.shmem,
      this.pgoff,
    );
    v.forkChild = this.forkChild;
    v.account = this.account;
    return v;
  }

  toString(): string {
    const p = `${this.prot & PROT_READ ? "r" : "-"}${this.prot & PROT_WRITE ? "w" : "-"}`;
    return `[${hex(this.start)}, ${hex(this.end)}) ${p} ${this.shared ? "shared" : "private"}`;
  }
}

/** True if `a` (ending where `b` starts) may merge with `b` (vma_merge's compatibility test). */
function mergeable(a: Vma, b: Vma): boolean {
  if (a.prot !== b.prot || !anonVmaCompatible(a, b)) return false;
  // Both kinds need contiguous vm_pgoff (a private VMA moved by mremap keeps its old one).
  if (a.pgoff + a.pages !== b.pgoff) return false;
  if (a.shared) return a.shmem === b.shmem;
  if (a.anonVma !== 0 && b.anonVma !== 0) return a.anonVma === b.anonVma;
  // One side is unfaulted and would take the other's anon_vma (is_mergeable_anon_vma): not one
  // that a fork child links with its parent's.
  if (a.anonVma !== 0) return !a.forkChild;
  if (b.anonVma !== 0) return !b.forkChild;
  return true;
}

/**
 * anon_vma_compatible: `a` ends where `b` starts and they differ at most in protection (the
 * flags outside VM_ACCESS_FLAGS must match, VM_ACCOUNT included).
 */
function anonVmaCompatible(a: Vma, b: Vma): boolean {
  return (
    a.end === b.start &&
    a.shared === b.shared &&
    a.thpAdvice === b.thpAdvice &&
    a.noreserve === b.noreserve &&
    a.account === b.account
  );
}

/**
 * The VMAs of an address space, sorted by address, non-overlapping, indexed by a {@link VmaTree}
 * (the role of the kernel's maple tree): every lookup, insert, split and removal is O(log n), and
 * the free-gap search for mmap placement is O(log n) too. Splits and merges follow the kernel so
 * that THP eligibility (which needs an aligned 2 MiB range inside one VMA) matches.
 */
export class VmaList {
  private readonly tree = new VmaTree<Vma>();

  /** Number of VMAs (map_count). */
  get size(): number {
    return this.tree.size;
  }

  /** Lowest VMA, or null. */
  get first(): Vma | null {
    return this.tree.first;
  }

  /** Highest VMA, or null. */
  get last(): Vma | null {
    return this.tree.last;
  }

  /** The VMA after `vma` in address order, or null. */
  next(vma: Vma): Vma | null {
    return vma.treeNext;
  }

  /** The VMA before `vma` in address order, or null. */
  prev(vma: Vma): Vma | null {
    return vma.treePrev;
  }

  /** The lowest VMA whose end is above `va` (find_vma), or null. */
  findFrom(va: number): Vma | null {
    return this.tree.findFrom(va);
  }

  /** The VMA containing `va`, or null. */
  find(va: number): Vma | null {
    const v = this.tree.findFrom(va);
    return v !== null && v.start <= va ? v : null;
  }

  /** True if some VMA intersects [start, end). */
  intersects(start: number, end: number): boolean {
    const v = this.tree.findFrom(start);
    return v !== null && v.start < end;
  }

  /** The VMAs in address order. Mutating the list while iterating is not supported. */
  *[Symbol.iterator](): IterableIterator<Vma> {
    for (let v = this.tree.first; v !== null; v = v.treeNext) yield v;
  }

  /** A snapshot array of the VMAs in address order (O(n): for dumps and tests). */
  toArray(): Vma[] {
    const out: Vma[] = [];
    for (let v = this.tree.first; v !== null; v = v.treeNext) out.push(v);
    return out;
  }

  /** Insert a VMA that overlaps none. */
  insert(vma: Vma): void {
    this.tree.insert(vma);
  }

  /**
   * Move the bounds of `vma` (in this list) to [start, end) without changing anything else
   * (vma_expand / vma_shrink); the new bounds must overlap no other VMA.
   */
  adjust(vma: Vma, start: number, end: number): void {
    this.tree.setBounds(vma, start, end);
  }

  /** Split the VMA containing `addr` so that a VMA boundary falls at `addr`. */
  splitAt(addr: number): void {
    const v = this.find(addr);
    if (v === null || v.start === addr) return;
    const tail = v.clone(addr, v.end);
    tail.pgoff = v.pgoff + (addr - v.start) / PAGE_SIZE;
    if (v.shared) v.shmem!.users++;
    this.tree.setBounds(v, v.start, addr);
    this.tree.insert(tail);
  }

  /** Remove and return the VMAs inside [start, end); boundaries must already be split. */
  removeRange(start: number, end: number): Vma[] {
    const out: Vma[] = [];
    let v = this.tree.findFrom(start);
    while (v !== null && v.start < end) {
      const next = v.treeNext;
      this.tree.remove(v);
      out.push(v);
      v = next;
    }
    return out;
  }

  /** Remove every VMA; returns them in address order (exit_mmap). */
  removeAll(): Vma[] {
    return this.tree.clear();
  }

  /**
   * The highest free range of at least `need` bytes inside [low, high), as its top address, or -1
   * (the search of unmapped_area_topdown). O(log n) through the gap index.
   */
  topDownGap(low: number, high: number, need: number): number {
    // The highest VMA starting below the top of the window: the gap above it comes first unless
    // it reaches past the top.
    const below = this.tree.findBefore(high);
    if (below === null) return high - low >= need ? high : -1;
    if (below.end <= high && high - Math.max(below.end, low) >= need) return high;
    // Then the gaps between VMAs up to `below`, highest first.
    const w = this.tree.highestGap(below, need);
    if (w !== null) {
      // A gap reaching under `low` is cut there; every gap lower still lies wholly under it.
      return w.start - Math.max(w.treePrev!.end, low) >= need ? w.start : -1;
    }
    // Last, the space under the lowest VMA.
    const first = this.tree.first!;
    return first.start - low >= need ? first.start : -1;
  }

  /**
   * An anon_vma a neighbour of the unfaulted private `vma` can lend it, or 0 (find_mergeable_anon_vma):
   * sharing one keeps the two mergeable when a later mprotect gives them the same protection
   * again. Only an anon_vma that is its owner's alone (not a fork child's) is lent.
   */
  findMergeableAnonVma(vma: Vma): number {
    const next = vma.treeNext;
    if (next !== null && anonVmaCompatible(vma, next) && next.anonVma !== 0 && !next.forkChild) {
      return next.anonVma;
    }
    const prev = vma.treePrev;
    if (prev !== null && anonVmaCompatible(prev, vma) && prev.anonVma !== 0 && !prev.forkChild) {
      return prev.anonVma;
    }
    return 0;
  }

  /** Merge VMAs around [start, end) with compatible neighbours (vma_merge after a change). */
  mergeAround(start: number, end: number): void {
    const from = this.tree.findFrom(start);
    let a = from === null ? this.tree.last : (from.treePrev ?? from);
    while (a !== null && a.start <= end) {
      const b = a.treeNext;
      if (b === null) break;
      if (mergeable(a, b)) {
        this.tree.remove(b);
        this.tree.setBounds(a, a.start, b.end);
        if (a.anonVma === 0) {
          a.anonVma = b.anonVma;
          a.forkChild = b.forkChild;
        }
        if (a.shared) a.shmem!.users--;
      } else a = b;
    }
  }

  /** Check the index's invariants; throws naming the first broken one. For tests. */
  validate(): void {
    this.tree.validate();
  }
}
