import { stampToken } from "@hmmkit/mm";

/** murmur3's 32-bit finalizer: a bijective mix of one word. */
export function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) | 0;
}

/** A 32-bit hash of up to five integers (order matters). */
export function hash5(a: number, b: number, c: number, d: number, e: number): number {
  let h = mix32(a ^ 0x2545f491);
  h = mix32(h ^ Math.imul(b + 0x9e3779b9, 0x27d4eb2d));
  h = mix32(h ^ Math.imul(c + 0x7f4a7c15, 0x165667b1));
  h = mix32(h ^ Math.imul(d + 0x61c88647, 0x1b873593));
  return mix32(h ^ Math.imul(e + 0x3c6ef372, 0xcc9e2d51));
}

/** A number in [0, 1) from the same five integers: the seeded coin of a page in a phase. */
export function unit5(a: number, b: number, c: number, d: number, e: number): number {
  return (hash5(a, b, c, d, e) >>> 0) / 4294967296;
}

/**
 * The stamp `agent` writes to page `page` of region `region` in phase `phase` of a run seeded
 * with `seed`. Never one whose page token is 0 (the oracle's "never written"; a page of zeros is
 * also what the digest leaves out).
 */
export function stampFor(seed: number, phase: number, region: number, page: number, agent: number): number {
  const s = hash5(seed, phase, region, page, agent);
  return stampToken(s) === 0 ? s ^ 1 : s;
}

/** mulberry32: a seeded PRNG of numbers in [0, 1) (one closure per phase, none per access). */
export function prng(seed: number): () => number {
  let a = seed | 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
