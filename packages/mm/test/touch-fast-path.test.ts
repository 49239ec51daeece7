import { describe, expect, it } from "vitest";
import { defaultStamp, MADV_NOHUGEPAGE, Machine, type Process, setReentryGuard } from "../src/index.js";
import { MiB, PAGE, PRIVATE, RW } from "./helpers.js";

const LEN = 4 * MiB + 3 * PAGE;

/** Every page's frame and content hash, read without faulting (the PTE as it is). */
function pages(p: Process, a: number, len: number): number[] {
  const out: number[] = [];
  for (let va = a; va < a + len; va += PAGE) {
    const pos = p.mm.pt.ptePos(va);
    const pfn = pos < 0 ? -1 : p.mm.pt.ptePfn[pos];
    out.push(pfn, p.mm.pt.pteFlags[pos] ?? -1, pfn < 0 ? 0 : p.machine.pool.content.hash(pfn));
  }
  return out;
}

/**
 * The same workload (read first touch, write over the zero page, first-touch writes, COW writes
 * of a fork child) with touch() or with one accessPage per page, on a fresh machine; a 2 MiB
 * window of the range is mapped in 4 KiB pages and the rest may take THPs.
 */
function workload(byPage: boolean) {
  const m = new Machine({ contentMode: "tag", memoryBytes: 64 * MiB });
  const p = m.createProcess();
  const a = p.mm.mmap({ length: LEN, prot: RW, flags: PRIVATE });
  p.mm.madvise(a + MiB, 3 * MiB, MADV_NOHUGEPAGE);
  const go = (q: Process, va: number, len: number, write: boolean, stamp?: number) => {
    if (!byPage) return q.touch(va, len, write, stamp).faults;
    const before = q.minorFaults;
    for (let x = va; x < va + len; x += PAGE) {
      expect(q.accessPage(x, write)).toBe(0);
      if (write) q.machine.pool.content.stamp(q.lastPfn, stamp ?? defaultStamp(x));
    }
    return q.minorFaults - before;
  };
  const faults = [
    go(p, a, 3 * MiB, false),
    go(p, a + MiB, 2 * MiB, true, 7),
    go(p, a + 3 * MiB, LEN - 3 * MiB, true),
  ];
  const child = p.fork();
  faults.push(go(child, a, LEN, true, 9), go(child, a, LEN, true, 11), go(p, a, LEN, false));
  return { faults, stats: m.stats.snapshot(), parent: pages(p, a, LEN), child: pages(child, a, LEN) };
}

describe("touch's fast path for faults in one VMA", () => {
  it("ends in the same fault counts, statistics, PTEs, frames and content as one accessPage per page", () => {
    const fast = workload(false);
    const slow = workload(true);
    expect(fast.faults).toEqual(slow.faults);
    expect(fast.faults[0]).toBeGreaterThan(0);
    expect(fast.stats).toEqual(slow.stats);
    expect(fast.parent).toEqual(slow.parent);
    expect(fast.child).toEqual(slow.child);
  });

  it("asks a guard installed on its machine once per fault, even after another machine's guard was removed twice", () => {
    const other = new Machine({ contentMode: "tag" });
    setReentryGuard(other, () => {});
    setReentryGuard(other, null);
    setReentryGuard(other, null);
    const m = new Machine({ contentMode: "tag" });
    const p = m.createProcess();
    const a = p.mm.mmap({ length: 8 * PAGE, prot: RW, flags: PRIVATE });
    const asked: string[] = [];
    setReentryGuard(m, (op) => asked.push(op));
    expect(p.touch(a, 8 * PAGE, true, 1).faults).toBe(8);
    expect(asked.length).toBe(8);
    setReentryGuard(m, null);
  });
});
