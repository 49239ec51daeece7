import { DeviceAccesses } from "@hmmkit/core";
import { HPAGE_PMD_SIZE, MADV_DONTNEED } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { addIotlb, expectCoherent, makeSystem, mmapHuge, PAGE } from "./helpers.js";

function setup(config: Record<string, unknown> = {}, pmds = 2) {
  const sys = makeSystem();
  const p = sys.machine.createProcess();
  const base = mmapHuge(p, pmds);
  for (let i = 0; i < pmds; i++) p.writeStamp(base + i * HPAGE_PMD_SIZE, PAGE, 7 + i); // THP on first touch
  const { dev, drv } = addIotlb(sys.core, config);
  const readAll = () => {
    const acc = new DeviceAccesses();
    for (let i = 0; i < pmds * 512; i++) acc.read(base + i * PAGE);
    return { acc, r: sys.core.runDevice(dev, p.mm, acc) };
  };
  return { ...sys, p, base, dev, drv, readAll };
}

describe("iotlb huge entries", () => {
  it("a 2 MiB PMD from mirrorPmd is one TLB entry, reported with order 9", () => {
    const s = setup();
    const { acc, r } = s.readAll();
    expect(r.completed).toBe(1024);
    expect(s.dev.stats.pmdCallbacks).toBe(2);
    expect(s.dev.stats.deviceFaults).toBe(2);
    expect(s.drv.tlb.used).toBe(2);
    const t = s.core.translations(s.dev);
    expect(t.map((x) => [x.va, x.order])).toEqual(
      expect.arrayContaining([
        [s.base, 9],
        [s.base + HPAGE_PMD_SIZE, 9],
      ]),
    );
    expect(t.length).toBe(2);
    expect(acc.seen[0]).toBe(s.p.readPageHash(s.base));
    expect(acc.seen[512]).toBe(s.p.readPageHash(s.base + HPAGE_PMD_SIZE));
    expect(expectCoherent(s.core, s.dev)).toBe(1024);
    // A second pass hits everywhere.
    const misses = s.dev.stats.translationMisses;
    s.readAll();
    expect(s.dev.stats.translationMisses).toBe(misses);
  });

  it("with hugeEntries false the device caches 4 KiB entries and faults every page", () => {
    const s = setup({ hugeEntries: false });
    const { r } = s.readAll();
    expect(r.completed).toBe(1024);
    expect(s.dev.stats.deviceFaults).toBe(1024);
    expect(s.drv.tlb.used).toBe(64);
    expect(s.core.translations(s.dev).every((t) => t.order === 0)).toBe(true);
    expectCoherent(s.core, s.dev);
  });

  it("an invalidation of part of a 2 MiB entry drops the whole entry and counts its 512 pages", () => {
    const s = setup();
    s.readAll();
    expect(s.drv.tlb.used).toBe(2);
    s.p.mm.madvise(s.base + 5 * PAGE, PAGE, MADV_DONTNEED);
    expect(s.dev.stats.tlbFlushes).toBe(1);
    expect(s.dev.stats.pagesDropped).toBe(512);
    expect(s.drv.tlb.used).toBe(1);
    expectCoherent(s.core, s.dev);
    // The split PMD is now 4 KiB pages: a read of page 5 sees zeros, page 6 the old stamp.
    const acc = new DeviceAccesses();
    acc.read(s.base + 5 * PAGE);
    acc.read(s.base + 6 * PAGE);
    s.core.runDevice(s.dev, s.p.mm, acc);
    expect(acc.seen[0]).toBe(0);
    expect(acc.seen[1]).toBe(s.p.readPageHash(s.base + 6 * PAGE));
    expect(s.core.translations(s.dev).filter((t) => t.order === 0).length).toBe(2);
    expectCoherent(s.core, s.dev);
  });

  it("mprotect of part of a 2 MiB entry drops it; writes then fault again", () => {
    const s = setup({}, 1);
    const acc = new DeviceAccesses();
    for (let i = 0; i < 512; i++) acc.write(s.base + i * PAGE, i);
    s.core.runDevice(s.dev, s.p.mm, acc);
    expect(s.drv.tlb.used).toBe(1);
    s.p.mm.mprotect(s.base + HPAGE_PMD_SIZE / 2, HPAGE_PMD_SIZE / 2, 1);
    expect(s.drv.tlb.used).toBe(0);
    expect(s.dev.stats.pagesDropped).toBe(512);
    const w = new DeviceAccesses();
    w.write(s.base, 1);
    w.write(s.base + 300 * PAGE, 2);
    const r = s.core.runDevice(s.dev, s.p.mm, w);
    expect(r.completed).toBe(1);
    expect(r.errors.map((e) => e.errno)).toEqual(["EPERM"]);
    expectCoherent(s.core, s.dev);
  });
  it("with the core's pmdCallback off, a PMD reported page by page caches only the requested pages", () => {
    const s = setup({ pmdCallback: false, faultWindow: 4 });
    const acc = new DeviceAccesses();
    acc.read(s.base + 9 * PAGE);
    s.core.runDevice(s.dev, s.p.mm, acc);
    // The core reported all 512 pages of the PMD (order 9); the TLB took the 4-page window.
    expect(s.dev.stats.pteCallbacks).toBe(512);
    expect(s.dev.stats.pmdCallbacks).toBe(0);
    expect(s.core.translations(s.dev).map((t) => [(t.va - s.base) / PAGE, t.order])).toEqual([
      [8, 0],
      [9, 0],
      [10, 0],
      [11, 0],
    ]);
    expect(acc.seen[0]).toBe(s.p.readPageHash(s.base + 9 * PAGE));
    expectCoherent(s.core, s.dev);
  });
});
