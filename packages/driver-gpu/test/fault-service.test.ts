import { DEVICE_ATOMIC, DeviceAccesses } from "@hmmkit/core";
import { PROT_READ } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { BLOCK, expectCoherent, hashOfStamp, MiB, makeGpu, mmapHuge, mmapSmall, PAGE } from "./helpers.js";

function reads(base: number, pages: readonly number[]): DeviceAccesses {
  const acc = new DeviceAccesses();
  for (const i of pages) acc.read(base + i * PAGE);
  return acc;
}

const range = (n: number, from = 0, step = 1) => Array.from({ length: n }, (_, i) => from + i * step);

describe("gpu fault batches", () => {
  it("a burst of 512 faults arrives in 2 batches of 256, each serviced as one region of its VA block", () => {
    const s = makeGpu({ migrate: "none", prefetch: false });
    const base = mmapSmall(s.p, 2 * MiB);
    s.p.touch(base, 2 * MiB, true, 1);
    const r = s.core.runDevice(s.dev, s.p, reads(base, range(512)));
    expect(r.batches).toBe(2);
    expect(r.faults).toBe(512);
    expect(r.completed).toBe(512);
    expect(s.dev.stats.faultBatches).toBe(2);
    expect(s.drv.gpuStats.batches).toBe(2);
    expect(s.drv.gpuStats.faultEntries).toBe(512);
    expect(s.drv.gpuStats.blocksServiced).toBe(2);
    // One deviceFault per batch: its 256 pages are one contiguous region.
    expect(s.drv.gpuStats.remoteFaultCalls).toBe(2);
    expect(s.dev.stats.deviceFaults).toBe(2);
    const again = s.core.runDevice(s.dev, s.p, reads(base, range(512)));
    expect(again.faults).toBe(0);
  });

  it("duplicate faults to a page are coalesced: 256 entries on 4 pages make one region", () => {
    const s = makeGpu({ migrate: "none", prefetch: false });
    const base = mmapSmall(s.p, 2 * MiB);
    const acc = new DeviceAccesses();
    for (let k = 0; k < 64; k++) for (let i = 3; i >= 0; i--) acc.write(base + i * PAGE, k);
    const r = s.core.runDevice(s.dev, s.p, acc);
    expect(r.batches).toBe(1);
    expect(s.drv.gpuStats.duplicateFaults).toBe(252);
    expect(s.dev.stats.deviceFaults).toBe(1);
    expect(r.completed).toBe(256);
  });

  it("faults the core refuses are cancelled with their errno; the others complete", () => {
    const s = makeGpu({ migrate: "none" });
    const base = mmapSmall(s.p, 2 * MiB);
    const ro = s.p.mm.mmap({ length: 4 * PAGE, prot: PROT_READ, flags: 0x22 });
    const acc = new DeviceAccesses();
    acc.read(base);
    acc.read(base + 64 * MiB); // no VMA
    acc.push(ro, DEVICE_ATOMIC, 1); // write to a read-only mapping
    acc.read(ro + PAGE);
    const r = s.core.runDevice(s.dev, s.p, acc);
    expect(r.completed).toBe(2);
    expect(r.errors.map((e) => [e.index, e.errno])).toEqual([
      [1, "EFAULT"],
      [2, "EPERM"],
    ]);
    expect(s.drv.gpuStats.cancelled).toBe(2);
    expect(s.dev.state).toBe("active");
    expectCoherent(s.core, s.dev);
  });
});

describe("gpu prefetch inside a VA block (UVM's 51% bitmap-tree rule)", () => {
  it("faults on more than 51% of a 256-page subregion prefetch the rest of it, and no more", () => {
    const s = makeGpu({ migrate: "none", prefetchGranule: 1 });
    const base = mmapSmall(s.p, 2 * MiB);
    s.p.touch(base, 2 * MiB, true, 1);
    // 131 of 256 pages: 131 * 100 > 256 * 51.
    s.core.runDevice(s.dev, s.p, reads(base, range(131)));
    expect(s.dev.stats.prefetchedPages).toBe(256 - 131);
    expect(s.drv.translate(s.p.mm.id, base + 255 * PAGE, false)).toBeGreaterThanOrEqual(0);
    expect(s.drv.translate(s.p.mm.id, base + 256 * PAGE, false)).toBe(-1);
  });

  it("faults on exactly 130 of 256 pages (50.8%) prefetch nothing", () => {
    const s = makeGpu({ migrate: "none", prefetchGranule: 1 });
    const base = mmapSmall(s.p, 2 * MiB);
    s.p.touch(base, 2 * MiB, true, 1);
    s.core.runDevice(s.dev, s.p, reads(base, range(130)));
    expect(s.dev.stats.prefetchedPages).toBe(0);
  });

  it("faults grow to 64 KiB big pages first: one fault in each of 9 of 16 big pages prefetches 256 pages", () => {
    const s = makeGpu({ migrate: "first-touch" });
    const base = mmapSmall(s.p, 2 * MiB);
    s.p.touch(base, 2 * MiB, true, 1);
    s.core.runDevice(s.dev, s.p, reads(base, range(9, 0, 16)));
    expect(s.dev.stats.prefetchedPages).toBe(256 - 9);
    expect(s.dev.stats.migratedToDevice).toBe(256);
    expect(s.drv.translate(s.p.mm.id, base + 255 * PAGE, false)).toBeLessThanOrEqual(-2);
    expectCoherent(s.core, s.dev);
  });

  it("a single fault prefetches its 64 KiB big page; prefetchWindow 8 keeps it within 8 pages", () => {
    const one = makeGpu({ migrate: "none" });
    const b1 = mmapSmall(one.p, 2 * MiB);
    one.core.runDevice(one.dev, one.p, reads(b1, [20]));
    expect(one.dev.stats.prefetchedPages).toBe(15);
    const win = makeGpu({ migrate: "none", prefetchWindow: 8 });
    const b2 = mmapSmall(win.p, 2 * MiB);
    win.core.runDevice(win.dev, win.p, reads(b2, [20]));
    expect(win.dev.stats.prefetchedPages).toBe(7);
    const off = makeGpu({ migrate: "none", prefetch: false });
    const b3 = mmapSmall(off.p, 2 * MiB);
    off.core.runDevice(off.dev, off.p, reads(b3, [20]));
    expect(off.dev.stats.prefetchedPages).toBe(0);
  });
});

describe("gpu migration policies", () => {
  it('migrate "none" always accesses system memory remotely and never migrates', () => {
    const s = makeGpu({ migrate: "none" });
    const base = mmapSmall(s.p, 4 * MiB);
    s.p.touch(base, 4 * MiB, true, 1);
    const r = s.core.runDevice(s.dev, s.p, reads(base, range(1024)));
    expect(r.completed).toBe(1024);
    expect(s.dev.stats.remoteAccesses).toBe(1024);
    expect(s.dev.stats.localAccesses).toBe(0);
    expect(s.dev.stats.migratedToDevice).toBe(0);
  });

  it('migrate "first-touch" moves the faulting block region to device memory', () => {
    const s = makeGpu({ migrate: "first-touch" });
    const base = mmapSmall(s.p, 4 * MiB);
    s.p.touch(base, 4 * MiB, true, 1);
    const r = s.core.runDevice(s.dev, s.p, reads(base, range(1024)));
    expect(r.completed).toBe(1024);
    expect(s.dev.stats.migratedToDevice).toBe(1024);
    expect(s.dev.stats.localAccesses).toBe(1024);
    expect(s.dev.stats.remoteAccesses).toBe(0);
    expectCoherent(s.core, s.dev);
  });

  it('migrate "access-counter" maps remotely until a block reaches accessThreshold, then migrates the block', () => {
    const s = makeGpu({ migrate: "access-counter", accessThreshold: 64 });
    const base = mmapSmall(s.p, 2 * MiB);
    s.p.touch(base, 2 * MiB, true, 1);
    const r = s.core.runDevice(s.dev, s.p, reads(base, range(512)), { wave: 16 });
    expect(r.completed).toBe(512);
    expect(s.drv.gpuStats.accessNotifications).toBe(1);
    expect(s.dev.stats.migratedToDevice).toBe(512);
    // The 64th remote access was the notification; the block was remote until then.
    expect(s.dev.stats.remoteAccesses).toBeGreaterThanOrEqual(63);
    expect(s.dev.stats.remoteAccesses).toBeLessThan(64 + 16);
    const again = s.core.runDevice(s.dev, s.p, reads(base, range(512)));
    expect(again.faults).toBe(0);
    expect(s.dev.stats.localAccesses).toBe(512 - s.dev.stats.remoteAccesses + 512);
    expectCoherent(s.core, s.dev);
  });

  it("access-counter below its threshold never migrates", () => {
    const s = makeGpu({ migrate: "access-counter", accessThreshold: 100_000 });
    const base = mmapSmall(s.p, 2 * MiB);
    s.core.runDevice(s.dev, s.p, reads(base, range(512)));
    s.core.runDevice(s.dev, s.p, reads(base, range(512)));
    expect(s.dev.stats.migratedToDevice).toBe(0);
    expect(s.dev.stats.remoteAccesses).toBe(1024);
    expect(s.drv.gpuStats.accessNotifications).toBe(0);
  });

  it("with compoundMigration a fault in a THP block migrates the whole block as one device-private 2 MiB entry", () => {
    const s = makeGpu({ migrate: "first-touch", compoundMigration: true });
    const base = mmapHuge(s.p, 2 * BLOCK);
    s.p.writeStamp(base, 2 * BLOCK, 77);
    const acc = new DeviceAccesses();
    acc.write(base + 5 * PAGE, 78);
    acc.read(base + BLOCK + 7 * PAGE);
    const r = s.core.runDevice(s.dev, s.p, acc);
    expect(r.completed).toBe(2);
    expect(s.dev.stats.compoundToDevice).toBe(2);
    expect(s.dev.stats.migratedToDevice).toBe(1024);
    expect(s.dev.stats.pmdCallbacks).toBe(2);
    const ts = s.core.translations(s.dev);
    expect(ts).toHaveLength(2);
    expect(ts.every((t) => t.order === 9 && t.devicePrivate)).toBe(true);
    expect(s.drv.table.nHuge).toBe(2);
    expect(s.drv.table.nLeaves).toBe(0);
    expect(acc.seen[1]).toBe(hashOfStamp(77) >>> 0);
    expectCoherent(s.core, s.dev);
    // Home again whole, with the device's write.
    s.core.migrateToRam(s.dev, s.p, base, base + 2 * BLOCK);
    expect(s.dev.stats.compoundToRam).toBe(2);
    expect(s.p.readPageHash(base + 5 * PAGE)).toBe(hashOfStamp(78) >>> 0);
    expect(s.p.readPageHash(base + 6 * PAGE)).toBe(hashOfStamp(77) >>> 0);
  });
});
