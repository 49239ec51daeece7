import { hex, PAGE_SIZE, PROT_READ, PROT_WRITE } from "./constants.js";
import type { ShmemObject } from "./shmem.js";

/** THP advice recorded on a VMA (VM_HUGEPAGE / VM_NOHUGEPAGE). */
export const THP_ADVICE_NONE = 0;
export const THP_ADVICE_HUGEPAGE = 1;
export const THP_ADVICE_NOHUGEPAGE = 2;

/**
 * A virtual memory area: [start, end) with one protection and one backing. Private anonymous
 * VMAs get an `anonVma` id on their first fault (anon_vma_prepare); shared anonymous VMAs map
 * `shmem` starting at page offset `pgoff`.
 */
export class Vma {
  constructor(
    public start: number,
    public end: number,
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

  clone(): Vma {
    const v = new Vma(
      this.start,
      this.end,
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
  if (a.shared) return a.shmem === b.shmem && a.pgoff + a.pages === b.pgoff;
  if (a.anonVma !== 0 && b.anonVma !== 0) return a.anonVma === b.anonVma;
  // One side is unfaulted and would take the other's anon_vma (is_mergeable_anon_vma): not one
  // that a fork child links with its parent's.
  if (a.anonVma !== 0) return !a.forkChild;
  if (b.anonVma !== 0) return !b.forkChild;
  return true;
}

/**
 * anon_vma_compatible: `a` ends where `b` starts and they differ at most in protection (the
 * flags outside VM_ACCESS_FLAGS must match, VM_ACCOUNT included). Anonymous private VMAs always
 * have matching pgoffs.
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
 * The VMAs of an address space, sorted by address, non-overlapping. Splits and merges follow the
 * kernel so that THP eligibility (which needs an aligned 2 MiB range inside one VMA) matches.
 */
export class VmaList {
  readonly vmas: Vma[] = [];

  /** Index of the first VMA whose end is above `va` (vmas.length if none). */
  indexFrom(va: number): number {
    let lo = 0;
    let hi = this.vmas.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.vmas[mid].end <= va) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The VMA containing `va`, or null. */
  find(va: number): Vma | null {
    const i = this.indexFrom(va);
    const v = this.vmas[i];
    return v !== undefined && v.start <= va ? v : null;
  }

  /** True if some VMA intersects [start, end). */
  intersects(start: number, end: number): boolean {
    const v = this.vmas[this.indexFrom(start)];
    return v !== undefined && v.start < end;
  }

  /** Insert a VMA that overlaps none; returns its index. */
  insert(vma: Vma): number {
    const i = this.indexFrom(vma.start);
    this.vmas.splice(i, 0, vma);
    return i;
  }

  /** Split the VMA containing `addr` so that a VMA boundary falls at `addr`. */
  splitAt(addr: number): void {
    const i = this.indexFrom(addr);
    const v = this.vmas[i];
    if (v === undefined || v.start >= addr) return;
    const tail = v.clone();
    tail.start = addr;
    if (v.shared) {
      tail.pgoff = v.pgoff + (addr - v.start) / PAGE_SIZE;
      v.shmem!.users++;
    }
    v.end = addr;
    this.vmas.splice(i + 1, 0, tail);
  }

  /** Remove and return the VMAs inside [start, end); boundaries must already be split. */
  removeRange(start: number, end: number): Vma[] {
    const i = this.indexFrom(start);
    let j = i;
    while (j < this.vmas.length && this.vmas[j].start < end) j++;
    return this.vmas.splice(i, j - i);
  }

  /**
   * An anon_vma a neighbour of the unfaulted private `vma` can lend it, or 0 (find_mergeable_anon_vma):
   * sharing one keeps the two mergeable when a later mprotect gives them the same protection
   * again. Only an anon_vma that is its owner's alone (not a fork child's) is lent.
   */
  findMergeableAnonVma(vma: Vma): number {
    const i = this.indexFrom(vma.start);
    const next = this.vmas[i + 1];
    if (next !== undefined && anonVmaCompatible(vma, next) && next.anonVma !== 0 && !next.forkChild) {
      return next.anonVma;
    }
    const prev = i > 0 ? this.vmas[i - 1] : undefined;
    if (prev !== undefined && anonVmaCompatible(prev, vma) && prev.anonVma !== 0 && !prev.forkChild) {
      return prev.anonVma;
    }
    return 0;
  }

  /** Merge VMAs around [start, end) with compatible neighbours (vma_merge after a change). */
  mergeAround(start: number, end: number): void {
    let i = Math.max(0, this.indexFrom(start) - 1);
    while (i + 1 < this.vmas.length) {
      const a = this.vmas[i];
      if (a.start > end) break;
      const b = this.vmas[i + 1];
      if (mergeable(a, b)) {
        a.end = b.end;
        if (a.anonVma === 0) {
          a.anonVma = b.anonVma;
          a.forkChild = b.forkChild;
        }
        if (a.shared) a.shmem!.users--;
        this.vmas.splice(i + 1, 1);
      } else i++;
    }
  }
}
