import {
  DeviceAccesses,
  deviceFrameResult,
  HMM_PFN_DEVICE_PRIVATE,
  HMM_PFN_DIRTY,
  HMM_PFN_EXCLUSIVE,
  HMM_PFN_VALID,
  HMM_PFN_WRITE,
  MmuNotifyEvent,
  TRANSLATE_MISS,
} from "@hmmkit/core";
import { describe, expect, it } from "vitest";
import { BLOCK_RECORD_BYTES, BUCKET_BYTES, LEAF_BYTES } from "../src/index.js";
import { BLOCK, expectCoherent, GiB, MiB, makeGpu, mmapHuge, mmapSmall, PAGE } from "./helpers.js";

describe("gpu device page table", () => {
  it("a 4 KiB-backed fault becomes 4 KiB entries that translate to the CPU's frames", () => {
    const s = makeGpu({ migrate: "none" });
    const base = mmapSmall(s.p, 4 * MiB);
    s.p.touch(base, 4 * MiB, true, 7);
    s.core.deviceFault(s.dev, s.p, base, base + 4 * MiB, true);
    const ts = s.core.translations(s.dev);
    expect(ts.length).toBe(1024);
    expect(ts.every((t) => t.order === 0 && t.writable && !t.devicePrivate)).toBe(true);
    expect(s.drv.table.nLeaves).toBe(2);
    expect(s.drv.table.nHuge).toBe(0);
    for (const t of ts) expect(s.drv.translate(s.p.mm.id, t.va, true)).toBe(t.pfn);
    expect(expectCoherent(s.core, s.dev)).toBe(1024);
  });

  it("a huge PMD becomes one 2 MiB entry, reported once with order 9, translating all 512 pages", () => {
    const s = makeGpu({ migrate: "none" });
    const base = mmapHuge(s.p, 2 * BLOCK);
    s.p.touch(base, 2 * BLOCK, true, 3);
    s.core.deviceFault(s.dev, s.p, base, base + PAGE, false);
    const ts = s.core.translations(s.dev);
    expect(ts).toHaveLength(1);
    expect(ts[0]).toMatchObject({ va: base, order: 9, devicePrivate: false });
    expect(s.drv.table.nHuge).toBe(1);
    expect(s.drv.table.nLeaves).toBe(0);
    for (let i = 0; i < 512; i++)
      expect(s.drv.translate(s.p.mm.id, base + i * PAGE, false)).toBe(ts[0].pfn + i);
    // The second PMD was not faulted.
    expect(s.drv.translate(s.p.mm.id, base + BLOCK, false)).toBe(TRANSLATE_MISS);
    expectCoherent(s.core, s.dev);
  });

  it("a partial invalidation of a 2 MiB entry splits it and clears exactly the covered pages", () => {
    const s = makeGpu({ migrate: "none" });
    const base = mmapHuge(s.p, BLOCK);
    s.p.touch(base, BLOCK, true, 3);
    s.core.deviceFault(s.dev, s.p, base, base + BLOCK, true);
    const head = s.core.translations(s.dev)[0].pfn;
    const mmId = s.p.mm.id;
    // What the core sends first when a migration covers part of a THP (the whole-PMD CLEAR of
    // the split comes nested after it): pages 100..299.
    s.drv.invalidate(mmId, base + 100 * PAGE, base + 300 * PAGE, MmuNotifyEvent.MIGRATE, null);
    expect(s.dev.stats.pagesDropped).toBe(200);
    expect(s.dev.stats.tlbFlushes).toBe(1);
    expect(s.drv.gpuStats.hugeSplits).toBe(1);
    expect(s.drv.table.nHuge).toBe(0);
    for (let i = 0; i < 512; i++) {
      const want = i >= 100 && i < 300 ? TRANSLATE_MISS : head + i;
      expect(s.drv.translate(mmId, base + i * PAGE, true)).toBe(want);
    }
    const ts = s.core.translations(s.dev);
    expect(ts).toHaveLength(312);
    expect(ts.every((t) => t.order === 0)).toBe(true);
    // Clearing the rest frees the leaf and the block.
    s.drv.invalidate(mmId, base, base + BLOCK, MmuNotifyEvent.CLEAR, null);
    expect(s.dev.stats.pagesDropped).toBe(512);
    expect(s.drv.table.nLeaves).toBe(0);
    expect(s.drv.table.nBlocks).toBe(0);
  });

  it("an invalidation that drops nothing is not a TLB flush, and RELEASE costs only the blocks held", () => {
    const s = makeGpu({ migrate: "none" });
    const base = mmapSmall(s.p, 2 * MiB);
    s.p.touch(base, 2 * MiB, true, 1);
    s.core.deviceFault(s.dev, s.p, base, base + 2 * MiB, false);
    s.drv.invalidate(s.p.mm.id, base + 4 * MiB, base + 8 * MiB, MmuNotifyEvent.UNMAP, null);
    expect(s.dev.stats.tlbFlushes).toBe(0);
    const visited = s.drv.table.blocksVisited;
    s.drv.invalidate(s.p.mm.id, 0, 2 ** 47, MmuNotifyEvent.CLEAR, null);
    // All of user space is 2^26 blocks; the invalidation looked at the one block record held.
    expect(s.drv.table.blocksVisited - visited).toBe(1);
    expect(s.dev.stats.pagesDropped).toBe(512);
    expect(s.dev.stats.tlbFlushes).toBe(1);
  });

  it("mirror bytes per GiB: exactly 512 leaves and block records at 4 KiB, 512 block records at 2 MiB", () => {
    const s = makeGpu({ migrate: "none", memoryPages: 512 }, { memoryBytes: 2.25 * GiB });
    const small = mmapSmall(s.p, GiB);
    s.p.touch(small, GiB, true, 1);
    s.core.deviceFault(s.dev, s.p, small, small + GiB, false);
    const at4k = 512 * (BLOCK_RECORD_BYTES + BUCKET_BYTES + LEAF_BYTES);
    expect(at4k).toBe(1_325_056);
    expect(s.dev.stats.mirrorBytes).toBe(at4k);
    expect(s.dev.stats.mirrorBytes).toBeLessThanOrEqual(2.1 * MiB);
    s.core.unbind(s.dev, s.p);
    expect(s.dev.stats.mirrorBytes).toBe(64 * BUCKET_BYTES);
    const huge = mmapHuge(s.p, GiB);
    s.p.touch(huge, GiB, true, 2);
    s.core.deviceFault(s.dev, s.p, huge, huge + GiB, false);
    const at2m = 512 * (BLOCK_RECORD_BYTES + BUCKET_BYTES);
    expect(at2m).toBe(14_336);
    expect(s.dev.stats.mirrorBytes).toBe(at2m);
    expect(s.dev.stats.mirrorBytes).toBeLessThanOrEqual(16 * 1024);
    expect(s.dev.stats.mirrorBytesPeak).toBe(at4k);
  });

  it("the device reads every page through its own table after a fault batch", () => {
    const s = makeGpu({ migrate: "none" });
    const base = mmapSmall(s.p, 2 * MiB);
    for (let i = 0; i < 512; i++) s.p.writeStamp(base + i * PAGE, PAGE, 100 + i);
    const acc = new DeviceAccesses();
    for (let i = 0; i < 512; i++) acc.read(base + i * PAGE);
    const r = s.core.runDevice(s.dev, s.p, acc);
    expect(r.completed).toBe(512);
    for (let i = 0; i < 512; i++) expect(acc.seen[i]).toBe(s.p.readPageHash(base + i * PAGE));
  });

  it("the array form (callbackMode array) fills the same 4 KiB entries as mirrorPte", () => {
    const s = makeGpu({ migrate: "none", callbackMode: "array" });
    expect(s.dev.callbackMode).toBe("array");
    const base = mmapSmall(s.p, 4 * MiB);
    s.p.touch(base, 4 * MiB, true, 5);
    s.core.deviceFault(s.dev, s.p, base + 3 * PAGE, base + 4 * MiB - 5 * PAGE, true);
    expect(s.dev.stats.arrayCallbacks).toBeGreaterThan(0);
    expect(s.dev.stats.pteCallbacks).toBe(0);
    const ts = s.core.translations(s.dev);
    expect(ts).toHaveLength(1024 - 8);
    expect(s.drv.translate(s.p.mm.id, base + 2 * PAGE, false)).toBe(TRANSLATE_MISS);
    expect(expectCoherent(s.core, s.dev)).toBe(1024 - 8);
  });

  it("the array form keeps each page's own flags, frame 0 included, and takes a run across a block boundary page by page", () => {
    const s = makeGpu({ migrate: "none" });
    const mmId = s.p.mm.id;
    const va = 0x7f00_0000_0000 + BLOCK - 4 * PAGE; // 4 pages before a block boundary, 4 after
    const pfns = Int32Array.from([0, 11, 12, 13, 14, 15, 16, 17]);
    const f = [
      HMM_PFN_VALID,
      HMM_PFN_VALID | HMM_PFN_WRITE,
      HMM_PFN_VALID | HMM_PFN_WRITE | HMM_PFN_EXCLUSIVE,
      HMM_PFN_VALID | HMM_PFN_DEVICE_PRIVATE,
      HMM_PFN_VALID | HMM_PFN_WRITE | HMM_PFN_DIRTY,
      HMM_PFN_VALID,
      HMM_PFN_VALID | HMM_PFN_WRITE | HMM_PFN_DEVICE_PRIVATE,
      HMM_PFN_VALID,
    ];
    s.drv.mirrorPtes(mmId, va, 8, pfns, Int32Array.from(f));
    const write = (i: number) => (f[i] & HMM_PFN_WRITE) !== 0;
    const local = (i: number) => (f[i] & HMM_PFN_DEVICE_PRIVATE) !== 0;
    for (let i = 0; i < 8; i++) {
      const want = local(i) ? deviceFrameResult(pfns[i]) : pfns[i];
      expect(s.drv.translate(mmId, va + i * PAGE, false)).toBe(want);
      expect(s.drv.translate(mmId, va + i * PAGE, true)).toBe(write(i) ? want : TRANSLATE_MISS);
    }
    const ts = s.core.translations(s.dev).sort((a, b) => a.va - b.va);
    expect(ts.map((t) => t.pfn)).toEqual([...pfns]);
    expect(ts.map((t) => t.exclusive)).toEqual(f.map((x) => (x & HMM_PFN_EXCLUSIVE) !== 0));
    expect(s.drv.table.nLeaves).toBe(2);
    // Shorter runs inside one block land where they belong, next to what is there.
    s.drv.mirrorPtes(mmId, va + 8 * PAGE, 2, Int32Array.from([40, 41, 99]), Int32Array.from([1, 1, 1]));
    expect(s.drv.translate(mmId, va + 9 * PAGE, false)).toBe(41);
    expect(s.drv.translate(mmId, va + 10 * PAGE, false)).toBe(TRANSLATE_MISS);
    expect(s.drv.translate(mmId, va + 7 * PAGE, false)).toBe(17);
  });

  it("device-exclusive entries translate to the system frame and go when the CPU takes the page back", () => {
    const s = makeGpu({ migrate: "none" });
    const base = mmapSmall(s.p, 2 * MiB);
    s.p.touch(base, 8 * PAGE, true, 9);
    expect(s.core.makeExclusive(s.dev, s.p, base, base + 4 * PAGE)).toBe(4);
    const ts = s.core.translations(s.dev);
    expect(ts).toHaveLength(4);
    expect(ts.every((t) => t.exclusive === true && t.writable && !t.devicePrivate)).toBe(true);
    expect(s.drv.translate(s.p.mm.id, base, true)).toBe(ts[0].pfn);
    expectCoherent(s.core, s.dev);
    s.p.readPageHash(base + PAGE); // restores the CPU entry: an EXCLUSIVE invalidation
    expect(s.drv.translate(s.p.mm.id, base + PAGE, false)).toBe(TRANSLATE_MISS);
    expect(s.core.translations(s.dev)).toHaveLength(3);
    expectCoherent(s.core, s.dev);
  });

  it("migrating part of a mirrored THP splits the 2 MiB entry first, then the core's whole-PMD CLEAR drops the rest", () => {
    const s = makeGpu({ migrate: "none" });
    const base = mmapHuge(s.p, BLOCK);
    s.p.touch(base, BLOCK, true, 3);
    s.core.deviceFault(s.dev, s.p, base, base + BLOCK, false);
    expect(s.drv.table.nHuge).toBe(1);
    s.core.migrateToDevice(s.dev, s.p, base + 64 * PAGE, base + 128 * PAGE);
    // The partial MIGRATE came first (a split, 64 pages dropped), then the split's whole-PMD
    // CLEAR (the other 448).
    expect(s.drv.gpuStats.hugeSplits).toBe(1);
    expect(s.dev.stats.pagesDropped).toBe(512);
    // What is left is exactly what the CPU maps: the 64 device-private pages (re-reported after
    // the migration) and nothing stale.
    expectCoherent(s.core, s.dev);
    const ts = s.core.translations(s.dev);
    expect(ts.filter((t) => t.devicePrivate)).toHaveLength(64);
    expect(s.dev.stats.tlbFlushes).toBe(2);
  });
});
