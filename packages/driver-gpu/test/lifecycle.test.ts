import {
  DeviceAccesses,
  type DeviceConfig,
  type DeviceContext,
  DriverError,
  HMM_API_VERSION,
  type HmmCore,
  HmmError,
  TOKENS,
} from "@hmmkit/core";
import { MADV_DONTNEED, PROT_READ } from "@hmmkit/mm";
import { inject, injectable } from "tsyringe";
import { describe, expect, it } from "vitest";
import gpuDefault, { GPU_CONFIG_KEYS, GpuDriver, parseGpuOptions, plugin } from "../src/index.js";
import { BLOCK, expectCoherent, hashOfStamp, MiB, makeGpu, mmapHuge, mmapSmall, PAGE } from "./helpers.js";

/**
 * A deliberately broken gpu driver: mirrorPte throws after `throwAfter` pages, and so does
 * mirrorPtes once its run reaches that page (after mirroring the run's pages before it).
 */
@injectable()
class ThrowingMirrorGpuFakeDriver extends GpuDriver {
  private calls = 0;
  constructor(@inject(TOKENS.DeviceContext) ctx: DeviceContext, @inject(TOKENS.HmmCore) core: HmmCore) {
    super(ctx, core);
  }
  override mirrorPte(mmId: number, va: number, pfn: number, flags: number): void {
    if (++this.calls > (this.ctx.config.throwAfter as number))
      throw new Error(`broken mirrorPte, call ${this.calls}`);
    super.mirrorPte(mmId, va, pfn, flags);
  }
  override mirrorPtes(mmId: number, va: number, count: number, pfns: Int32Array, flags: Int32Array): void {
    const ok = Math.max(0, Math.min(count, (this.ctx.config.throwAfter as number) - this.calls));
    if (ok > 0) super.mirrorPtes(mmId, va, ok, pfns, flags);
    this.calls += ok;
    if (ok < count) throw new Error(`broken mirrorPtes, page ${this.calls + 1}`);
  }
}

const brokenPlugin = {
  ...plugin,
  name: "gpu-broken",
  driver: ThrowingMirrorGpuFakeDriver,
  configKeys: [...GPU_CONFIG_KEYS, "throwAfter"],
};

describe("gpu plugin", () => {
  it("is the default export, per-pte, at this API version, declaring its config keys", () => {
    expect(gpuDefault).toBe(plugin);
    expect(plugin).toMatchObject({ name: "gpu", design: "per-pte", apiVersion: HMM_API_VERSION });
    expect(plugin.configKeys).toContain("migrate");
    expect(plugin.configKeys).toContain("eviction");
  });

  it("bad options are refused with an error naming the key and the value", () => {
    const bad: [Partial<DeviceConfig>, RegExp][] = [
      [
        { migrate: "fast" },
        /'migrate' must be "none" \(always remote\), "first-touch" or "access-counter", got "fast"/,
      ],
      [{ prefetchWindow: 3 }, /'prefetchWindow' must be .*power of two.*got 3/],
      [{ prefetchThreshold: 0 }, /'prefetchThreshold' must be a percentage from 1 to 100.*got 0/],
      [{ eviction: "fifo" }, /'eviction' must be "lru" or "clock", got "fifo"/],
      [{ thrashing: "yes" }, /'thrashing' must be a boolean, got "yes"/],
      [{ accessThreshold: -1 }, /'accessThreshold' must be .*integer from 1.*got -1/],
    ];
    for (const [config, msg] of bad) {
      expect(() => parseGpuOptions(config, "gpu0")).toThrow(msg);
      let err: unknown;
      try {
        makeGpu(config);
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(config)).toBeInstanceOf(HmmError);
      expect(String(err)).toMatch(msg);
    }
    // A misspelt key is refused by the core against configKeys, with a suggestion.
    expect(() => makeGpu({ prefetchWindw: 8 })).toThrow(/prefetchWindw.*did you mean 'prefetchWindow'/);
    expect(parseGpuOptions({}, "gpu0")).toMatchObject({ migrate: "first-touch", prefetchThreshold: 51 });
  });

  it("unbind drops the address space's translations; its device pages stay and still come home", () => {
    const s = makeGpu({ migrate: "first-touch" });
    const base = mmapSmall(s.p, 2 * MiB);
    const acc = new DeviceAccesses();
    for (let i = 0; i < 64; i++) acc.write(base + i * PAGE, 10 + i);
    s.core.runDevice(s.dev, s.p, acc);
    expect(s.dev.memory.used).toBeGreaterThan(0);
    s.core.unbind(s.dev, s.p);
    expect(s.core.translations(s.dev)).toEqual([]);
    expect(s.drv.table.nLeaves).toBe(0);
    for (let i = 0; i < 64; i++) expect(s.p.readPageHash(base + i * PAGE)).toBe(hashOfStamp(10 + i) >>> 0);
    expect(s.dev.memory.used).toBe(0);
  });

  it("removing the device brings its pages home and releases the table", () => {
    const s = makeGpu({ migrate: "first-touch" });
    const base = mmapSmall(s.p, 2 * MiB);
    const acc = new DeviceAccesses();
    for (let i = 0; i < 32; i++) acc.write(base + i * PAGE, 500 + i);
    s.core.runDevice(s.dev, s.p, acc);
    s.core.removeDevice(s.dev);
    expect(s.drv.table.nBlocks).toBe(0);
    expect(s.dev.stats.mirrorBytes).toBe(64 * 4);
    for (let i = 0; i < 32; i++) expect(s.p.readPageHash(base + i * PAGE)).toBe(hashOfStamp(500 + i) >>> 0);
  });

  it("an exit (RELEASE over all of user space) drops everything held, in time bounded by the blocks", () => {
    const s = makeGpu({ migrate: "first-touch" });
    const base = mmapSmall(s.p, 4 * MiB);
    const acc = new DeviceAccesses();
    for (let i = 0; i < 1024; i++) acc.read(base + i * PAGE);
    s.core.runDevice(s.dev, s.p, acc);
    s.p.exit();
    expect(s.drv.table.nBlocks).toBe(0);
    expect(s.drv.residency.live).toBe(0);
    expect(s.dev.memory.used).toBe(0);
  });
});

describe("gpu coherence with the CPU page table", () => {
  it("translations agree with the CPU after invalidations, fork, mprotect and munmap", () => {
    for (const migrate of ["none", "first-touch"] as const) {
      const s = makeGpu({ migrate });
      const base = mmapSmall(s.p, 8 * MiB);
      const huge = mmapHuge(s.p, 2 * BLOCK);
      s.p.touch(huge, 2 * BLOCK, true, 9);
      const all = () => {
        const acc = new DeviceAccesses();
        for (let i = 0; i < 2048; i += 3) acc.write(base + i * PAGE, i);
        for (let i = 0; i < 1024; i += 5) acc.read(huge + i * PAGE);
        return s.core.runDevice(s.dev, s.p, acc, { wave: 128 });
      };
      all();
      expectCoherent(s.core, s.dev);
      s.p.mm.madvise(base + 100 * PAGE, 50 * PAGE, MADV_DONTNEED);
      s.p.mm.madvise(huge + 10 * PAGE, 3 * PAGE, MADV_DONTNEED);
      expectCoherent(s.core, s.dev);
      const child = s.p.fork();
      expectCoherent(s.core, s.dev);
      expect(all().completed).toBeGreaterThan(0);
      expectCoherent(s.core, s.dev);
      s.p.mm.mprotect(base + 2 * MiB, 2 * MiB, PROT_READ);
      expectCoherent(s.core, s.dev);
      s.p.mm.munmap(base + 6 * MiB, 2 * MiB);
      s.p.mm.munmap(huge + BLOCK + 64 * PAGE, 64 * PAGE);
      expectCoherent(s.core, s.dev);
      const r = all();
      // Writes to the read-only and unmapped parts are cancelled, the rest complete.
      expect(r.errors.every((e) => e.errno === "EPERM" || e.errno === "EFAULT")).toBe(true);
      expect(r.cancelled).toBeGreaterThan(0);
      expectCoherent(s.core, s.dev);
      child.exit();
      expectCoherent(s.core, s.dev);
      expect(s.dev.state).toBe("active");
    }
  });
});

describe("gpu driver failure containment", () => {
  for (const callbackMode of ["per-pte", "array"] as const)
    it(`a driver that throws in the middle of a batch (${callbackMode} form) fails only its device, and no data is lost`, () => {
      const s = makeGpu(
        { migrate: "first-touch", prefetch: false, throwAfter: 600, callbackMode },
        {},
        brokenPlugin,
      );
      const other = s.core.addDevice(plugin, { name: "gpu1", memoryPages: 1024, migrate: "none" });
      const pages = 1024;
      const base = mmapSmall(s.p, pages * PAGE);
      for (let i = 0; i < pages; i++) s.p.writeStamp(base + i * PAGE, PAGE, 10_000 + i);
      const acc = new DeviceAccesses();
      for (let i = 0; i < pages; i++) acc.write(base + i * PAGE, 20_000 + i);
      const r = s.core.runDevice(s.dev, s.p, acc, { wave: 256 });
      expect(r.deviceFailure).toBeInstanceOf(DriverError);
      expect(String(r.deviceFailure)).toMatch(/mirrorPtes?.*broken mirrorPtes?, (call|page) 601/);
      expect(s.dev.state).toBe("failed");
      expect(r.completed).toBe(512);
      expect(r.cancelled).toBe(512);
      // Every page is where the CPU can read it, with the last write that completed.
      expect(s.dev.memory.used).toBe(0);
      for (let i = 0; i < pages; i++) {
        const want = acc.done[i] === 1 ? 20_000 + i : 10_000 + i;
        expect(s.p.readPageHash(base + i * PAGE), `page ${i}`).toBe(hashOfStamp(want) >>> 0);
      }
      // The other device goes on.
      const acc2 = new DeviceAccesses();
      acc2.read(base);
      expect(s.core.runDevice(other, s.p, acc2).completed).toBe(1);
      expect(acc2.seen[0]).toBe(hashOfStamp(20_000) >>> 0);
    });
});
