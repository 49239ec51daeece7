/**
 * The links an interval needs to live in a {@link VmaTree}. They belong to the tree: only the
 * tree writes them, and `start`/`end` of a linked node change only through the tree.
 */
export interface VmaTreeNode<T extends VmaTreeNode<T>> {
  readonly start: number;
  readonly end: number;
  /** @internal */ treeLeft: T | null;
  /** @internal */ treeRight: T | null;
  /** @internal */ treeParent: T | null;
  /** @internal Neighbours in address order. */
  treePrev: T | null;
  /** @internal */ treeNext: T | null;
  /** @internal Heap priority of the treap. */
  treePrio: number;
  /** @internal Free bytes between the previous interval's end and this start (0 for the first). */
  treeGap: number;
  /** @internal Largest treeGap in this node's subtree. */
  treeMaxGap: number;
}

type Mutable<T> = { start: number; end: number } & T;

/**
 * Non-overlapping intervals ordered by address: a treap (a binary search tree keyed by start,
 * kept balanced in expectation by random heap priorities drawn from a seeded generator, so a run
 * is reproducible) threaded with a doubly linked list in address order. Lookup, insert, remove and
 * a bounds change are O(log n) expected; neighbours are O(1).
 *
 * Each node also keeps the free gap below it and the largest gap in its subtree, the augmentation
 * the kernel's VMA rbtree had (rb_subtree_gap) and its maple tree keeps per node, so the top-down
 * free-area search ({@link highestGap}) is O(log n) too instead of a walk over every VMA.
 *
 * A treap rather than a B-tree: it needs no node splitting or rebalancing cases, the links live in
 * the VMA itself (as vm_rb did), and the per-node gap keeps the free-area search simple.
 */
export class VmaTree<T extends VmaTreeNode<T>> {
  private root: T | null = null;
  /** Lowest interval, or null. */
  first: T | null = null;
  /** Highest interval, or null. */
  last: T | null = null;
  /** Number of intervals. */
  size = 0;
  private seed = 0x2545f491;

  /**
   * The interval the last lookup returned (the role of the kernel's old per-thread vmacache): a
   * syscall looks the same address up several times (check, split, remove, merge), and the hint
   * answers those without a descent. Cleared when that interval is unlinked.
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
        if (p.treePrev === null || p.treePrev.end <= va) return (this.hint = p);
      } else {
        h = h.treeNext;
        if (h === null) return null;
        if (h.end > va) return (this.hint = h);
      }
    }
    let n = this.root;
    let best: T | null = null;
    while (n !== null) {
      if (n.end > va) {
        best = n;
        n = n.treeLeft;
      } else n = n.treeRight;
    }
    if (best !== null) this.hint = best;
    return best;
  }

  /** The highest interval whose start is below `va`, or null. */
  findBefore(va: number): T | null {
    let n = this.root;
    let best: T | null = null;
    while (n !== null) {
      if (n.start < va) {
        best = n;
        n = n.treeRight;
      } else n = n.treeLeft;
    }
    return best;
  }

  /** Link `node`, which overlaps no interval in the tree. */
  insert(node: T): void {
    // The neighbours in address order (found through the hint when it is near). In a binary
    // search tree two neighbours always leave a leaf slot between them: the predecessor's right
    // child or, if it has one, the successor's left child. So no descent from the root is needed.
    const succ = this.findFrom(node.start);
    const pred = succ === null ? this.last : succ.treePrev;
    let parent: T | null = null;
    if (pred !== null && pred.treeRight === null) parent = pred;
    else if (succ !== null) parent = succ;
    node.treeLeft = null;
    node.treeRight = null;
    node.treeParent = parent;
    node.treePrio = this.nextPrio();
    if (parent === null) this.root = node;
    else if (parent === pred) parent.treeRight = node;
    else parent.treeLeft = node;
    node.treePrev = pred;
    node.treeNext = succ;
    if (pred !== null) pred.treeNext = node;
    else this.first = node;
    if (succ !== null) succ.treePrev = node;
    else this.last = node;
    this.size++;
    this.hint = node;
    node.treeGap = pred === null ? 0 : node.start - pred.end;
    node.treeMaxGap = node.treeGap;
    // Restore the heap order: rotate the new leaf up past parents of lower priority.
    for (let p = node.treeParent; p !== null && p.treePrio < node.treePrio; p = node.treeParent) {
      if (p.treeLeft === node) this.rotateRight(p);
      else this.rotateLeft(p);
    }
    // The rotations left the new node and those they moved right; above them the subtree gained
    // the new node's gap.
    this.propagate(node.treeParent);
    if (succ !== null) this.setGap(succ, succ.start - node.end);
  }

  /** Unlink `node`. */
  remove(node: T): void {
    if (this.hint === node) this.hint = node.treeNext ?? node.treePrev;
    // Rotate the node down until it has at most one child, then splice it out.
    while (node.treeLeft !== null && node.treeRight !== null) {
      if (node.treeLeft.treePrio > node.treeRight.treePrio) this.rotateRight(node);
      else this.rotateLeft(node);
    }
    const child = node.treeLeft ?? node.treeRight;
    const parent = node.treeParent;
    if (child !== null) child.treeParent = parent;
    if (parent === null) this.root = child;
    else if (parent.treeLeft === node) parent.treeLeft = child;
    else parent.treeRight = child;
    this.propagate(parent);
    const pred = node.treePrev;
    const succ = node.treeNext;
    if (pred !== null) pred.treeNext = succ;
    else this.first = succ;
    if (succ !== null) succ.treePrev = pred;
    else this.last = pred;
    node.treeLeft = node.treeRight = node.treeParent = node.treePrev = node.treeNext = null;
    this.size--;
    if (succ !== null) this.setGap(succ, pred === null ? 0 : succ.start - pred.end);
  }

  /** Move the bounds of linked `node` to [start, end); it must still overlap no other interval. */
  setBounds(node: T, start: number, end: number): void {
    const m = node as Mutable<T>;
    m.start = start;
    m.end = end;
    const pred = node.treePrev;
    this.setGap(node, pred === null ? 0 : start - pred.end);
    const succ = node.treeNext;
    if (succ !== null) this.setGap(succ, succ.start - end);
  }

  /** Unlink every interval; returns them in address order. */
  clear(): T[] {
    const out: T[] = [];
    for (let n = this.first; n !== null; ) {
      const next: T | null = n.treeNext;
      n.treeLeft = n.treeRight = n.treeParent = n.treePrev = n.treeNext = null;
      out.push(n);
      n = next;
    }
    this.root = this.first = this.last = this.hint = null;
    this.size = 0;
    return out;
  }

  /**
   * The highest interval at or below `limit` (in address order) whose gap below it is at least
   * `need` bytes, or null (the gap below the first interval is not considered: it has no lower
   * neighbour). O(log n): subtrees whose largest gap is too small are skipped.
   */
  highestGap(limit: T, need: number): T | null {
    return this.highestGapIn(this.root, limit.start, need);
  }

  private highestGapIn(n: T | null, limitStart: number, need: number): T | null {
    while (n !== null && n.treeMaxGap >= need) {
      if (n.start > limitStart) {
        n = n.treeLeft;
        continue;
      }
      // Every node of the left subtree is below the limit; the right one only partly.
      const r = this.highestGapIn(n.treeRight, limitStart, need);
      if (r !== null) return r;
      if (n.treeGap >= need) return n;
      return this.highestGapAny(n.treeLeft, need);
    }
    return null;
  }

  private highestGapAny(n: T | null, need: number): T | null {
    while (n !== null && n.treeMaxGap >= need) {
      const r = n.treeRight;
      if (r !== null && r.treeMaxGap >= need) n = r;
      else if (n.treeGap >= need) return n;
      else n = n.treeLeft;
    }
    return null;
  }

  private setGap(n: T, gap: number): void {
    if (n.treeGap === gap) return;
    n.treeGap = gap;
    this.propagate(n);
  }

  /**
   * Recompute treeMaxGap from `n` (whose own gap or children changed) towards the root, stopping
   * at the first node whose value comes out unchanged: nothing above it can have changed either.
   * Most changes stop within a level or two, so the whole path is rarely touched.
   */
  private propagate(n: T | null): void {
    for (; n !== null; n = n.treeParent) {
      const before = n.treeMaxGap;
      this.update(n);
      if (n.treeMaxGap === before) return;
    }
  }

  private update(n: T): void {
    let g = n.treeGap;
    const l = n.treeLeft;
    const r = n.treeRight;
    if (l !== null && l.treeMaxGap > g) g = l.treeMaxGap;
    if (r !== null && r.treeMaxGap > g) g = r.treeMaxGap;
    n.treeMaxGap = g;
  }

  /** Replace `n` by its left child `l` (n becomes l's right child). */
  private rotateRight(n: T): void {
    const l = n.treeLeft!;
    n.treeLeft = l.treeRight;
    if (l.treeRight !== null) l.treeRight.treeParent = n;
    this.replaceChild(n, l);
    l.treeRight = n;
    n.treeParent = l;
    this.update(n);
    this.update(l);
  }

  /** Replace `n` by its right child `r` (n becomes r's left child). */
  private rotateLeft(n: T): void {
    const r = n.treeRight!;
    n.treeRight = r.treeLeft;
    if (r.treeLeft !== null) r.treeLeft.treeParent = n;
    this.replaceChild(n, r);
    r.treeLeft = n;
    n.treeParent = r;
    this.update(n);
    this.update(r);
  }

  private replaceChild(n: T, c: T): void {
    const p = n.treeParent;
    c.treeParent = p;
    if (p === null) this.root = c;
    else if (p.treeLeft === n) p.treeLeft = c;
    else p.treeRight = c;
  }

  /** xorshift32: the priorities are reproducible from run to run. */
  private nextPrio(): number {
    let x = this.seed;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.seed = x;
    return x >>> 0;
  }

  /**
   * Check every invariant (order, no overlap, heap order, parent links, list links, gaps); throws
   * naming the first broken one. For tests.
   */
  validate(): void {
    let count = 0;
    let prev: T | null = null;
    const walk = (n: T | null, parent: T | null): number => {
      if (n === null) return -1;
      if (n.treeParent !== parent) throw new Error(`bad parent link at ${n.start}`);
      if (parent !== null && n.treePrio > parent.treePrio) throw new Error(`heap order broken at ${n.start}`);
      let max = walk(n.treeLeft, n);
      if (prev !== null && prev.end > n.start) throw new Error(`overlap or disorder at ${n.start}`);
      if (n.treePrev !== prev) throw new Error(`bad list link at ${n.start}`);
      if (n.treeGap !== (prev === null ? 0 : n.start - prev.end)) throw new Error(`bad gap at ${n.start}`);
      prev = n;
      count++;
      max = Math.max(max, n.treeGap, walk(n.treeRight, n));
      if (n.treeMaxGap !== max) throw new Error(`bad max gap at ${n.start}`);
      return max;
    };
    walk(this.root, null);
    if (count !== this.size) throw new Error(`size ${this.size}, counted ${count}`);
    if (this.last !== prev) throw new Error("bad last link");
  }
}
