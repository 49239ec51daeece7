import { describe, expect, it } from "vitest";
import { PmdSet } from "../src/pmd-set.js";

/** A Set of the same members, the reference the bitmap is checked against. */
function members(s: PmdSet, first: number, last: number): number[] {
  const out: number[] = [];
  s.forEachIn(first, last, (p) => out.push(p));
  return out;
}

describe("PmdSet", () => {
  it("adds, counts each member once, and answers has", () => {
    const s = new PmdSet();
    for (const p of [0, 31, 32, 5, 5, 2 ** 18 - 1, 2 ** 18, 2 ** 26 - 1]) s.add(p);
    expect(s.size).toBe(7);
    for (const p of [0, 5, 31, 32, 2 ** 18 - 1, 2 ** 18, 2 ** 26 - 1]) expect(s.has(p)).toBe(true);
    for (const p of [1, 30, 33, 2 ** 18 + 1, 2 ** 26 - 2]) expect(s.has(p)).toBe(false);
  });

  it("visits exactly the members in a range, in order, across words and chunks", () => {
    const s = new PmdSet();
    const ref = new Set<number>();
    // Deterministic scatter over three chunks, with runs crossing 32-bit words and a chunk edge.
    let x = 12345;
    for (let i = 0; i < 3000; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      const p = (x % (3 * 2 ** 18)) + 2 ** 20;
      s.add(p);
      ref.add(p);
    }
    for (let p = 2 ** 20 + 2 ** 18 - 40; p < 2 ** 20 + 2 ** 18 + 40; p++) {
      s.add(p);
      ref.add(p);
    }
    expect(s.size).toBe(ref.size);
    const sorted = [...ref].sort((a, b) => a - b);
    for (const [a, b] of [
      [0, 2 ** 26],
      [2 ** 20 + 2 ** 18 - 33, 2 ** 20 + 2 ** 18 + 31],
      [2 ** 20 + 100, 2 ** 20 + 100],
      [2 ** 20 + 2 ** 18 + 5, 2 ** 20 + 2 * 2 ** 18 + 77],
      [0, 2 ** 20 - 1],
    ])
      expect(members(s, a, b)).toEqual(sorted.filter((p) => p >= a && p <= b));
  });

  it("clear forgets everything", () => {
    const s = new PmdSet();
    s.add(7);
    s.add(2 ** 25);
    s.clear();
    expect(s.size).toBe(0);
    expect(s.has(7)).toBe(false);
    expect(members(s, 0, 2 ** 26)).toEqual([]);
    s.add(7);
    expect(members(s, 0, 10)).toEqual([7]);
  });
});
