import { DEVICE_ATOMIC, DeviceAccesses } from "@hmmkit/core";
import { MADV_DONTNEED } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { expectCoherent, hashOfStamp, MiB, makeGpu, mmapSmall, PAGE, rng } from "./helpers.js";

/**
 * Rounds of device accesses (reads, writes, atomics on random pages) and CPU accesses (stamps and
 * reads) on the same pages, checked against a shadow of the last stamp of every page: every
 * device read and atomic must see the shadow's hash, every CPU read too, and at the end every
 * page comes home (migrateToRam) with the shadow's contents.
 */
function interleaved(
  contentMode: "bytes" | "tag",
  config: Record<string, unknown>,
  pages: number,
  seed: number,
): { evictions: number; migrated: number } {
  const s = makeGpu(config, { contentMode });
  const base = mmapSmall(s.p, pages * PAGE);
  const shadow = new Int32Array(pages);
  for (let i = 0; i < pages; i++) {
    shadow[i] = 1000 + i;
    s.p.writeStamp(base + i * PAGE, PAGE, shadow[i]);
  }
  const next = rng(seed);
  let stamp = 50_000;
  for (let round = 0; round < 6; round++) {
    const acc = new DeviceAccesses();
    const expected: number[] = [];
    const local = Int32Array.from(shadow);
    for (let k = 0; k < 300; k++) {
      const i = Math.floor(next() * pages);
      const va = base + i * PAGE;
      const r = next();
      if (r < 0.5) {
        acc.read(va);
        expected.push(hashOfStamp(local[i]));
      } else if (r < 0.8) {
        acc.write(va, ++stamp);
        expected.push(-1);
        local[i] = stamp;
      } else {
        acc.push(va, DEVICE_ATOMIC, ++stamp);
        expected.push(hashOfStamp(local[i]));
        local[i] = stamp;
      }
    }
    const res = s.core.runDevice(s.dev, s.p, acc, { wave: 32 });
    expect(res.completed, `round ${round}: ${JSON.stringify(res.errors)}`).toBe(acc.count);
    for (let k = 0; k < acc.count; k++)
      if (expected[k] !== -1) expect(acc.seen[k], `round ${round} access ${k}`).toBe(expected[k] >>> 0);
    shadow.set(local);
    // The CPU writes some pages (pulling device pages home) and reads others.
    for (let k = 0; k < 40; k++) {
      const i = Math.floor(next() * pages);
      if (next() < 0.5) {
        shadow[i] = ++stamp;
        s.p.writeStamp(base + i * PAGE, PAGE, stamp);
      } else expect(s.p.readPageHash(base + i * PAGE)).toBe(hashOfStamp(shadow[i]) >>> 0);
    }
    expectCoherent(s.core, s.dev);
  }
  s.core.migrateToRam(s.dev, s.p, base, base + pages * PAGE);
  expect(s.dev.memory.used).toBe(0);
  for (let i = 0; i < pages; i++)
    expect(s.p.readPageHash(base + i * PAGE), `page ${i}`).toBe(hashOfStamp(shadow[i]) >>> 0);
  return { evictions: s.dev.stats.evictions, migrated: s.dev.stats.migratedToDevice };
}

describe("every device read equals the shadow of the writes, CPU and device interleaved", () => {
  for (const contentMode of ["bytes", "tag"] as const) {
    for (const migrate of ["none", "first-touch", "access-counter"] as const) {
      it(`${contentMode} content, migrate "${migrate}"`, () => {
        const r = interleaved(contentMode, { migrate, accessThreshold: 8 }, 1024, 42);
        if (migrate === "none") expect(r.migrated).toBe(0);
        else expect(r.migrated).toBeGreaterThan(0);
      });
    }
  }

  for (const eviction of ["lru", "clock"] as const) {
    it(`oversubscribed 4:1 with ${eviction} eviction: data intact after every page comes home`, () => {
      // 8 MiB of working set, 2 MiB of device memory.
      const r = interleaved("tag", { migrate: "first-touch", eviction, memoryPages: 512 }, 2048, 7);
      expect(r.evictions).toBeGreaterThan(0);
    });
  }
});

describe("gpu eviction", () => {
  for (const eviction of ["lru", "clock"] as const) {
    it(`${eviction}: a device write stream 4x device memory evicts whole blocks and loses nothing`, () => {
      const s = makeGpu({ migrate: "first-touch", eviction, memoryPages: 1024 });
      const pages = 4096;
      const base = mmapSmall(s.p, pages * PAGE);
      const acc = new DeviceAccesses();
      for (let i = 0; i < pages; i++) acc.write(base + i * PAGE, 7000 + i);
      const r = s.core.runDevice(s.dev, s.p, acc, { wave: 256 });
      expect(r.completed).toBe(pages);
      expect(s.dev.stats.evictions).toBeGreaterThanOrEqual(pages - 1024);
      expect(s.drv.gpuStats.evictedBlocks).toBeGreaterThanOrEqual(6);
      expect(s.dev.memory.used).toBeLessThanOrEqual(1024);
      // The CPU reads every page: those still on the device come home on the fault.
      for (let i = 0; i < pages; i++)
        expect(s.p.readPageHash(base + i * PAGE)).toBe(hashOfStamp(7000 + i) >>> 0);
      expect(s.dev.memory.used).toBe(0);
    });
  }

  it("lru evicts the least recently used block, clock spares a block referenced since its last sweep", () => {
    const victims: Record<string, number> = {};
    for (const eviction of ["lru", "clock"] as const) {
      const s = makeGpu({ migrate: "first-touch", eviction, memoryPages: 1024, prefetch: false });
      const base = mmapSmall(s.p, 6 * MiB);
      const touch = (block: number) => {
        const acc = new DeviceAccesses();
        for (let i = 0; i < 512; i++) acc.read(base + block * 2 * MiB + i * PAGE);
        s.core.runDevice(s.dev, s.p, acc);
      };
      touch(0);
      touch(1);
      touch(0); // block 0 used again: LRU order is now 1, 0
      touch(2); // needs a block: evict one
      victims[eviction] = s.drv.translate(s.p.mm.id, base, false) <= -2 ? 1 : 0;
      expect(s.dev.stats.evictions).toBe(512);
    }
    // LRU evicted block 1 (block 0 stays on the device); clock's first sweep cleared both
    // referenced bits and took block 0, the first unreferenced one under the hand.
    expect(victims.lru).toBe(1);
    expect(victims.clock).toBe(0);
  });
});

describe("gpu thrashing detection", () => {
  it("a block bouncing CPU<->GPU thrashingThreshold times is pinned remote, then migrates again after the pin", () => {
    const s = makeGpu({
      migrate: "first-touch",
      thrashing: true,
      thrashingThreshold: 3,
      thrashingWindow: 100,
      thrashingPinBatches: 4,
    });
    const base = mmapSmall(s.p, 2 * MiB);
    const deviceWrite = (stamp: number) => {
      const acc = new DeviceAccesses();
      for (let i = 0; i < 16; i++) acc.write(base + i * PAGE, stamp + i);
      return s.core.runDevice(s.dev, s.p, acc);
    };
    deviceWrite(100);
    const migratedAtPin: number[] = [];
    for (let k = 1; k <= 4; k++) {
      s.p.writeStamp(base, 16 * PAGE, 200 + k); // the CPU pulls the pages home
      deviceWrite(100 * k);
      migratedAtPin.push(s.dev.stats.migratedToDevice);
    }
    expect(s.drv.gpuStats.thrashingBounces).toBe(3);
    expect(s.drv.gpuStats.thrashingPins).toBe(1);
    // From the third bounce on the block is mapped remotely: no more migrations.
    expect(migratedAtPin[3]).toBe(migratedAtPin[2]);
    expect(s.dev.stats.remoteAccesses).toBeGreaterThan(0);
    // Device accesses of the pinned block are remote and see the CPU's data.
    const acc = new DeviceAccesses();
    acc.read(base + PAGE);
    s.core.runDevice(s.dev, s.p, acc);
    expect(acc.seen[0]).toBe(hashOfStamp(401) >>> 0);
    // While pinned, the remote mapping stays valid: the CPU writes the same frames, no fault.
    s.p.writeStamp(base, 16 * PAGE, 900);
    expect(deviceWrite(1000).faults).toBe(0);
    // Four fault batches later (elsewhere) the pin has lapsed: the next fault migrates again.
    const other = mmapSmall(s.p, 2 * MiB);
    for (let k = 0; k < 4; k++) {
      const acc = new DeviceAccesses();
      acc.read(other + k * 64 * PAGE);
      expect(s.core.runDevice(s.dev, s.p, acc).batches).toBe(1);
    }
    s.p.mm.madvise(base, 16 * PAGE, MADV_DONTNEED);
    deviceWrite(2000);
    expect(s.dev.stats.migratedToDevice).toBeGreaterThan(migratedAtPin[3]);
    expectCoherent(s.core, s.dev);
  });

  it("without thrashing detection the same ping-pong migrates on every round", () => {
    const s = makeGpu({ migrate: "first-touch", prefetch: false });
    const base = mmapSmall(s.p, 2 * MiB);
    for (let k = 0; k < 5; k++) {
      const acc = new DeviceAccesses();
      for (let i = 0; i < 16; i++) acc.write(base + i * PAGE, k * 100 + i);
      s.core.runDevice(s.dev, s.p, acc);
      s.p.writeStamp(base, 16 * PAGE, 50 + k);
    }
    expect(s.dev.stats.migratedToDevice).toBe(5 * 16);
    expect(s.drv.gpuStats.thrashingPins).toBe(0);
  });
});
