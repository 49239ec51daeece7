import { DEVICE_READ, DEVICE_WRITE, DeviceAccesses } from "@hmmkit/core";
import { PROT_READ } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { addIotlb, expectCoherent, makeSystem, mmapPrivate, PAGE } from "./helpers.js";

/** A mapping of `pages` pages starting at a page number that is a multiple of 64, and an iotlb device. */
function setup(pages: number, config: Record<string, unknown> = {}) {
  const sys = makeSystem();
  const p = sys.machine.createProcess();
  const raw = mmapPrivate(p, (pages + 128) * PAGE);
  const base = Math.ceil(raw / (64 * PAGE)) * 64 * PAGE;
  // Keep exactly [base, base + pages): unmap what is around it.
  if (base > raw) p.mm.munmap(raw, base - raw);
  p.mm.munmap(base + pages * PAGE, raw + (pages + 128) * PAGE - (base + pages * PAGE));
  const { dev, drv } = addIotlb(sys.core, { tlbEntries: 64, tlbWays: 4, ...config });
  const run = (list: [number, number][], wave?: number) => {
    const acc = new DeviceAccesses();
    for (const [i, kind] of list) acc.push(base + i * PAGE, kind, 1000 + i);
    return { acc, r: sys.core.runDevice(dev, p.mm, acc, wave === undefined ? {} : { wave }) };
  };
  return { ...sys, p, base, dev, drv, run };
}

const R = DEVICE_READ;
const W = DEVICE_WRITE;

describe("iotlb fault window (ODP-style prefetch)", () => {
  it("a miss faults the aligned window around the page; the window's other pages then hit", () => {
    const s = setup(64, { faultWindow: 8 });
    s.run([[3, R]]);
    expect(s.dev.stats.deviceFaults).toBe(1);
    expect(s.dev.stats.pagesMirrored).toBe(8);
    expect(s.dev.stats.prefetchedPages).toBe(7);
    const misses = s.dev.stats.translationMisses;
    s.run([0, 1, 2, 3, 4, 5, 6, 7].map((i) => [i, R] as [number, number]));
    expect(s.dev.stats.translationMisses).toBe(misses);
    // Two faulting pages of one window: one fault, 6 prefetched.
    s.run([
      [9, R],
      [10, R],
    ]);
    expect(s.dev.stats.deviceFaults).toBe(2);
    expect(s.dev.stats.prefetchedPages).toBe(7 + 6);
    expectCoherent(s.core, s.dev);
  });

  it("a write in a window faults the whole window writable", () => {
    const s = setup(64, { faultWindow: 4 });
    const { acc } = s.run([
      [5, R],
      [6, W],
    ]);
    expect(s.dev.stats.deviceFaults).toBe(1);
    expect(acc.done[1]).toBe(1);
    // Page 7 was prefetched writable: a write to it hits.
    const misses = s.dev.stats.translationMisses;
    s.run([[7, W]]);
    expect(s.dev.stats.translationMisses).toBe(misses);
    expectCoherent(s.core, s.dev);
  });

  it("a window past the end of the VMA is clipped by the core's EFAULT: the faulting page is faulted alone", () => {
    const s = setup(61, { faultWindow: 8 });
    // Page 58's window is [56, 64); the VMA ends at 61.
    const { acc, r } = s.run([[58, R]]);
    expect(r.completed).toBe(1);
    expect(acc.done[0]).toBe(1);
    // The window (EFAULT at page 61, hmm_range_fault leaves 56..60 faulted but reports none of
    // that chunk), then page 58 alone.
    expect(s.dev.stats.deviceFaults).toBe(2);
    expect(s.dev.stats.prefetchedPages).toBe(0);
    expect(s.dev.stats.fatalFaults).toBe(0);
    const vpn = s.base / PAGE;
    expect(s.drv.tlb.holds(s.p.mm.id, vpn + 58)).toBe(true);
    expect(s.drv.tlb.holds(s.p.mm.id, vpn + 57)).toBe(false);
    expectCoherent(s.core, s.dev);
  });

  it("a window starting before the VMA is clipped the same way", () => {
    const s = setup(64, { faultWindow: 8 });
    s.p.mm.munmap(s.base, 3 * PAGE);
    const { r } = s.run([[4, R]]);
    expect(r.completed).toBe(1);
    expect(s.dev.stats.deviceFaults).toBe(2);
    expectCoherent(s.core, s.dev);
  });

  it("an access with no VMA is cancelled with EFAULT, the others complete", () => {
    const s = setup(8, { faultWindow: 4 });
    const { r } = s.run([
      [1, R],
      [200, R],
      [2, W],
    ]);
    expect(r.completed).toBe(2);
    expect(r.errors.map((e) => [e.index, e.errno])).toEqual([[1, "EFAULT"]]);
    expect(s.dev.state).toBe("active");
  });
});

describe("iotlb fault handler: deduplication and cancellation", () => {
  it("32 reads and a write of one page in one batch are one write fault", () => {
    const s = setup(8);
    const list: [number, number][] = Array.from({ length: 32 }, () => [2, R]);
    list.push([2, W]);
    const { r } = s.run(list);
    expect(r.faults).toBe(33);
    expect(r.batches).toBe(1);
    expect(r.completed).toBe(33);
    expect(s.dev.stats.deviceFaults).toBe(1);
    expect(s.dev.stats.faultBatches).toBe(1);
  });

  it("in a read-only mapping the writes of a page are cancelled with EPERM and its reads complete", () => {
    const s = setup(8);
    s.p.mm.mprotect(s.base, 8 * PAGE, PROT_READ);
    const { acc, r } = s.run([
      [1, R],
      [1, W],
      [1, R],
      [1, W],
    ]);
    expect(r.completed).toBe(2);
    expect(r.cancelled).toBe(2);
    expect(r.errors.map((e) => [e.index, e.errno])).toEqual([
      [1, "EPERM"],
      [3, "EPERM"],
    ]);
    expect([...acc.done.subarray(0, 4)]).toEqual([1, 2, 1, 2]);
    // The write fault (refused), then a read fault for the reads.
    expect(s.dev.stats.deviceFaults).toBe(2);
    expectCoherent(s.core, s.dev);
  });

  it("a launch over 64 pages with a window of 8 sends one page request per window", () => {
    const s = setup(64, { faultWindow: 8 });
    const { r } = s.run(Array.from({ length: 64 }, (_, i) => [i, R] as [number, number]));
    expect(r.completed).toBe(64);
    expect(r.batches).toBe(1);
    expect(s.dev.stats.deviceFaults).toBe(8);
    expect(s.dev.stats.prefetchedPages).toBe(0);
  });
});

describe("iotlb fault handler: out of memory", () => {
  it("a page the core cannot allocate is cancelled with ENOMEM; the device stays up and the rest complete", () => {
    const sys = makeSystem({ memoryBytes: 4 * 1024 * 1024 });
    const p = sys.machine.createProcess();
    const base = mmapPrivate(p, 2048 * PAGE);
    const { dev } = addIotlb(sys.core);
    const acc = new DeviceAccesses();
    for (let i = 0; i < 2048; i++) acc.write(base + i * PAGE, i + 1);
    const r = sys.core.runDevice(dev, p.mm, acc);
    expect(r.cancelled).toBeGreaterThan(0);
    expect(r.completed).toBeGreaterThan(0);
    expect(r.completed + r.cancelled).toBe(2048);
    expect(new Set(r.errors.map((e) => e.errno))).toEqual(new Set(["ENOMEM"]));
    expect(dev.state).toBe("active");
    expectCoherent(sys.core, dev);
    p.exit();
    expect(sys.machine.usedFrames).toBe(0);
  });
});
