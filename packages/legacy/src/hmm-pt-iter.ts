import { HmmPtAssertionError } from "./errors.js";
import { HMM_PT_ENTRIES, HMM_PT_LLEVEL, HMM_PT_SHIFT, HmmPt } from "./hmm-pt.js";
import { HMM_PTE_DIRTY, HMM_PTE_DRIVER_MASK } from "./hmm-pte.js";

const SPAN = HMM_PT_SHIFT.map((s) => 2 ** s);
const LEAF_SPAN = SPAN[HMM_PT_LLEVEL - 1];

/**
 * struct hmm_pt_iter: a walker of one hmm_pt. It keeps the directory it is inside at each level
 * and holds a reference on each (hmm_pt_iter_protect_directory), so no directory on its path can
 * be pruned while it is inside, even if every entry is cleared under it by another walker
 * (an invalidation). Moving to an address another directory covers drops the references of the
 * directories that no longer cover it (hmm_pt_iter_unprotect_directory), which prunes them if
 * that was their last reference. Always end with {@link fini}.
 *
 * After lookup, populate and walk, `next` is the end of the range the returned leaf position
 * covers (clipped to the caller's end), as v12's `*next`.
 */
export class HmmPtIter {
  /** Directory held at level L is ptd[L - 1] (-1: none). */
  private readonly ptd = new Int32Array(HMM_PT_LLEVEL).fill(-1);
  /** End of the range covered by the last returned position (or skipped), clipped. */
  next = 0;
  /** walk(): address of the returned entry. */
  addr = 0;

  constructor(readonly pt: HmmPt) {}

  /** The leaf directory the walker is inside (-1: none). */
  get leaf(): number {
    return this.ptd[HMM_PT_LLEVEL - 1];
  }

  private covers(level: number, addr: number): boolean {
    const d = this.ptd[level - 1];
    if (d < 0) return false;
    const b = this.pt.base[d];
    return addr >= b && addr < b + SPAN[level - 1];
  }

  /** Leave every directory that does not cover `addr`; returns the deepest level still held (0: none). */
  private leaveUncovered(addr: number): number {
    let i = HMM_PT_LLEVEL;
    for (; i >= 1; i--) {
      if (this.ptd[i - 1] < 0) continue;
      if (this.covers(i, addr)) break;
      this.unprotect(i);
    }
    return i;
  }

  private unprotect(level: number): void {
    const d = this.ptd[level - 1];
    if (d < 0) return;
    this.ptd[level - 1] = -1;
    this.pt.leave(d);
  }

  /**
   * hmm_pt_iter_lookup: position in `pt.lo`/`pt.hi` of the entry for `addr`, walking down and
   * protecting the directories on the way; -1 if a directory on the way does not exist (then
   * `next` is the end of the hole it leaves, clipped to `end`).
   */
  lookup(addr: number, end: number): number {
    const pt = this.pt;
    const leaf = this.ptd[HMM_PT_LLEVEL - 1];
    if (leaf >= 0) {
      const b = pt.base[leaf];
      if (addr >= b && addr < b + LEAF_SPAN) {
        this.next = Math.min(end, b + LEAF_SPAN);
        return leaf * HMM_PT_ENTRIES + (Math.floor(addr / 4096) % HMM_PT_ENTRIES);
      }
    }
    let i = this.leaveUncovered(addr);
    for (; i < HMM_PT_LLEVEL; i++) {
      const parentDir = i === 0 ? -1 : this.ptd[i - 1];
      const c = pt.child(parentDir, HmmPt.index(addr, i));
      if (c < 0 || !pt.protect(c)) {
        const span = SPAN[i];
        this.next = Math.min(end, addr - (addr % span) + span);
        return -1;
      }
      this.ptd[i] = c;
    }
    const d = this.ptd[HMM_PT_LLEVEL - 1];
    this.next = Math.min(end, pt.base[d] + LEAF_SPAN);
    return d * HMM_PT_ENTRIES + (Math.floor(addr / 4096) % HMM_PT_ENTRIES);
  }

  /**
   * hmm_pt_iter_populate: like lookup, allocating the missing directories (each new one starts
   * with the walker's reference; its parent gains one for it). The parent's lock is held while a
   * directory is linked in; a directory another walker linked meanwhile is used instead.
   */
  populate(addr: number, end: number): number {
    const found = this.lookup(addr, end);
    if (found >= 0) return found;
    const pt = this.pt;
    for (let i = 1; i <= HMM_PT_LLEVEL; i++) {
      if (this.ptd[i - 1] >= 0) continue;
      const parentDir = i > 1 ? this.ptd[i - 2] : -1;
      const idx = HmmPt.index(addr, i - 1);
      pt.lock(parentDir);
      const c = pt.child(parentDir, idx);
      if (c >= 0 && pt.protect(c)) {
        this.ptd[i - 1] = c;
      } else {
        const span = SPAN[i - 1];
        this.ptd[i - 1] = pt.allocDirectory(parentDir, idx, i, addr - (addr % span));
      }
      pt.unlock(parentDir);
    }
    const d = this.ptd[HMM_PT_LLEVEL - 1];
    this.next = Math.min(end, pt.base[d] + LEAF_SPAN);
    return d * HMM_PT_ENTRIES + (Math.floor(addr / 4096) % HMM_PT_ENTRIES);
  }

  /**
   * hmm_pt_iter_walk: the first entry at or after `addr` (below `end`) whose leaf directory
   * exists, skipping holes a whole directory at a time. Returns its position and sets `addr` to
   * its address and `next` to the end of its leaf (clipped); -1 (and `addr` = `end`) if none.
   */
  walk(addr: number, end: number): number {
    let a = addr;
    while (a < end) {
      const pos = this.lookup(a, end);
      if (pos >= 0) {
        this.addr = a;
        return pos;
      }
      a = this.next;
    }
    this.addr = end;
    return -1;
  }

  /** hmm_pt_iter_directory_ref: the entry just made valid in the current leaf counts. */
  ref(): void {
    this.pt.ref(this.ptd[HMM_PT_LLEVEL - 1]);
  }

  /** `n` entries just made valid in the current leaf (n hmm_pt_iter_directory_ref calls). */
  refN(n: number): void {
    this.pt.ref(this.ptd[HMM_PT_LLEVEL - 1], n);
  }

  /** hmm_pt_iter_directory_unref: an entry of the current leaf was cleared. */
  unref(): void {
    this.pt.unref(this.ptd[HMM_PT_LLEVEL - 1]);
  }

  /** hmm_pt_iter_directory_lock: lock the current leaf directory. */
  lock(): void {
    this.pt.lock(this.ptd[HMM_PT_LLEVEL - 1]);
  }

  /** hmm_pt_iter_directory_unlock. */
  unlock(): void {
    this.pt.unlock(this.ptd[HMM_PT_LLEVEL - 1]);
  }

  /**
   * Set (`on`) or clear flag `bits` of the entry at `pos` of the current leaf (hmm_pte_set_bit /
   * hmm_pte_clear_bit). Any bit other than the dirty bit and the driver's private bits may only
   * change under the directory lock (the comment of hmm_mirror_fault_hpmd): an assertion error
   * otherwise.
   */
  changeFlags(pos: number, bits: number, on: boolean): void {
    const pt = this.pt;
    const leaf = this.ptd[HMM_PT_LLEVEL - 1];
    if (leaf < 0 || Math.floor(pos / HMM_PT_ENTRIES) !== leaf)
      throw new HmmPtAssertionError(
        `hmm_pte flag change: entry ${pos} is not in the walker's current leaf directory`,
      );
    if (bits & ~(HMM_PTE_DIRTY | HMM_PTE_DRIVER_MASK) & 0xfff && !pt.locked[leaf])
      throw new HmmPtAssertionError(
        `hmm_pte flag change of 0x${bits.toString(16)} in directory #${leaf} (${pt.describe(leaf)}) without the directory lock: only the dirty bit and the driver's private bits may change unlocked`,
      );
    pt.lo[pos] = (on ? pt.lo[pos] | bits : pt.lo[pos] & ~bits) >>> 0;
  }

  /** hmm_pt_iter_fini: leave every directory still held (pruning those it was the last user of). */
  fini(): void {
    for (let i = HMM_PT_LLEVEL; i >= 1; i--) this.unprotect(i);
    this.pt.walks++;
  }
}
