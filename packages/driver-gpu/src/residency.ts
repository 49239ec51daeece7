/**
 * Residency records: one per VA block the driver migrated to device memory, in typed arrays, for
 * the eviction order (LRU or clock) and thrashing detection. Blocks that never migrated have
 * none, so a device that only maps remotely keeps no residency state at all.
 *
 * The records form one doubly linked list. With `lru` it is kept in order of use (head: least
 * recently used): a block moves to the tail when the fault path services it and when the device's
 * translation cache loads it (the device touched it). With `clock` the list is a ring swept by a
 * hand; use sets the block's referenced bit, and the hand gives each referenced block a second
 * chance (clears the bit) before it picks an unreferenced one.
 *
 * The driver's clock for windows and pins is its fault-batch count (`epoch`): the simulation has
 * no wall time in the fault path, and UVM's thrashing lapse (uvm_perf_thrashing.c,
 * uvm_perf_thrashing_lapse_usec) becomes a number of batches.
 */
import type { EvictionPolicy } from "./options.js";

const A_BLOCK = 0;
const A_PREV = 1;
const A_NEXT = 2;
const A_STATE = 3;
const A_BOUNCES = 4;
const A_WINDOW = 5;
const A_PIN_UNTIL = 6;
const A_SERVICED = 7;
/** Int32 fields per residency record. */
export const AUX_STRIDE = 8;
/** Bytes of one residency record. */
export const AUX_RECORD_BYTES = AUX_STRIDE * 4;

/** State bits. */
const REFERENCED = 1;
const WENT_HOME = 2;

const NONE = -1;

/** What {@link Residency.noteMigration} decided. */
export const BOUNCE_NONE = 0;
export const BOUNCE_COUNTED = 1;
export const BOUNCE_PINNED = 2;

/** Residency records of one GPU. */
export class Residency {
  private rec: Int32Array;
  private top = 0;
  private freeList = NONE;
  /** Live records. */
  live = 0;
  private head = NONE;
  private tail = NONE;
  private hand = NONE;
  private readonly lru: boolean;

  constructor(policy: EvictionPolicy) {
    this.lru = policy === "lru";
    this.rec = new Int32Array(64 * AUX_STRIDE);
  }

  /** Bytes of the live records. */
  liveBytes(): number {
    return this.live * AUX_RECORD_BYTES;
  }

  /** Bytes allocated, spare capacity included. */
  capacityBytes(): number {
    return this.rec.byteLength;
  }

  /** A new record for table block record `block`, at the most recently used end. */
  alloc(block: number): number {
    let a = this.freeList;
    if (a !== NONE) this.freeList = this.rec[a * AUX_STRIDE + A_NEXT];
    else {
      if ((this.top + 1) * AUX_STRIDE > this.rec.length) {
        const g = new Int32Array(this.rec.length * 2);
        g.set(this.rec);
        this.rec = g;
      }
      a = this.top++;
    }
    const o = a * AUX_STRIDE;
    this.rec.fill(0, o, o + AUX_STRIDE);
    this.rec[o + A_BLOCK] = block;
    this.rec[o + A_PIN_UNTIL] = NONE;
    this.rec[o + A_SERVICED] = NONE;
    this.link(a);
    this.live++;
    return a;
  }

  /** Free record `a`. */
  free(a: number): void {
    this.unlink(a);
    const o = a * AUX_STRIDE;
    this.rec[o + A_BLOCK] = NONE;
    this.rec[o + A_NEXT] = this.freeList;
    this.freeList = a;
    this.live--;
  }

  /** The table block record of `a`. */
  block(a: number): number {
    return this.rec[a * AUX_STRIDE + A_BLOCK];
  }

  private link(a: number): void {
    const o = a * AUX_STRIDE;
    this.rec[o + A_PREV] = this.tail;
    this.rec[o + A_NEXT] = NONE;
    if (this.tail !== NONE) this.rec[this.tail * AUX_STRIDE + A_NEXT] = a;
    else this.head = a;
    this.tail = a;
  }

  private unlink(a: number): void {
    const o = a * AUX_STRIDE;
    const p = this.rec[o + A_PREV];
    const n = this.rec[o + A_NEXT];
    if (this.hand === a) this.hand = n;
    if (p !== NONE) this.rec[p * AUX_STRIDE + A_NEXT] = n;
    else this.head = n;
    if (n !== NONE) this.rec[n * AUX_STRIDE + A_PREV] = p;
    else this.tail = p;
  }

  /** The block was used: LRU moves it to the tail, clock sets its referenced bit. */
  touch(a: number): void {
    if (this.lru) {
      if (this.tail === a) return;
      this.unlink(a);
      this.link(a);
    } else this.rec[a * AUX_STRIDE + A_STATE] |= REFERENCED;
  }

  /** The fault path serviced the block in batch `epoch` (it is used, and not a victim this batch). */
  serviced(a: number, epoch: number): void {
    this.touch(a);
    this.rec[a * AUX_STRIDE + A_SERVICED] = epoch;
  }

  /**
   * The next eviction victim (not serviced in batch `epoch`, and not `skip`), or -1: the least
   * recently used block (lru), or the first unreferenced block under the clock hand, clearing
   * the referenced bits it passes (clock).
   */
  victim(epoch: number, skip: number): number {
    const rec = this.rec;
    if (this.lru) {
      for (let a = this.head; a !== NONE; a = rec[a * AUX_STRIDE + A_NEXT])
        if (a !== skip && rec[a * AUX_STRIDE + A_SERVICED] !== epoch) return a;
      return NONE;
    }
    // Two sweeps at most: the first may only clear referenced bits.
    for (let steps = 0; steps < 2 * this.live + 1; steps++) {
      if (this.hand === NONE) this.hand = this.head;
      const a = this.hand;
      if (a === NONE) return NONE;
      this.hand = rec[a * AUX_STRIDE + A_NEXT];
      const o = a * AUX_STRIDE;
      if (a === skip || rec[o + A_SERVICED] === epoch) continue;
      if (rec[o + A_STATE] & REFERENCED) {
        rec[o + A_STATE] &= ~REFERENCED;
        continue;
      }
      return a;
    }
    return NONE;
  }

  // ---- thrashing (uvm_perf_thrashing.c) --------------------------------------------------------

  /** Pages of the block came home because the CPU touched them (not an eviction). */
  noteWentHome(a: number): void {
    this.rec[a * AUX_STRIDE + A_STATE] |= WENT_HOME;
  }

  /**
   * The block is migrating to the device again in batch `epoch`. If pages of it went home since
   * its last migration, that is a bounce; `threshold` bounces within `window` batches pin it
   * remote for `pinFor` batches (uvm_perf_thrashing.c: thrashing_threshold events within the
   * lapse start thrashing prevention; UVM then throttles and, past pin_threshold, maps remotely:
   * hmmkit goes straight to the remote mapping).
   */
  noteMigration(a: number, epoch: number, threshold: number, window: number, pinFor: number): number {
    const o = a * AUX_STRIDE;
    const rec = this.rec;
    if (!(rec[o + A_STATE] & WENT_HOME)) return BOUNCE_NONE;
    rec[o + A_STATE] &= ~WENT_HOME;
    if (epoch - rec[o + A_WINDOW] > window || rec[o + A_BOUNCES] === 0) {
      rec[o + A_WINDOW] = epoch;
      rec[o + A_BOUNCES] = 0;
    }
    rec[o + A_BOUNCES]++;
    if (rec[o + A_BOUNCES] >= threshold) {
      rec[o + A_PIN_UNTIL] = epoch + pinFor;
      rec[o + A_BOUNCES] = 0;
      return BOUNCE_PINNED;
    }
    return BOUNCE_COUNTED;
  }

  /** Whether the block is pinned remote in batch `epoch`. */
  pinned(a: number, epoch: number): boolean {
    return epoch < this.rec[a * AUX_STRIDE + A_PIN_UNTIL];
  }

  /** Forget everything. */
  clear(): void {
    this.top = 0;
    this.freeList = NONE;
    this.live = 0;
    this.head = NONE;
    this.tail = NONE;
    this.hand = NONE;
  }
}
