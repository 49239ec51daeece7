/**
 * The block records of the device page table and their hash directory: one record of
 * `BLOCK_STRIDE` Int32 per (address space, 2 MiB VA block) the device holds something for, found
 * through a chained hash of (mm id, block index) with one Int32 bucket per record (a power of two
 * at least the live record count; it doubles and halves with it). Freed records are recycled
 * through a free list threaded through their chain field. No object per block.
 */

/** Fields of a block record. */
export const B_MM = 0;
export const B_VB = 1;
export const B_NEXT = 2;
/** The block's entry word: > 0 a 2 MiB entry (pte-encoding.ts), < 0 -(leaf + 1), 0 none. */
export const B_ENTRY = 3;
/** The block's remote-access count (the access counters). */
export const B_ACCESS = 4;
/** The block's residency record + 1 (0: none). */
export const B_AUX = 5;
/** Int32 fields per block record. */
export const BLOCK_STRIDE = 6;
/** Bytes of one block record. */
export const BLOCK_RECORD_BYTES = BLOCK_STRIDE * 4;
/** Bytes of one hash bucket. */
export const BUCKET_BYTES = 4;

const NONE = -1;
const MIN_BUCKETS = 64;

/** Block records and the (mm id, block index) hash directory. */
export class BlockDirectory {
  /** The records, `BLOCK_STRIDE` Int32 each (reallocated as it grows: read it after `create`). */
  blk: Int32Array;
  /** Records ever handed out (the high-water mark scans stop at). */
  top = 0;
  /** Live records. */
  count = 0;
  private freeList = NONE;
  private buckets: Int32Array;
  private shift: number;

  constructor(initialRecords = 64) {
    this.blk = new Int32Array(Math.max(1, initialRecords) * BLOCK_STRIDE);
    this.buckets = new Int32Array(MIN_BUCKETS).fill(NONE);
    this.shift = 32 - Math.log2(MIN_BUCKETS);
  }

  /** Bytes of the live records and of the directory. */
  liveBytes(): number {
    return this.count * BLOCK_RECORD_BYTES + this.buckets.length * BUCKET_BYTES;
  }

  /** Bytes allocated, spare capacity included. */
  capacityBytes(): number {
    return this.blk.byteLength + this.buckets.byteLength;
  }

  private bucketOf(mmId: number, vb: number): number {
    // Multiplicative hashing: the top bits of the mixed product pick the bucket.
    return (Math.imul(vb, 0x9e3779b1) ^ Math.imul(mmId + 0x3c6ef372, 0x85ebca77)) >>> this.shift;
  }

  /** The record of (mmId, vb), or -1. */
  find(mmId: number, vb: number): number {
    const blk = this.blk;
    for (let b = this.buckets[this.bucketOf(mmId, vb)]; b !== NONE; b = blk[b * BLOCK_STRIDE + B_NEXT]) {
      const o = b * BLOCK_STRIDE;
      if (blk[o + B_VB] === vb && blk[o + B_MM] === mmId) return b;
    }
    return NONE;
  }

  /** A new, empty record for (mmId, vb), which has none. */
  create(mmId: number, vb: number): number {
    // Grow the directory before taking a record, so the rehash sees only initialised records.
    if (this.count + 1 > this.buckets.length) this.rehash(this.buckets.length * 2);
    let b = this.freeList;
    if (b !== NONE) this.freeList = this.blk[b * BLOCK_STRIDE + B_NEXT];
    else {
      if ((this.top + 1) * BLOCK_STRIDE > this.blk.length) {
        const g = new Int32Array(this.blk.length * 2);
        g.set(this.blk);
        this.blk = g;
      }
      b = this.top++;
    }
    this.count++;
    const o = b * BLOCK_STRIDE;
    const blk = this.blk;
    blk[o + B_MM] = mmId;
    blk[o + B_VB] = vb;
    blk[o + B_ENTRY] = 0;
    blk[o + B_ACCESS] = 0;
    blk[o + B_AUX] = 0;
    const h = this.bucketOf(mmId, vb);
    blk[o + B_NEXT] = this.buckets[h];
    this.buckets[h] = b;
    return b;
  }

  /** Free record `b`. */
  free(b: number): void {
    const blk = this.blk;
    const o = b * BLOCK_STRIDE;
    const h = this.bucketOf(blk[o + B_MM], blk[o + B_VB]);
    let p = this.buckets[h];
    if (p === b) this.buckets[h] = blk[o + B_NEXT];
    else {
      while (blk[p * BLOCK_STRIDE + B_NEXT] !== b) p = blk[p * BLOCK_STRIDE + B_NEXT];
      blk[p * BLOCK_STRIDE + B_NEXT] = blk[o + B_NEXT];
    }
    blk[o + B_MM] = NONE;
    blk[o + B_VB] = NONE;
    blk[o + B_NEXT] = this.freeList;
    this.freeList = b;
    this.count--;
    if (this.count * 4 < this.buckets.length && this.buckets.length > MIN_BUCKETS)
      this.rehash(this.buckets.length / 2);
  }

  private rehash(n: number): void {
    const blk = this.blk;
    this.buckets = new Int32Array(n).fill(NONE);
    this.shift = 32 - Math.log2(n);
    for (let b = 0; b < this.top; b++) {
      const o = b * BLOCK_STRIDE;
      if (blk[o + B_MM] === NONE) continue;
      const h = this.bucketOf(blk[o + B_MM], blk[o + B_VB]);
      blk[o + B_NEXT] = this.buckets[h];
      this.buckets[h] = b;
    }
  }

  /** Forget every record. */
  clear(): void {
    this.blk.fill(0);
    this.top = 0;
    this.count = 0;
    this.freeList = NONE;
    this.buckets = new Int32Array(MIN_BUCKETS).fill(NONE);
    this.shift = 32 - Math.log2(MIN_BUCKETS);
  }
}
