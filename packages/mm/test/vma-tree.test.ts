import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  Machine,
  PROT_READ,
  PROT_WRITE,
  THP_ADVICE_NONE,
  Vma,
  VmaList,
} from "../src/index.js";

const PAGE = 4096;
const RW = PROT_READ | PROT_WRITE;
/** The address space of the first property test, in pages: small, so that operations collide often. */
const SPACE = 64;
/** The address space of the second one: room for a few thousand VMAs, several tree levels deep. */
const BIG_SPACE = 16000;

/** A private VMA as mmap makes it: its pgoff is the linear page index of its start. */
function vma(startPage: number, endPage: number, prot = RW): Vma {
  return new Vma(startPage * PAGE, endPage * PAGE, prot, false, THP_ADVICE_NONE, false, 0, null, startPage);
}

function bounds(l: VmaList): [number, number, number][] {
  return l.toArray().map((v) => [v.start / PAGE, v.end / PAGE, v.prot]);
}

/**
 * The reference model: a plain array sorted by start, searched and changed linearly, with the
 * merge rule reduced to what the test's VMAs differ in (protection).
 */
class SortedArrayModel {
  vmas: { start: number; end: number; prot: number }[] = [];

  insert(start: number, end: number, prot: number): void {
    const i = this.vmas.findIndex((v) => v.start > start);
    this.vmas.splice(i < 0 ? this.vmas.length : i, 0, { start, end, prot });
  }

  find(va: number) {
    return this.vmas.find((v) => v.start <= va && va < v.end) ?? null;
  }

  findFrom(va: number) {
    return this.vmas.find((v) => v.end > va) ?? null;
  }

  intersects(start: number, end: number): boolean {
    return this.vmas.some((v) => v.start < end && start < v.end);
  }

  splitAt(addr: number): void {
    const i = this.vmas.findIndex((v) => v.start < addr && addr < v.end);
    if (i < 0) return;
    const v = this.vmas[i];
    this.vmas.splice(i + 1, 0, { start: addr, end: v.end, prot: v.prot });
    v.end = addr;
  }

  removeRange(start: number, end: number): void {
    this.vmas = this.vmas.filter((v) => !(v.start >= start && v.start < end));
  }

  mergeAround(start: number, end: number): void {
    let i = Math.max(0, this.vmas.findIndex((v) => v.end > start) - 1);
    if (this.vmas.every((v) => v.end <= start)) i = this.vmas.length - 1;
    while (i >= 0 && i + 1 < this.vmas.length && this.vmas[i].start <= end) {
      const a = this.vmas[i];
      const b = this.vmas[i + 1];
      if (a.end === b.start && a.prot === b.prot) {
        a.end = b.end;
        this.vmas.splice(i + 1, 1);
      } else i++;
    }
  }

  /** The old linear top-down walk of getUnmappedArea. */
  topDownGap(low: number, high: number, need: number): number {
    let hi = high;
    for (let i = this.vmas.length - 1; i >= -1; i--) {
      const v = i >= 0 ? this.vmas[i] : null;
      if (v !== null && v.start >= hi) continue;
      if (v !== null && v.end > hi) {
        hi = v.start;
        continue;
      }
      const lo = v === null ? low : Math.max(v.end, low);
      if (hi - lo >= need) return hi;
      if (v !== null) hi = v.start;
    }
    return -1;
  }
}

type Op =
  | { t: "insert"; start: number; pages: number; prot: number }
  | { t: "split"; at: number }
  | { t: "remove"; start: number; pages: number }
  | { t: "protect"; start: number; pages: number; prot: number }
  | { t: "merge"; start: number; pages: number };

const pages = fc.integer({ min: 1, max: 8 });
const prot = fc.constantFrom(PROT_READ, RW);
function opArb(space: number, insertWeight: number): fc.Arbitrary<Op> {
  const page = fc.noBias(fc.integer({ min: 0, max: space - 1 }));
  return fc.oneof(
    {
      weight: insertWeight,
      arbitrary: fc.record({ t: fc.constant("insert" as const), start: page, pages, prot }),
    },
    { weight: 2, arbitrary: fc.record({ t: fc.constant("split" as const), at: page }) },
    { weight: 2, arbitrary: fc.record({ t: fc.constant("remove" as const), start: page, pages }) },
    { weight: 2, arbitrary: fc.record({ t: fc.constant("protect" as const), start: page, pages, prot }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant("merge" as const), start: page, pages }) },
  );
}

/** Apply `op` to both; insert only where the model says the range is free. */
function apply(l: VmaList, m: SortedArrayModel, op: Op, SPACE: number): void {
  switch (op.t) {
    case "insert": {
      const s = op.start * PAGE;
      const e = Math.min(SPACE, op.start + op.pages) * PAGE;
      if (m.intersects(s, e)) return;
      l.insert(vma(op.start, e / PAGE, op.prot));
      m.insert(s, e, op.prot);
      return;
    }
    case "split":
      l.splitAt(op.at * PAGE);
      m.splitAt(op.at * PAGE);
      return;
    case "remove": {
      const s = op.start * PAGE;
      const e = Math.min(SPACE, op.start + op.pages) * PAGE;
      for (const a of [s, e]) {
        l.splitAt(a);
        m.splitAt(a);
      }
      l.removeRange(s, e);
      m.removeRange(s, e);
      return;
    }
    case "protect": {
      // What mprotect does to one mapped piece: split it out, change it, merge around it.
      const s = op.start * PAGE;
      const e = Math.min(SPACE, op.start + op.pages) * PAGE;
      const v = l.find(s);
      if (v === null) return;
      const end = Math.min(e, v.end);
      for (const a of [s, end]) {
        l.splitAt(a);
        m.splitAt(a);
      }
      l.find(s)!.prot = op.prot;
      m.find(s)!.prot = op.prot;
      l.mergeAround(s, end);
      m.mergeAround(s, end);
      return;
    }
    case "merge": {
      const s = op.start * PAGE;
      const e = Math.min(SPACE, op.start + op.pages) * PAGE;
      l.mergeAround(s, e);
      m.mergeAround(s, e);
      return;
    }
  }
}

function expectSame(l: VmaList, m: SortedArrayModel, SPACE: number, step = 1): void {
  l.validate();
  expect(bounds(l)).toEqual(m.vmas.map((v) => [v.start / PAGE, v.end / PAGE, v.prot]));
  for (let p = 0; p <= SPACE; p += step) {
    const va = p * PAGE;
    expect(l.find(va)?.start ?? -1).toBe(m.find(va)?.start ?? -1);
    expect(l.findFrom(va)?.start ?? -1).toBe(m.findFrom(va)?.start ?? -1);
  }
  const windows = [
    [0, SPACE],
    [3, SPACE - 5],
    [10, 40],
  ];
  // Windows whose top lies at every sixteenth of the space, so that gaps in every part of the
  // tree are searched, not only the highest ones.
  for (let k = 1; k < 16; k++) windows.push([0, Math.floor((SPACE * k) / 16)]);
  for (const [low, high] of windows) {
    for (const need of [1, 2, 3, 4, 6, 9, 14, 22, 35, 60]) {
      expect(l.topDownGap(low * PAGE, high * PAGE, need * PAGE)).toBe(
        m.topDownGap(low * PAGE, high * PAGE, need * PAGE),
      );
    }
  }
}

describe("VmaList index", () => {
  it("agrees with a sorted-array model under random insert, split, remove, protect and merge", () => {
    fc.assert(
      fc.property(fc.array(opArb(SPACE, 4), { minLength: 1, maxLength: 120 }), (ops) => {
        const l = new VmaList();
        const m = new SortedArrayModel();
        for (const op of ops) {
          apply(l, m, op, SPACE);
          expectSame(l, m, SPACE);
        }
      }),
      { seed: 0x7ee5, numRuns: 120 },
    );
  });

  it("agrees with the model with thousands of VMAs, through leaf and inner node splits and merges", () => {
    fc.assert(
      fc.property(fc.array(opArb(BIG_SPACE, 40), { minLength: 3000, maxLength: 3200 }), (ops) => {
        const l = new VmaList();
        const m = new SortedArrayModel();
        let maxSize = 0;
        ops.forEach((op, i) => {
          apply(l, m, op, BIG_SPACE);
          maxSize = Math.max(maxSize, l.size);
          if (i % 250 === 249) expectSame(l, m, BIG_SPACE, 211);
        });
        expectSame(l, m, BIG_SPACE, 7);
        // More than 32 * 32 VMAs at some point: the tree had three levels.
        expect(maxSize).toBeGreaterThan(1024);
        // Then take most of it away again, in address order, checking as the nodes empty.
        for (let p = 0; p < BIG_SPACE; p += 1000) {
          apply(l, m, { t: "remove", start: p, pages: 900 }, BIG_SPACE);
          expectSame(l, m, BIG_SPACE, 97);
        }
      }),
      { seed: 0x5eed, numRuns: 3, endOnFailure: true },
    );
  });

  it("keeps its invariants and neighbour links through 20,000 inserts and removals in random order", () => {
    const l = new VmaList();
    const n = 10_000;
    let x = 12345;
    const rnd = () => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return x >>> 0;
    };
    const order = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = rnd() % (i + 1);
      [order[i], order[j]] = [order[j], order[i]];
    }
    // Every other page, so that no two VMAs touch and every gap is one page.
    for (const i of order) l.insert(vma(2 * i, 2 * i + 1));
    l.validate();
    expect(l.size).toBe(n);
    expect(l.first!.start).toBe(0);
    expect(l.last!.start).toBe(2 * (n - 1) * PAGE);
    expect(l.next(l.first!)!.start).toBe(2 * PAGE);
    expect(l.prev(l.last!)!.start).toBe(2 * (n - 2) * PAGE);
    for (const i of order.slice(0, n / 2)) l.removeRange(2 * i * PAGE, (2 * i + 1) * PAGE);
    l.validate();
    expect(l.size).toBe(n / 2);
    const kept = order
      .slice(n / 2)
      .sort((a, b) => a - b)
      .map((i) => 2 * i * PAGE);
    expect(l.toArray().map((v) => v.start)).toEqual(kept);
  });

  it("finds the highest gap that fits below a limit, skipping smaller higher gaps", () => {
    const l = new VmaList();
    // Pages: [10,12) gap 3 [15,16) gap 1 [17,20) gap 2 [22,30)
    l.insert(vma(10, 12));
    l.insert(vma(15, 16));
    l.insert(vma(17, 20));
    l.insert(vma(22, 30));
    expect(l.topDownGap(0, 30 * PAGE, 3 * PAGE)).toBe(15 * PAGE);
    expect(l.topDownGap(0, 30 * PAGE, 2 * PAGE)).toBe(22 * PAGE);
    expect(l.topDownGap(0, 40 * PAGE, 10 * PAGE)).toBe(40 * PAGE);
    expect(l.topDownGap(0, 30 * PAGE, 10 * PAGE)).toBe(10 * PAGE);
    expect(l.topDownGap(5 * PAGE, 30 * PAGE, 6 * PAGE)).toBe(-1);
    // The top of the window inside a VMA: that VMA's upper part is not free.
    expect(l.topDownGap(0, 25 * PAGE, 2 * PAGE)).toBe(22 * PAGE);
  });

  it("moves a VMA's bounds with adjust and keeps the gaps around it right", () => {
    const l = new VmaList();
    const a = vma(10, 12);
    l.insert(a);
    l.insert(vma(20, 22));
    expect(l.topDownGap(0, 22 * PAGE, 8 * PAGE)).toBe(20 * PAGE);
    l.adjust(a, 10 * PAGE, 14 * PAGE);
    l.validate();
    expect(l.topDownGap(0, 22 * PAGE, 7 * PAGE)).toBe(10 * PAGE);
    expect(l.find(13 * PAGE)).toBe(a);
  });
});

describe("mmap placement with many mappings", () => {
  it("refills the hole a munmap left among 3,000 mappings, the highest free gap, as top-down mmap does", () => {
    const m = new Machine({ contentMode: "tag", memoryBytes: 16 * 1024 * 1024 });
    const mm = m.createProcess().mm;
    const flags = MAP_PRIVATE | MAP_ANONYMOUS;
    const addrs: number[] = [];
    for (let i = 0; i < 3000; i++) addrs.push(mm.mmap({ length: PAGE, prot: i & 1 ? RW : PROT_READ, flags }));
    expect(mm.vmas.size).toBe(3000);
    for (let i = 1; i < 3000; i++) expect(addrs[i]).toBe(addrs[i - 1] - PAGE);
    mm.munmap(addrs[1234], PAGE);
    mm.munmap(addrs[2000], PAGE);
    expect(mm.mmap({ length: PAGE, prot: RW, flags })).toBe(addrs[1234]);
    expect(mm.mmap({ length: PAGE, prot: RW, flags })).toBe(addrs[2000]);
    // Two pages fit in no hole: the mapping goes below the lowest one.
    mm.munmap(addrs[500], PAGE);
    expect(mm.mmap({ length: 2 * PAGE, prot: RW, flags })).toBe(addrs[2999] - 2 * PAGE);
    mm.vmas.validate();
  });
});
