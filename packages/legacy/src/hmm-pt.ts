import { DelayedPruneQueue } from "./delayed-prune.js";
import { HmmPtAssertionError, hex } from "./errors.js";
import { HMM_PDE_VALID } from "./hmm-pte.js";
import { HmmPtStats } from "./stats.js";

/** Bytes of one directory: one 4 KiB page of 512 eight-byte entries (v12 allocates a page). */
export const HMM_PT_DIRECTORY_BYTES = 4096;
/** Entries per directory: PAGE_SIZE / sizeof(dma_addr_t). */
export const HMM_PT_ENTRIES = 512;
/** Last level (llevel): the level whose directories hold page entries. */
export const HMM_PT_LLEVEL = 3;
/**
 * shift[level] as hmm_pt_init computes it for pt.last = TASK_SIZE - 1 (2^47 - 4 KiB - 1):
 * directory_shift = PAGE_SHIFT - ilog2(8) = 9, shift[0] = (fls((last >> 12)) / 9) * 9 + 12 = 39,
 * then 30, 21, 12.
 */
export const HMM_PT_SHIFT: readonly number[] = [39, 30, 21, 12];
/** Root (pgd) entries: (last >> shift[0]) + 1 = 256, kcalloc'ed, not refcounted. */
export const HMM_PT_NPGD = 256;
/** Bytes of the root array (256 x 8). */
export const HMM_PT_PGD_BYTES = HMM_PT_NPGD * 8;

const SPAN = HMM_PT_SHIFT.map((s) => 2 ** s);
/** Bytes covered by one directory of level L (L = 1..3): 512 GiB, 1 GiB, 2 MiB. */
export const HMM_PT_DIRECTORY_SPAN: readonly number[] = [2 ** 47, SPAN[0], SPAN[1], SPAN[2]];

/** Directory states. */
const FREE = 0;
const LIVE = 1;
/** Count zero, kept linked for reuse (delayed pruning). */
const DELAYED = 2;

/** Walks between a prune and a re-allocation of the same directory that count as "soon". */
export const REALLOC_SOON_WALKS = 256;

/** Options of one hmm_pt. */
export interface HmmPtOptions {
  /**
   * Delayed directory pruning (the optimisation Jérôme planned for
   * hmm_pt_iter_directory_unref_safe): a directory whose count drops to zero stays allocated and
   * linked, at most this many at once (oldest pruned first), and is revived if a walker comes back
   * to it. 0 (the default) prunes at once, as v12 does.
   */
  readonly delayedPruning: number;
}

/**
 * hmm_pt: HMM v12's mirror page table (mm/hmm_pt.c). A 4-level tree of directories of 512
 * entries: level 1 (512 GiB each), level 2 (1 GiB), level 3 (2 MiB, page entries); the root is an
 * array of 256 directory entries. Every directory is a 4 KiB page; there are no huge entries (a
 * huge PMD fills 512 page entries). All directories share two typed arrays of words, 512 per
 * directory (see hmm-pte.ts for the entry encoding; directory entries keep the child directory's
 * index in the pfn field, hmm_pde_from_pfn).
 *
 * Reference counts (the directory page's _mapcount in v12): a directory counts its valid entries
 * (page entries, or child directories) plus one per walker inside it. A walker takes a reference
 * on the way down and drops it when it leaves; when the count drops to zero the directory is
 * unlinked from its parent, which loses a reference, and freed at once
 * (hmm_pt_iter_directory_unref_safe). Taking a reference on a zero count, or an entry unref that
 * reaches zero (only a walker's exit may), is a bug: HmmPtAssertionError.
 *
 * Directory lock (hmm_pt_iter_directory_lock): serializes changes of entry flags, except the
 * dirty bit and the driver's private flags; see HmmPtIter.
 */
export class HmmPt {
  /** Low words of every directory's entries (flags and low pfn bits), 512 per directory. */
  lo = new Uint32Array(0);
  /** High words (pfn >>> 20). */
  hi = new Uint32Array(0);
  /** Root directory entries: index + 1 of each level-1 directory, 0 for none. */
  readonly pgd = new Int32Array(HMM_PT_NPGD);
  /** Per directory: reference count (valid entries + walkers inside). */
  count = new Int32Array(0);
  /** Per directory: level (1..3). */
  level = new Uint8Array(0);
  /** Per directory: parent directory index, or -1 for a level-1 directory (parent is the root). */
  parent = new Int32Array(0);
  /** Per directory: first address it covers. */
  base = new Float64Array(0);
  /** Per directory: FREE, LIVE or DELAYED. */
  state = new Uint8Array(0);
  /** Per directory: 1 while its lock is held. */
  locked = new Uint8Array(0);
  /** The root's lock (pt->lock). */
  rootLocked = false;
  private capacity = 0;
  private used = 0;
  private freeList: number[] = [];
  /** Directories waiting for delayed pruning, oldest first. */
  private readonly delayed = new DelayedPruneQueue();
  /** Live directories per level (index 1..3), delayed ones included. */
  readonly liveByLevel = new Int32Array(4);
  /** Walks finished (hmm_pt_iter_fini), the clock of "re-allocated soon after pruning". */
  walks = 0;
  /** Bumped whenever a directory is freed: a cached directory index is stale once it changes. */
  pruneGeneration = 0;
  /** Address keys of recently pruned directories -> walk count when pruned. Per directory, not per page. */
  private readonly recentlyPruned = new Map<number, number>();
  /** Counters of this table. */
  readonly stats = new HmmPtStats();

  constructor(readonly options: HmmPtOptions = { delayedPruning: 0 }) {}

  /** Bytes of the table now: directories (4 KiB each) plus the root array. */
  get bytes(): number {
    return this.directories * HMM_PT_DIRECTORY_BYTES + HMM_PT_PGD_BYTES;
  }

  /** Bytes of leaf (level 3) directories: the page entries. */
  get leafBytes(): number {
    return this.liveByLevel[HMM_PT_LLEVEL] * HMM_PT_DIRECTORY_BYTES;
  }

  /** Bytes of upper directories (levels 1 and 2) and the root array. */
  get directoryBytes(): number {
    return (this.liveByLevel[1] + this.liveByLevel[2]) * HMM_PT_DIRECTORY_BYTES + HMM_PT_PGD_BYTES;
  }

  /** Directories allocated now (levels 1..3). */
  get directories(): number {
    return this.liveByLevel[1] + this.liveByLevel[2] + this.liveByLevel[3];
  }

  /** Directories waiting in the delayed-pruning queue. */
  get delayedDirectories(): number {
    return this.delayed.size;
  }

  /** Index in `lo`/`hi` of entry `i` of directory `dir`. */
  static pos(dir: number, i: number): number {
    return dir * HMM_PT_ENTRIES + i;
  }

  /** hmm_pt_index: index of `addr` in a directory of `level` (level 0 is the root). */
  static index(addr: number, level: number): number {
    const i = Math.floor(addr / SPAN[level]);
    return level === 0 ? i : i % HMM_PT_ENTRIES;
  }

  /** Child directory of entry `i` of directory `dir` (or of the root when dir < 0), or -1. */
  child(dir: number, i: number): number {
    if (dir < 0) return this.pgd[i] - 1;
    const p = dir * HMM_PT_ENTRIES + i;
    const lo = this.lo[p];
    return lo & HMM_PDE_VALID ? this.hi[p] * 0x100000 + (lo >>> 12) : -1;
  }

  private setChild(dir: number, i: number, childDir: number): void {
    if (dir < 0) {
      this.pgd[i] = childDir + 1;
      return;
    }
    const p = dir * HMM_PT_ENTRIES + i;
    if (childDir < 0) {
      this.lo[p] = 0;
      this.hi[p] = 0;
    } else {
      this.lo[p] = (((childDir % 0x100000) << 12) | HMM_PDE_VALID) >>> 0;
      this.hi[p] = Math.floor(childDir / 0x100000);
    }
  }

  private grow(): void {
    const n = Math.max(16, this.capacity * 2);
    const lo = new Uint32Array(n * HMM_PT_ENTRIES);
    lo.set(this.lo);
    this.lo = lo;
    const hi = new Uint32Array(n * HMM_PT_ENTRIES);
    hi.set(this.hi);
    this.hi = hi;
    const count = new Int32Array(n);
    count.set(this.count);
    this.count = count;
    const level = new Uint8Array(n);
    level.set(this.level);
    this.level = level;
    const parent = new Int32Array(n);
    parent.set(this.parent);
    this.parent = parent;
    const base = new Float64Array(n);
    base.set(this.base);
    this.base = base;
    const state = new Uint8Array(n);
    state.set(this.state);
    this.state = state;
    const locked = new Uint8Array(n);
    locked.set(this.locked);
    this.locked = locked;
    this.delayed.reserve(n);
    this.capacity = n;
  }

  /**
   * hmm_pt_iter_populate's allocation: a new directory of `level` covering `base`, linked under
   * `parentDir` (-1: the root) at index `i`, with count 1 (the populating walker's reference;
   * atomic_set(&new->_mapcount, 1)). The parent gains a reference for its new valid entry (the
   * root is not refcounted). The caller holds the parent's lock.
   */
  allocDirectory(parentDir: number, i: number, level: number, base: number): number {
    let d: number;
    if (this.freeList.length > 0) d = this.freeList.pop()!;
    else {
      if (this.used === this.capacity) this.grow();
      d = this.used++;
    }
    this.count[d] = 1;
    this.level[d] = level;
    this.parent[d] = parentDir;
    this.base[d] = base;
    this.state[d] = LIVE;
    this.locked[d] = 0;
    this.setChild(parentDir, i, d);
    if (parentDir >= 0) this.ref(parentDir);
    this.liveByLevel[level]++;
    const st = this.stats;
    st.directoriesAllocated++;
    st.walkerRefs++;
    const key = level * 2 ** 48 + base;
    const t = this.recentlyPruned.get(key);
    if (t !== undefined) {
      this.recentlyPruned.delete(key);
      if (this.walks - t <= REALLOC_SOON_WALKS) st.directoriesReallocatedSoon++;
    }
    return d;
  }

  /**
   * A walker entering directory `d` (hmm_pt_iter_protect_directory: atomic_inc_not_zero). False
   * if its count is zero (it is being pruned; the walker treats it as absent). With delayed
   * pruning a queued directory is revived instead.
   */
  protect(d: number): boolean {
    if (this.state[d] === DELAYED) {
      this.state[d] = LIVE;
      this.count[d] = 1;
      this.delayed.remove(d);
      this.stats.directoriesRevived++;
      this.stats.walkerRefs++;
      return true;
    }
    if (this.count[d] === 0) return false;
    this.count[d]++;
    this.stats.walkerRefs++;
    return true;
  }

  /**
   * hmm_pt_directory_ref: one more valid entry in directory `d`. A zero count is illegal (BUG()):
   * whoever adds an entry is a walker inside the directory and holds a reference.
   */
  ref(d: number, n = 1): void {
    if (this.count[d] <= 0 || this.state[d] !== LIVE)
      throw new HmmPtAssertionError(
        `hmm_pt_directory_ref: directory #${d} (level ${this.level[d]}, ${this.describe(d)}) has count ${this.count[d]}${this.state[d] === FREE ? " and is freed" : ""}: a reference may only be taken by a walker inside the directory, which holds one`,
      );
    this.count[d] += n;
  }

  /**
   * hmm_pt_directory_unref: one valid entry less in `d`. Reaching zero here is illegal (BUG()):
   * the walker clearing the entry is inside and holds a reference, so only its exit may free `d`.
   */
  unref(d: number): void {
    if (this.count[d] <= 1)
      throw new HmmPtAssertionError(
        `hmm_pt_directory_unref: directory #${d} (level ${this.level[d]}, ${this.describe(d)}) would drop to count ${this.count[d] - 1} on an entry unref: an entry may only be cleared by a walker inside the directory, so the count cannot reach zero before that walker leaves`,
      );
    this.count[d]--;
  }

  /**
   * hmm_pt_iter_directory_unref_safe: a walker leaves directory `d`. If that was the last
   * reference the directory is pruned: unlinked from its parent (if the parent still points at it)
   * and freed at once, and the parent loses a reference (the walker is still inside the parent,
   * so it cannot reach zero). With delayed pruning it is queued instead.
   */
  leave(d: number): void {
    if (this.count[d] <= 0)
      throw new HmmPtAssertionError(
        `hmm_pt_iter_directory_unref_safe: directory #${d} (level ${this.level[d]}, ${this.describe(d)}) has count ${this.count[d]}: a walker left a directory it held no reference on`,
      );
    if (--this.count[d] > 0) return;
    if (this.options.delayedPruning > 0) this.delay(d);
    else this.prune(d, true);
  }

  /** Unlink and free `d` (count zero); drop the parent's reference for it. */
  private prune(d: number, walkerInParent: boolean): void {
    const p = this.parent[d];
    const lvl = this.level[d];
    const i = HmmPt.index(this.base[d], lvl - 1);
    if (this.child(p, i) === d) this.setChild(p, i, -1);
    this.lo.fill(0, d * HMM_PT_ENTRIES, (d + 1) * HMM_PT_ENTRIES);
    this.hi.fill(0, d * HMM_PT_ENTRIES, (d + 1) * HMM_PT_ENTRIES);
    this.state[d] = FREE;
    this.liveByLevel[lvl]--;
    this.freeList.push(d);
    this.pruneGeneration++;
    this.stats.directoriesPruned++;
    if (this.recentlyPruned.size > 65_536) this.recentlyPruned.clear();
    this.recentlyPruned.set(lvl * 2 ** 48 + this.base[d], this.walks);
    if (p < 0) return;
    if (walkerInParent) this.unref(p);
    else if (--this.count[p] === 0) {
      if (this.options.delayedPruning > 0) this.delay(p);
      else this.prune(p, false);
    }
  }

  private delay(d: number): void {
    this.state[d] = DELAYED;
    this.delayed.push(d);
    while (this.delayed.size > this.options.delayedPruning) this.pruneOldestDelayed();
  }

  private pruneOldestDelayed(): void {
    const d = this.delayed.popOldest();
    if (d >= 0) this.prune(d, false);
  }

  /** Prune every directory waiting in the delayed-pruning queue (hmm_pt_fini, option changes). */
  flushDelayed(): void {
    while (this.delayed.size > 0) this.pruneOldestDelayed();
  }

  /** Take directory `d`'s lock (hmm_pt_directory_lock); `d` < 0 is the root's lock. */
  lock(d: number): void {
    if (d < 0) {
      if (this.rootLocked)
        throw new HmmPtAssertionError("hmm_pt_directory_lock: the root lock is already held");
      this.rootLocked = true;
    } else {
      if (this.locked[d])
        throw new HmmPtAssertionError(
          `hmm_pt_directory_lock: directory #${d} (${this.describe(d)}) is already locked (a spinlock taken twice)`,
        );
      this.locked[d] = 1;
    }
    this.stats.lockAcquisitions++;
  }

  /** Release directory `d`'s lock. */
  unlock(d: number): void {
    if (d < 0) this.rootLocked = false;
    else this.locked[d] = 0;
  }

  /**
   * hmm_pt_fini: free every directory. Entries are dropped without unrefs (the mirror is gone);
   * counts and walkers are reset.
   */
  fini(): void {
    this.pruneGeneration++;
    this.pgd.fill(0);
    for (let d = 0; d < this.used; d++) {
      if (this.state[d] === FREE) continue;
      this.state[d] = FREE;
      this.count[d] = 0;
      this.liveByLevel[this.level[d]]--;
      this.freeList.push(d);
    }
    this.lo.fill(0);
    this.hi.fill(0);
    this.delayed.clear();
  }

  /** "[start, end)" of directory `d`, for messages. */
  describe(d: number): string {
    const b = this.base[d];
    return `[${hex(b)}, ${hex(b + HMM_PT_DIRECTORY_SPAN[this.level[d]])})`;
  }

  /** The directory of `level` covering `addr`, or -1 (for tests and inspection; takes no reference). */
  directoryAt(addr: number, level: number): number {
    let d = -1;
    for (let l = 0; l < level; l++) {
      d = this.child(d, HmmPt.index(addr, l));
      if (d < 0) return -1;
    }
    return d;
  }

  /**
   * Position in `lo`/`hi` of the page entry for `addr`, or -1 when its leaf directory does not
   * exist. No reference is taken: this is the device hardware's walk (and tests'), not a walker's.
   */
  entryPos(addr: number): number {
    const d3 = this.leafAt(addr);
    return d3 < 0 ? -1 : d3 * HMM_PT_ENTRIES + (Math.floor(addr / 4096) % 512);
  }

  /** The leaf directory covering `addr`, or -1 (no reference taken, as entryPos). */
  leafAt(addr: number): number {
    const d1 = this.pgd[Math.floor(addr / SPAN[0])] - 1;
    if (d1 < 0) return -1;
    const d2 = this.child(d1, Math.floor(addr / SPAN[1]) % 512);
    if (d2 < 0) return -1;
    return this.child(d2, Math.floor(addr / SPAN[2]) % 512);
  }

  /** Whether directory `d` is allocated (live or waiting for delayed pruning). */
  isAllocated(d: number): boolean {
    return d >= 0 && d < this.used && this.state[d] !== FREE;
  }
}
