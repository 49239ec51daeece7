import { describe, expect, it } from "vitest";
import { DeviceMemory } from "../src/index.js";

const NR = 512;

describe("DeviceMemory: base frames and order-9 blocks", () => {
  it("hands out base frames lowest first and reuses freed ones last-in first-out", () => {
    const m = new DeviceMemory(3 * NR + 100, "tag");
    const got = Array.from({ length: 5 }, () => m.alloc());
    expect(got).toEqual([0, 1, 2, 3, 4]);
    m.put(1);
    m.put(3);
    expect([m.alloc(), m.alloc(), m.alloc()]).toEqual([3, 1, 5]);
    expect(m.used).toBe(6);
  });

  it("allocates a huge folio as 512 contiguous frames starting at a multiple of 512, one reference at the head", () => {
    const m = new DeviceMemory(3 * NR + 100, "tag");
    m.alloc(); // block 0 is split for base pages
    const h = m.allocHuge();
    expect(h % NR).toBe(0);
    expect(h).toBe(NR);
    expect(m.used).toBe(NR + 1);
    expect(m.hugeInUse).toBe(1);
    for (const d of [h, h + 1, h + 511]) {
      expect(m.isHuge(d)).toBe(true);
      expect(m.folioHead(d)).toBe(h);
    }
    m.get(h + 7); // a reference through any page lands on the head
    expect(m.folioRefs(h)).toBe(2);
    m.put(h + 300);
    m.put(h);
    expect(m.used).toBe(1);
    expect(m.hugeInUse).toBe(0);
  });

  it("never makes a huge folio of the partial tail, and fails when no whole block is left", () => {
    const m = new DeviceMemory(NR + 100, "tag");
    expect(m.allocHuge()).toBe(0);
    expect(m.allocHuge()).toBe(-1);
    expect(m.freeBlockCount).toBe(0);
    // Base frames still come from the tail.
    expect(m.alloc()).toBe(NR);
  });

  it("merges a block back once all its base frames are free, when a huge allocation needs it", () => {
    const m = new DeviceMemory(NR, "tag");
    const frames = Array.from({ length: 10 }, () => m.alloc());
    expect(m.allocHuge()).toBe(-1);
    for (const d of frames) m.put(d);
    expect(m.allocHuge()).toBe(0);
    expect(m.free).toBe(0);
  });

  it("splitting a folio with one reference gives every frame one reference and its own eviction slot", () => {
    const m = new DeviceMemory(2 * NR, "tag");
    const h = m.allocHuge();
    m.noteInstalled(h, 3, 0x200000);
    expect(m.splitFolio(h)).toBe(true);
    expect(m.hugeInUse).toBe(0);
    expect(m.isHuge(h + 1)).toBe(false);
    for (const d of [h, h + 1, h + 511]) expect(m.folioRefs(d)).toBe(1);
    expect(m.installedVa[h + 2]).toBe(0x200000 + 2 * 4096);
    expect(m.oldestInUse(3)).toEqual([h, h + 1, h + 2]);
    m.put(h + 5);
    expect(m.used).toBe(NR - 1);
    // A folio with two references cannot be split.
    const h2 = m.allocHuge();
    m.get(h2);
    expect(m.splitFolio(h2)).toBe(false);
    expect(m.isHuge(h2)).toBe(true);
  });

  it("lists installed folios for eviction by their heads, oldest first", () => {
    const m = new DeviceMemory(2 * NR, "tag");
    const a = m.alloc();
    const h = m.allocHuge();
    const b = m.alloc();
    for (const d of [a, h, b]) m.noteInstalled(d, 1, d * 4096);
    expect(m.oldestInUse(10)).toEqual([a, h, b]);
    m.put(a);
    expect(m.oldestInUse(10)).toEqual([h, b]);
  });
});
