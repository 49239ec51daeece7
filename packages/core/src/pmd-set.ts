import { HPAGE_PMD_SIZE, TASK_SIZE } from "@hmmkit/mm";

/** PMDs per chunk: 2^18 (512 GiB of address space), one bit each, in 8,192 Uint32 words (32 KiB). */
const CHUNK_SHIFT = 18;
const CHUNK_MASK = (1 << CHUNK_SHIFT) - 1;
const CHUNK_WORDS = (1 << CHUNK_SHIFT) >>> 5;
/** The last PMD index of user space. */
const MAX_PMD = Math.floor((TASK_SIZE - 1) / HPAGE_PMD_SIZE);

/**
 * A set of PMD indices (va / 2 MiB; user space has 2^26 of them): a bitmap in 32 KiB chunks made
 * on first use, one chunk per 512 GiB of address space touched. Adding is a few operations (no
 * hashing: a device fault adds one index per PMD it reports, and a Set's hash lookup was about
 * 40% of a huge-PMD fault).
 */
export class PmdSet {
  private readonly chunks = new Map<number, Uint32Array>();
  private lastKey = -1;
  private last: Uint32Array = new Uint32Array(0);
  /** Members. */
  size = 0;

  /** Add `pmd`. */
  add(pmd: number): void {
    const key = pmd >>> CHUNK_SHIFT;
    const c = key === this.lastKey ? this.last : this.chunk(key);
    const bit = pmd & CHUNK_MASK;
    const w = bit >>> 5;
    const m = 1 << (bit & 31);
    if ((c[w] & m) === 0) {
      c[w] |= m;
      this.size++;
    }
  }

  /** Whether `pmd` is a member. */
  has(pmd: number): boolean {
    const c = this.chunks.get(pmd >>> CHUNK_SHIFT);
    if (c === undefined) return false;
    const bit = pmd & CHUNK_MASK;
    return (c[bit >>> 5] & (1 << (bit & 31))) !== 0;
  }

  /** Call `visit` for every member in [first, last], in increasing order. */
  forEachIn(first: number, last: number, visit: (pmd: number) => void): void {
    if (this.size === 0 || last < first) return;
    // At most 256 chunk keys in user space: walk the range's keys, in order, no list to sort.
    const k1 = Math.min(last, MAX_PMD) >>> CHUNK_SHIFT;
    for (let key = Math.max(first, 0) >>> CHUNK_SHIFT; key <= k1; key++) {
      const c = this.chunks.get(key);
      if (c === undefined) continue;
      const base = key << CHUNK_SHIFT;
      const w0 = Math.max(first - base, 0) >>> 5;
      const w1 = Math.min(last - base, CHUNK_MASK) >>> 5;
      for (let w = w0; w <= w1; w++) {
        let bits = c[w];
        while (bits !== 0) {
          const low = bits & -bits;
          const pmd = base + w * 32 + (31 - Math.clz32(low));
          if (pmd >= first && pmd <= last) visit(pmd);
          bits ^= low;
        }
      }
    }
  }

  /** Forget every member. */
  clear(): void {
    this.chunks.clear();
    this.lastKey = -1;
    this.last = new Uint32Array(0);
    this.size = 0;
  }

  private chunk(key: number): Uint32Array {
    let c = this.chunks.get(key);
    if (c === undefined) {
      c = new Uint32Array(CHUNK_WORDS);
      this.chunks.set(key, c);
    }
    this.lastKey = key;
    this.last = c;
    return c;
  }
}
