/**
 * The queue of delayed pruning (HmmPtOptions.delayedPruning): directories whose count reached zero,
 * oldest first, kept allocated until the queue is full or a walker revives one. Entries are pairs
 * (directory, sequence) in one growing Int32Array; a revived directory leaves a stale pair behind,
 * recognised by its sequence number (no search, no per-directory allocation).
 */
export class DelayedPruneQueue {
  private queue = new Int32Array(64);
  private head = 0;
  private tail = 0;
  private seq = 0;
  /** Sequence number each queued directory got (index: directory). */
  private seqOf = new Int32Array(0);
  /** Directories queued now. */
  size = 0;

  /** Room for directory indices below `n`. */
  reserve(n: number): void {
    if (n <= this.seqOf.length) return;
    const s = new Int32Array(n);
    s.set(this.seqOf);
    this.seqOf = s;
  }

  /** Queue directory `d`. */
  push(d: number): void {
    if (this.tail + 2 > this.queue.length) {
      const live = this.queue.subarray(this.head, this.tail);
      const q = new Int32Array(Math.max(64, live.length * 2 + 2));
      q.set(live);
      this.tail -= this.head;
      this.head = 0;
      this.queue = q;
    }
    const s = ++this.seq;
    this.seqOf[d] = s;
    this.queue[this.tail++] = d;
    this.queue[this.tail++] = s;
    this.size++;
  }

  /** Directory `d` leaves the queue (revived); its pair becomes stale. */
  remove(d: number): void {
    this.seqOf[d] = 0;
    this.size--;
  }

  /** The oldest queued directory, taken off the queue, or -1. */
  popOldest(): number {
    while (this.head < this.tail) {
      const d = this.queue[this.head++];
      const s = this.queue[this.head++];
      if (this.seqOf[d] !== s) continue;
      this.seqOf[d] = 0;
      this.size--;
      return d;
    }
    this.head = 0;
    this.tail = 0;
    return -1;
  }

  /** Forget everything. */
  clear(): void {
    this.head = 0;
    this.tail = 0;
    this.size = 0;
    this.seqOf.fill(0);
  }
}
