import { DeviceAccesses, TRANSLATE_MISS } from "@hmmkit/core";
import { describe, expect, it } from "vitest";
import { DeviceTlb, TLB_WRITE } from "../src/index.js";
import { addIotlb, expectCoherent, makeSystem, mmapPrivate, PAGE } from "./helpers.js";

/** A system with an iotlb device of `entries` entries and `ways` ways, and a mapping whose first page is in set 0. */
function setup(entries: number, ways: number, pages = 64) {
  const sys = makeSystem();
  const p = sys.machine.createProcess();
  const raw = mmapPrivate(p, (pages + 64) * PAGE);
  // Start at a page number that is a multiple of 64, so page i of the window is in set i % sets.
  const base = Math.ceil(raw / (64 * PAGE)) * 64 * PAGE;
  const { dev, drv } = addIotlb(sys.core, { tlbEntries: entries, tlbWays: ways });
  return { ...sys, p, base, dev, drv };
}

/** Run `pages` (page offsets from base) as reads, one access per wave (each miss serviced before the next access). */
function readInOrder(s: ReturnType<typeof setup>, pages: number[]) {
  const acc = new DeviceAccesses();
  for (const i of pages) acc.read(s.base + i * PAGE);
  return s.core.runDevice(s.dev, s.p.mm, acc, { wave: 1 });
}

describe("DeviceTlb: a set-associative TLB with LRU replacement", () => {
  it("replaces the least recently used way of a set, not the oldest fill", () => {
    const t = new DeviceTlb(4, 2); // 2 sets of 2 ways
    t.fill(1, 0, 100, 0); // set 0
    t.fill(1, 2, 102, 0); // set 0
    expect(t.lookup(1, 0, false)).toBe(100); // page 0 becomes most recent
    t.fill(1, 4, 104, 0); // set 0 is full: page 2 (least recently used) goes, page 0 stays
    expect(t.lookup(1, 2, false)).toBe(TRANSLATE_MISS);
    expect(t.lookup(1, 0, false)).toBe(100);
    expect(t.lookup(1, 4, false)).toBe(104);
    expect(t.replacements).toBe(1);
    // Set 1 is untouched by set 0's traffic.
    t.fill(1, 1, 101, 0);
    expect(t.used).toBe(3);
  });

  it("hits served by the last-entry cache count for LRU like any other hit", () => {
    const t = new DeviceTlb(4, 2);
    t.fill(1, 0, 100, 0);
    t.fill(1, 2, 102, 0);
    expect(t.lookup(1, 2, false)).toBe(102);
    // Page 0 three times: the first through its set, then from the last-entry cache.
    for (let i = 0; i < 3; i++) expect(t.lookup(1, 0, false)).toBe(100);
    t.fill(1, 4, 104, 0); // page 2 is the least recently used of set 0
    expect(t.lookup(1, 2, false)).toBe(TRANSLATE_MISS);
    expect(t.lookup(1, 0, false)).toBe(100);
    // A 2 MiB entry hit 512 times in a row, then replaced: no stale translation survives it.
    const h = new DeviceTlb(2, 1);
    h.fillHuge(1, 512, 5000, 0);
    for (let v = 512; v < 1024; v++) expect(h.lookup(1, v, false)).toBe(5000 + v - 512);
    h.fillHuge(1, 1536, 9000, 0); // same set (direct mapped, 2 sets): replaces it
    expect(h.lookup(1, 600, false)).toBe(TRANSLATE_MISS);
    expect(h.lookup(1, 1537, false)).toBe(9001);
  });

  it("keys entries by address space, and a read-only entry misses for a write", () => {
    const t = new DeviceTlb(8, 2);
    t.fill(1, 5, 50, 0);
    t.fill(2, 5, 60, TLB_WRITE);
    expect(t.lookup(1, 5, false)).toBe(50);
    expect(t.lookup(1, 5, true)).toBe(TRANSLATE_MISS);
    expect(t.lookup(2, 5, true)).toBe(60);
    // Filling the same page again updates the entry in place.
    t.fill(1, 5, 50, TLB_WRITE);
    expect(t.lookup(1, 5, true)).toBe(50);
    expect(t.used).toBe(2);
    expect(t.replacements).toBe(0);
  });

  it("its size is exactly its typed arrays: 25 bytes per entry", () => {
    expect(new DeviceTlb(64, 4).bytes).toBe(64 * 25);
    expect(new DeviceTlb(1024, 8).bytes).toBe(1024 * 25);
  });
});

describe("iotlb hits, misses and flushes for a designed access pattern", () => {
  it("conflicts in one set follow LRU order: A B A C B A misses 5 times with 2 ways (FIFO would miss 4)", () => {
    // 8 entries, 2 ways: 4 sets. Pages 0, 4 and 8 all index set 0; page 1 is in set 1.
    const s = setup(8, 2);
    const [A, B, C, D] = [0, 4, 8, 1];
    const r = readInOrder(s, [A, B, D, A, C, B, A, D]);
    expect(r.completed).toBe(8);
    // Misses: A, B, D (cold), C (evicts B, the LRU), B (evicts A), A (evicts C). Hits: A, D.
    expect(s.dev.stats.translationMisses).toBe(6);
    expect(s.dev.stats.accessFaults).toBe(6);
    expect(s.dev.stats.deviceFaults).toBe(6);
    expect(s.dev.stats.faultBatches).toBe(6);
    // First-try hits (A, D) plus each faulted access's replay.
    expect(s.dev.stats.translationHits).toBe(2 + 6);
    expect(s.dev.stats.replays).toBe(6);
    expect(s.drv.tlb.replacements).toBe(3);
    const mmId = s.p.mm.id;
    const vpn = (i: number) => (s.base + i * PAGE) / PAGE;
    expect([A, B, C, D].map((i) => s.drv.tlb.holds(mmId, vpn(i)))).toEqual([true, true, false, true]);
    expectCoherent(s.core, s.dev);
  });

  it("a working set that fits the TLB misses once per page, then only hits", () => {
    const s = setup(64, 4, 64);
    const pages = Array.from({ length: 64 }, (_, i) => i);
    readInOrder(s, pages);
    expect(s.dev.stats.translationMisses).toBe(64);
    readInOrder(s, pages);
    readInOrder(s, pages);
    expect(s.dev.stats.translationMisses).toBe(64);
    expect(s.dev.stats.translationHits).toBe(64 + 128);
    expect(s.drv.tlb.replacements).toBe(0);
  });

  it("an invalidation flushes only the entries it covers and counts one flush and their pages", () => {
    const s = setup(64, 4, 64);
    readInOrder(s, [0, 1, 2, 3, 10]);
    expect(s.drv.tlb.used).toBe(5);
    // mprotect of pages 1..2 (and 30, never accessed, in another call) reaches the driver.
    s.p.mm.mprotect(s.base + PAGE, 2 * PAGE, 1);
    expect(s.dev.stats.tlbFlushes).toBe(1);
    expect(s.dev.stats.pagesDropped).toBe(2);
    s.p.mm.mprotect(s.base + 30 * PAGE, PAGE, 1);
    // The core delivered it, but nothing was held there: no flush.
    expect(s.dev.stats.tlbFlushes).toBe(1);
    expect(s.drv.tlb.used).toBe(3);
    // Pages 0, 3, 10 still hit; 1 misses again and is re-faulted read-only.
    const before = s.dev.stats.translationMisses;
    readInOrder(s, [0, 3, 10, 1]);
    expect(s.dev.stats.translationMisses - before).toBe(1);
    expectCoherent(s.core, s.dev);
  });

  it("more faulting pages in one set than it has ways still complete on their first replay", () => {
    // 64 pages 16 apart all index set 0 of a 16-set, 4-way TLB; one wave raises them all together.
    const s = setup(64, 4, 64 * 16);
    const acc = new DeviceAccesses();
    for (let i = 0; i < 64; i++) acc.read(s.base + i * 16 * PAGE);
    const r = s.core.runDevice(s.dev, s.p.mm, acc);
    expect(r.completed).toBe(64);
    expect(r.faults).toBe(64);
    expect(r.batches).toBe(1);
    expect(r.replays).toBe(64);
    expect(s.dev.stats.deviceFaults).toBe(64);
    // The set keeps the 4 most recently replayed pages.
    const mmId = s.p.mm.id;
    const held = Array.from({ length: 64 }, (_, i) => s.drv.tlb.holds(mmId, s.base / PAGE + i * 16));
    expect(held.filter(Boolean).length).toBe(4);
    expect(held.slice(60)).toEqual([true, true, true, true]);
    expect(s.drv.completions.pending).toBe(0);
    expectCoherent(s.core, s.dev);
  });

  it("a streaming launch larger than the TLB faults each page exactly once", () => {
    const s = setup(64, 4, 1024);
    const acc = new DeviceAccesses();
    for (let i = 0; i < 1024; i++) acc.write(s.base + i * PAGE, i + 1);
    const r = s.core.runDevice(s.dev, s.p.mm, acc);
    expect(r.completed).toBe(1024);
    expect(r.faults).toBe(1024);
    expect(r.batches).toBe(4);
    expect(s.dev.stats.deviceFaults).toBe(1024);
    expect(s.drv.tlb.used).toBe(64);
    expect(s.drv.completions.pending).toBe(0);
  });
});
