/** Entries per node: items of a leaf, children of an inner node. */
const B = 32;
/** A node with fewer entries than this is merged with a neighbour when both fit in one node. */
const MIN_FILL = B / 4;

/**
 * A node (block) of a {@link VmaTree}. Leaves hold intervals; inner nodes hold children. `lo`/`hi` are the
 * starts and ends of a leaf's intervals, or for an inner node each child's first start and last
 * end; `gaps` (inner only) is each child's `gap`. Numbers live in Float64Arrays so that a descent
 * reads contiguous unboxed keys instead of one object per level.
 */
export class VmaTreeBlock<T> {
  n = 0;
  readonly lo = new Float64Array(B);
  readonly hi = new Float64Array(B);
  readonly gaps: Float64Array | null;
  readonly items: (T | null)[] | null;
  readonly kids: (VmaTreeBlock<T> | null)[] | null;
  parent: VmaTreeBlock<T> | null = null;
  /** Largest free gap between two consecutive intervals of this subtree (0 if none). */
  gap = 0;

  constructor(readonly leaf: boolean) {
    this.gaps = leaf ? null : new Float64Array(B);
    this.items = leaf ? new Array<T | null>(B).fill(null) : null;
    this.kids = leaf ? null : new Array<VmaTreeBlock<T> | null>(B).fill(null);
  }
}

type TreeNode<T> = VmaTreeBlock<T>;

/**
 * The links an interval needs to live in a {@link VmaTree}. They belong to the tree: only the
 * tree writes them, and `start`/`end` of a linked interval change only through the tree.
 */
export interface VmaTreeItem<T extends VmaTreeItem<T>> {
  readonly start: number;
  readonly end: number;
  /** @internal Neighbours in address order. */
  treePrev: T | null;
  /** @internal */ treeNext: T | null;
  /** @internal The leaf holding the interval. */
  treeLeaf: VmaTreeBlock<T> | null;
}

type Mutable<T> = { start: number; end: number } & T;

/** First index i < n with a[i] > x, or n. */
function firstAbove(a: Float64Array, n: number, x: number): number {
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid] > x) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** First index i < n with a[i] >= x, or n. */
function firstAtLeast(a: Float64Array, n: number, x: number): number {
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid] >= x) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/**
 * Non-overlapping intervals ordered by address in a B+-tree of fan-out 32, the shape of the
 * kernel's maple tree: keys in typed arrays, so a lookup among 100,000 VMAs reads four nodes of
 * contiguous numbers rather than twenty-odd scattered objects. Every node also keeps the first
 * start, last end and largest internal gap of each child, which makes the top-down free-area
 * search ({@link highestGap}) O(B log n) as the maple tree's gap tracking does, instead of a walk
 * over every VMA. The intervals are threaded in a doubly linked list (neighbours in O(1)), and a
 * hint (the last interval looked up) answers the repeated lookups of one syscall without a
 * descent.
 */
export class VmaTree<T extends VmaTreeItem<T>> {
  private root: TreeNode<T> = new VmaTreeBlock<T>(true);
  /** Lowest interval, or null. */
  first: T | null = null;
  /** Highest interval, or null. */
  last: T | null = null;
  /** Number of intervals. */
  size = 0;
  /**
   * The interval the last lookup returned (the role of the kernel's old per-thread vmacache): a
   * syscall looks the same address up several times (check, split, remove, merge).
   */
  private hint: T | null = null;

  /** The lowest interval whose end is above `va`, or null. */
  findFrom(va: number): T | null {
    // The hint or a neighbour of it answers most lookups of a syscall without a descent.
    let h = this.hint;
    if (h !== null) {
      if (h.end > va) {
        const p = h.treePrev;
        if (p === null || p.end <= va) return h;
        if (p.treePrev === null || p.treePrev.end <= va) {
          this.hint = p;
          return p;
        }
      } else {
        h = h.treeNext;
        if (h === null) return null;
        if (h.end > va) {
          this.hint = h;
          return h;
        }
      }
    }
    let x = this.root;
    while (!x.leaf) {
      const i = firstAbove(x.hi, x.n, va);
      if (i === x.n) return null;
      x = x.kids![i]!;
    }
    const i = firstAbove(x.hi, x.n, va);
    if (i === x.n) return null;
    const best = x.items![i]!;
    this.hint = best;
    return best;
  }

  /** The highest interval whose start is below `va`, or null. */
  findBefore(va: number): T | null {
    let x = this.root;
    while (!x.leaf) {
      const i = firstAtLeast(x.lo, x.n, va) - 1;
      if (i < 0) return null;
      x = x.kids![i]!;
    }
    const i = firstAtLeast(x.lo, x.n, va) - 1;
    return i < 0 ? null : x.items![i]!;
  }

  /** Link `item`, which overlaps no interval in the tree. */
  insert(item: T): void {
    const succ = this.findFrom(item.start);
    const pred = succ === null ? this.last : succ.treePrev;
    let leaf: TreeNode<T>;
    let pos: number;
    if (succ !== null) {
      leaf = succ.treeLeaf!;
      pos = this.indexIn(leaf, succ);
    } else if (pred !== null) {
      leaf = pred.treeLeaf!;
      pos = leaf.n;
    } else {
      leaf = this.root;
      pos = 0;
    }
    if (leaf.n === B) {
      const right = this.split(leaf);
      if (pos > leaf.n) {
        pos -= leaf.n;
        leaf = right;
      }
    }
    const items = leaf.items!;
    for (let i = leaf.n; i > pos; i--) {
      leaf.lo[i] = leaf.lo[i - 1];
      leaf.hi[i] = leaf.hi[i - 1];
      items[i] = items[i - 1];
    }
    leaf.lo[pos] = item.start;
    leaf.hi[pos] = item.end;
    items[pos] = item;
    leaf.n++;
    item.treeLeaf = leaf;
    item.treePrev = pred;
    item.treeNext = succ;
    if (pred !== null) pred.treeNext = item;
    else this.first = item;
    if (succ !== null) succ.treePrev = item;
    else this.last = item;
    this.size++;
    this.hint = item;
    this.fixPath(leaf);
  }

  /** Unlink `item`. */
  remove(item: T): void {
    const leaf = item.treeLeaf!;
    const pos = this.indexIn(leaf, item);
    const items = leaf.items!;
    for (let i = pos; i < leaf.n - 1; i++) {
      leaf.lo[i] = leaf.lo[i + 1];
      leaf.hi[i] = leaf.hi[i + 1];
      items[i] = items[i + 1];
    }
    leaf.n--;
    items[leaf.n] = null;
    const pred = item.treePrev;
    const succ = item.treeNext;
    if (this.hint === item) this.hint = succ ?? pred;
    if (pred !== null) pred.treeNext = succ;
    else this.first = succ;
    if (succ !== null) succ.treePrev = pred;
    else this.last = pred;
    item.treePrev = item.treeNext = null;
    item.treeLeaf = null;
    this.size--;
    this.shrink(leaf);
  }

  /** Move the bounds of linked `item` to [start, end); it must still overlap no other interval. */
  setBounds(item: T, start: number, end: number): void {
    const leaf = item.treeLeaf!;
    const pos = this.indexIn(leaf, item);
    const m = item as Mutable<T>;
    m.start = start;
    m.end = end;
    leaf.lo[pos] = start;
    leaf.hi[pos] = end;
    this.fixPath(leaf);
  }

  /** Unlink every interval; returns them in address order. */
  clear(): T[] {
    const out: T[] = [];
    for (let v = this.first; v !== null; ) {
      const next: T | null = v.treeNext;
      v.treePrev = v.treeNext = null;
      v.treeLeaf = null;
      out.push(v);
      v = next;
    }
    this.root = new VmaTreeBlock<T>(true);
    this.first = this.last = this.hint = null;
    this.size = 0;
    return out;
  }

  /**
   * The highest interval at or below `limit` (in address order) whose gap below it, down to the
   * previous interval's end, is at least `need` bytes; null if none (the space below the first
   * interval is not a gap here). Subtrees whose largest gap is too small are skipped.
   */
  highestGap(limit: T, need: number): T | null {
    return this.gapIn(this.root, limit.start, need);
  }

  private gapIn(x: TreeNode<T>, limitStart: number, need: number): T | null {
    if (x.gap < need) return null;
    const { lo, hi } = x;
    if (x.leaf) {
      for (let i = x.n - 1; i >= 1; i--) {
        if (lo[i] <= limitStart && lo[i] - hi[i - 1] >= need) return x.items![i];
      }
      return null;
    }
    for (let i = x.n - 1; i >= 0; i--) {
      if (lo[i] > limitStart) continue;
      if (x.gaps![i] >= need) {
        const r = this.gapIn(x.kids![i]!, limitStart, need);
        if (r !== null) return r;
      }
      // The gap between child i - 1 and child i; its upper interval is child i's first.
      if (i >= 1 && lo[i] - hi[i - 1] >= need) {
        let k = x.kids![i]!;
        while (!k.leaf) k = k.kids![0]!;
        return k.items![0];
      }
    }
    return null;
  }

  /** Position of `item` in `leaf` (starts are unique and sorted). */
  private indexIn(leaf: TreeNode<T>, item: T): number {
    return firstAtLeast(leaf.lo, leaf.n, item.start);
  }

  /** Position of child `kid` in its parent. */
  private kidIndex(p: TreeNode<T>, kid: TreeNode<T>): number {
    const kids = p.kids!;
    for (let i = 0; i < p.n; i++) if (kids[i] === kid) return i;
    throw new Error("VmaTree: child not found in its parent");
  }

  /** Recompute `x.gap` from its arrays. */
  private summarize(x: TreeNode<T>): void {
    const { lo, hi, gaps } = x;
    let g = 0;
    for (let i = 0; i < x.n; i++) {
      if (gaps !== null && gaps[i] > g) g = gaps[i];
      if (i > 0 && lo[i] - hi[i - 1] > g) g = lo[i] - hi[i - 1];
    }
    x.gap = g;
  }

  /**
   * `x` changed: recompute its summary and copy it into its parent's entry, up towards the root,
   * stopping where the parent's copy already agrees (nothing above can have changed).
   */
  private fixPath(x: TreeNode<T>): void {
    for (;;) {
      this.summarize(x);
      const p = x.parent;
      if (p === null) return;
      const j = this.kidIndex(p, x);
      const min = x.lo[0];
      const max = x.hi[x.n - 1];
      if (p.lo[j] === min && p.hi[j] === max && p.gaps![j] === x.gap) return;
      p.lo[j] = min;
      p.hi[j] = max;
      p.gaps![j] = x.gap;
      x = p;
    }
  }

  /** Split the full node `x` in two halves; returns the new right half (already in the parent). */
  private split(x: TreeNode<T>): TreeNode<T> {
    const right = new VmaTreeBlock<T>(x.leaf);
    const half = x.n >>> 1;
    this.moveEntries(x, half, x.n, right, 0);
    right.n = x.n - half;
    x.n = half;
    let p = x.parent;
    if (p === null) {
      p = new VmaTreeBlock<T>(false);
      p.kids![0] = x;
      p.n = 1;
      x.parent = p;
      this.root = p;
    }
    let j = this.kidIndex(p, x);
    if (p.n === B) {
      const pr = this.split(p);
      if (j >= p.n) {
        j -= p.n;
        p = pr;
      }
    }
    const kids = p.kids!;
    for (let i = p.n; i > j + 1; i--) {
      p.lo[i] = p.lo[i - 1];
      p.hi[i] = p.hi[i - 1];
      p.gaps![i] = p.gaps![i - 1];
      kids[i] = kids[i - 1];
    }
    kids[j + 1] = right;
    p.n++;
    right.parent = p;
    // Both halves' entries in the parent are refreshed from their arrays.
    this.summarize(x);
    this.summarize(right);
    this.setEntry(p, j, x);
    this.setEntry(p, j + 1, right);
    this.fixPath(p);
    return right;
  }

  private setEntry(p: TreeNode<T>, j: number, x: TreeNode<T>): void {
    p.lo[j] = x.n > 0 ? x.lo[0] : 0;
    p.hi[j] = x.n > 0 ? x.hi[x.n - 1] : 0;
    p.gaps![j] = x.gap;
  }

  /** Copy entries [from, to) of `src` to `dst` starting at `at`, re-parenting what moves. */
  private moveEntries(src: TreeNode<T>, from: number, to: number, dst: TreeNode<T>, at: number): void {
    for (let i = from, k = at; i < to; i++, k++) {
      dst.lo[k] = src.lo[i];
      dst.hi[k] = src.hi[i];
      if (src.leaf) {
        const it = src.items![i]!;
        dst.items![k] = it;
        src.items![i] = null;
        it.treeLeaf = dst;
      } else {
        const kid = src.kids![i]!;
        dst.gaps![k] = src.gaps![i];
        dst.kids![k] = kid;
        src.kids![i] = null;
        kid.parent = dst;
      }
    }
  }

  /**
   * `x` lost an entry: drop it if empty, merge it into a neighbour if both fit in one node,
   * collapse a root with one child, and refresh the summaries above.
   */
  private shrink(x: TreeNode<T>): void {
    const p = x.parent;
    if (p === null) {
      if (!x.leaf && x.n === 1) {
        const kid = x.kids![0]!;
        kid.parent = null;
        this.root = kid;
      } else if (x.n === 0) this.root = new VmaTreeBlock<T>(true);
      else this.summarize(x);
      return;
    }
    const j = this.kidIndex(p, x);
    if (x.n === 0) {
      this.removeEntry(p, j);
      this.shrink(p);
      return;
    }
    if (x.n < MIN_FILL) {
      const left = j > 0 ? p.kids![j - 1]! : null;
      const right = j + 1 < p.n ? p.kids![j + 1]! : null;
      if (left !== null && left.n + x.n <= B) {
        this.moveEntries(x, 0, x.n, left, left.n);
        left.n += x.n;
        x.n = 0;
        this.summarize(left);
        this.setEntry(p, j - 1, left);
        this.removeEntry(p, j);
        this.shrink(p);
        return;
      }
      if (right !== null && right.n + x.n <= B) {
        this.moveEntries(right, 0, right.n, x, x.n);
        x.n += right.n;
        right.n = 0;
        this.summarize(x);
        this.setEntry(p, j, x);
        this.removeEntry(p, j + 1);
        this.shrink(p);
        return;
      }
    }
    this.fixPath(x);
  }

  /** Remove entry `j` of inner node `p`. */
  private removeEntry(p: TreeNode<T>, j: number): void {
    const kids = p.kids!;
    for (let i = j; i < p.n - 1; i++) {
      p.lo[i] = p.lo[i + 1];
      p.hi[i] = p.hi[i + 1];
      p.gaps![i] = p.gaps![i + 1];
      kids[i] = kids[i + 1];
    }
    p.n--;
    kids[p.n] = null;
  }

  /**
   * Check every invariant (order, no overlap, node summaries, parent links, list links, sizes);
   * throws naming the first broken one. For tests.
   */
  validate(): void {
    let count = 0;
    let prev: T | null = null;
    const walk = (x: TreeNode<T>, parent: TreeNode<T> | null, depth: number, leafDepth: number[]): void => {
      if (x.parent !== parent) throw new Error("bad parent link");
      if (x.n === 0 && parent !== null) throw new Error("empty node below the root");
      for (let i = 0; i < x.n; i++) {
        if (x.leaf) {
          const it = x.items![i]!;
          if (it.treeLeaf !== x) throw new Error(`bad leaf link at ${it.start}`);
          if (x.lo[i] !== it.start || x.hi[i] !== it.end) throw new Error(`stale key at ${it.start}`);
          if (prev !== null && prev.end > it.start) throw new Error(`overlap or disorder at ${it.start}`);
          if (it.treePrev !== prev) throw new Error(`bad list link at ${it.start}`);
          prev = it;
          count++;
        } else {
          const kid = x.kids![i]!;
          walk(kid, x, depth + 1, leafDepth);
          if (x.lo[i] !== kid.lo[0] || x.hi[i] !== kid.hi[kid.n - 1] || x.gaps![i] !== kid.gap)
            throw new Error("stale child summary");
        }
      }
      if (x.leaf) {
        if (leafDepth.length === 0) leafDepth.push(depth);
        else if (leafDepth[0] !== depth) throw new Error("leaves at different depths");
      }
      const g = x.gap;
      this.summarize(x);
      if (x.gap !== g) throw new Error("stale gap");
    };
    walk(this.root, null, 0, []);
    if (count !== this.size) throw new Error(`size ${this.size}, counted ${count}`);
    if (this.last !== prev) throw new Error("bad last link");
  }
}
