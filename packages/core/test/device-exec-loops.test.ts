import { type DeviceConfig, type DeviceContext, TOKENS } from "@hmmkit/core";
import { hex, MADV_DONTNEED, type Process } from "@hmmkit/mm";
import { inject, injectable } from "tsyringe";
import { describe, expect, it } from "vitest";
import { BIND_MIN_ACCESSES } from "../src/access-loop.js";
import { compileBound } from "../src/compile-per-class.js";
import {
  DEVICE_ATOMIC,
  DEVICE_READ,
  DEVICE_WRITE,
  DeviceAccesses,
  DriverError,
  TRANSLATE_MISS,
} from "../src/index.js";
import {
  PAGE,
  StaleTranslatingFakeDriver,
  ThrowingTranslatingFakeDriver,
  TranslatingFakeDriver,
} from "./fakes.js";
import { addFake, makeSystem, mmapPrivate } from "./helpers.js";

/**
 * A deliberately broken driver: TranslatingFakeDriver whose translate returns `lie` for the page
 * at `lieAt` (a frame that does not exist, a fraction, NaN).
 */
@injectable()
class FrameLyingFakeDriver extends TranslatingFakeDriver {
  lieAt = -1;
  lie = 0;
  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
  ) {
    super(ctx, config);
  }
  /** Lie only once the page is mirrored: the access misses, faults, and gets the lie on its replay. */
  lieOnReplay = false;
  override translate(mmId: number, va: number, write: boolean): number {
    const r = super.translate(mmId, va, write);
    if (va !== this.lieAt || (this.lieOnReplay && r === TRANSLATE_MISS)) return r;
    return this.lie;
  }
}

const READ_PAGES = 256;
const WRITE_PAGES = 1500;
const ATOMIC_PAGES = 300;

/**
 * A stream of `n` accesses: one write to each of WRITE_PAGES pages, one atomic to each of
 * ATOMIC_PAGES pages and the rest reads of READ_PAGES CPU-stamped pages, interleaved, so every
 * read's result and every page's final contents are known whatever order stalled accesses
 * complete in.
 */
function mixedStream(p: Process, n: number) {
  const base = mmapPrivate(p, (READ_PAGES + WRITE_PAGES + ATOMIC_PAGES) * PAGE);
  const readBase = base;
  const writeBase = base + READ_PAGES * PAGE;
  const atomicBase = writeBase + WRITE_PAGES * PAGE;
  for (let i = 0; i < READ_PAGES; i++) p.writeStamp(readBase + i * PAGE, PAGE, 7000 + i);
  for (let i = 0; i < ATOMIC_PAGES; i++) p.writeStamp(atomicBase + i * PAGE, PAGE, 9000 + i);
  const acc = new DeviceAccesses(16);
  let w = 0;
  let a = 0;
  let r = 0;
  for (let k = 0; k < n; k++) {
    if (k % 7 === 3 && w < WRITE_PAGES) acc.write(writeBase + w * PAGE, 20_000 + w++);
    else if (k % 11 === 5 && a < ATOMIC_PAGES) acc.push(atomicBase + a * PAGE, DEVICE_ATOMIC, 30_000 + a++);
    else acc.read(readBase + (r++ % READ_PAGES) * PAGE);
  }
  return { acc, base, readBase, writeBase, atomicBase, writes: w, atomics: a };
}

/** The hash a page holds after a CPU stamp of `stamp` (via a scratch page). */
function stampHash(p: Process, stamp: number): number {
  const q = mmapPrivate(p, PAGE);
  p.writeStamp(q, PAGE, stamp);
  const h = p.readPageHash(q);
  p.mm.munmap(q, PAGE);
  return h;
}

// The core runs a stream through one of two copies of its issue loop: one per driver class for
// short streams, one bound to the stream itself for long ones. Both must behave the same.
for (const [tier, n] of [
  ["a short stream (the driver class's loop)", 4000],
  ["a long stream (a loop bound to the stream)", BIND_MIN_ACCESSES + 3000],
] as const) {
  describe(`device access loop, ${tier}`, () => {
    it("reads, writes and atomics complete with the right data and counters, in both content modes", () => {
      for (const contentMode of ["bytes", "tag"] as const) {
        const sys = makeSystem({ contentMode });
        const p = sys.machine.createProcess();
        const s = mixedStream(p, n);
        const { dev } = addFake(sys.core, "dev0", TranslatingFakeDriver);
        const first = sys.core.runDevice(dev, p.mm, s.acc);
        expect(first.completed).toBe(n);
        expect(first.deviceFailure).toBeNull();
        const misses = dev.stats.translationMisses;
        expect(misses).toBeGreaterThanOrEqual(READ_PAGES + s.writes + s.atomics);
        // Every access completed through a hit, in the loop or on a replay.
        expect(dev.stats.translationHits).toBe(n);
        expect(dev.stats.accesses).toBe(n);
        expect(dev.stats.remoteAccesses).toBe(n);
        expect(dev.stats.localAccesses).toBe(0);
        const expectData = () => {
          for (let k = 0; k < n; k++) {
            const kind = s.acc.kind[k];
            const va = s.acc.va[k];
            if (kind === DEVICE_READ) {
              expect(s.acc.seen[k]).toBe(stampHash(p, 7000 + (va - s.readBase) / PAGE));
            } else if (kind === DEVICE_WRITE) {
              expect(s.acc.seen[k]).toBe(0);
            }
          }
          for (let i = 0; i < s.writes; i++)
            expect(p.readPageHash(s.writeBase + i * PAGE)).toBe(stampHash(p, 20_000 + i));
          for (let i = 0; i < s.atomics; i++)
            expect(p.readPageHash(s.atomicBase + i * PAGE)).toBe(stampHash(p, 30_000 + i));
        };
        expectData();
        // Atomics saw the CPU's contents the first time.
        for (let k = 0; k < n; k++)
          if (s.acc.kind[k] === DEVICE_ATOMIC)
            expect(s.acc.seen[k]).toBe(stampHash(p, 9000 + (s.acc.va[k] - s.atomicBase) / PAGE));
        // Again: everything is mirrored now, so every access hits in the loop.
        const again = sys.core.runDevice(dev, p.mm, s.acc, { verifyTranslations: false });
        expect(again.completed).toBe(n);
        expect(again.faults).toBe(0);
        expect(dev.stats.translationMisses).toBe(misses);
        expect(dev.stats.translationHits).toBe(2 * n);
        expect(dev.stats.accesses).toBe(2 * n);
      }
    });

    it("accesses to pages in device memory complete locally and see the same data", () => {
      const sys = makeSystem({ contentMode: "tag" });
      const p = sys.machine.createProcess();
      const s = mixedStream(p, n);
      const { dev } = addFake(sys.core, "dev0", TranslatingFakeDriver, { memoryPages: 512 });
      const end = s.readBase + 64 * PAGE;
      expect(sys.core.migrateToDevice(dev, p.mm, s.readBase, end).migrated).toBe(64);
      sys.core.deviceFault(dev, p.mm, end, s.base + (READ_PAGES + WRITE_PAGES + ATOMIC_PAGES) * PAGE, true);
      const r = sys.core.runDevice(dev, p.mm, s.acc);
      expect(r.completed).toBe(n);
      let local = 0;
      for (let k = 0; k < n; k++) if (s.acc.va[k] < end) local++;
      expect(dev.stats.localAccesses).toBe(local);
      expect(dev.stats.remoteAccesses).toBe(n - local);
      for (let k = 0; k < n; k++)
        if (s.acc.va[k] < end)
          expect(s.acc.seen[k]).toBe(stampHash(p, 7000 + (s.acc.va[k] - s.readBase) / PAGE));
    });

    it("a translate that throws on the hit path: what completed before it stays counted, the rest is cancelled", () => {
      const sys = makeSystem({ contentMode: "tag" });
      const p = sys.machine.createProcess();
      const s = mixedStream(p, n);
      const throwAfter = Math.floor(n * 0.6);
      const { dev } = addFake(sys.core, "dev0", ThrowingTranslatingFakeDriver as never, {
        throwIn: "translate",
        throwAfter,
      });
      // Everything mirrored first: every access hits until translate throws.
      const last = s.base + (READ_PAGES + WRITE_PAGES + ATOMIC_PAGES) * PAGE;
      sys.core.deviceFault(dev, p.mm, s.base, last, true);
      const r = sys.core.runDevice(dev, p.mm, s.acc);
      expect(r.deviceFailure).toBeInstanceOf(DriverError);
      expect(r.deviceFailure!.message).toMatch(/translate/);
      expect(r.completed).toBe(throwAfter);
      expect(r.cancelled).toBe(n - throwAfter);
      expect(dev.stats.accesses).toBe(throwAfter);
      expect(dev.stats.translationHits).toBe(throwAfter);
      expect(dev.stats.remoteAccesses).toBe(throwAfter);
      for (let k = 0; k < n; k++) expect(s.acc.done[k]).toBe(k < throwAfter ? 1 : 2);
      // The writes that completed reached memory; the cancelled ones did not.
      for (let k = 0; k < n; k++) {
        if (s.acc.kind[k] !== DEVICE_WRITE) continue;
        const i = (s.acc.va[k] - s.writeBase) / PAGE;
        expect(p.readPageHash(s.acc.va[k])).toBe(k < throwAfter ? stampHash(p, 20_000 + i) : 0);
      }
    });

    for (const [what, lie] of [
      ["a frame past the end of memory", 1 << 20],
      ["a fraction", 3.5],
      ["NaN", Number.NaN],
      ["a device frame the device does not have", -2 - 100_000],
    ] as const) {
      it(`a translate result naming ${what} fails the device (DRIVER_FRAME) at that access`, () => {
        const sys = makeSystem({ contentMode: "tag" });
        const p = sys.machine.createProcess();
        const s = mixedStream(p, n);
        const { dev, drv } = addFake(sys.core, "dev0", FrameLyingFakeDriver as never);
        const last = s.base + (READ_PAGES + WRITE_PAGES + ATOMIC_PAGES) * PAGE;
        sys.core.deviceFault(dev, p.mm, s.base, last, true);
        const at = n - 100;
        (drv as FrameLyingFakeDriver).lieAt = s.acc.va[at];
        (drv as FrameLyingFakeDriver).lie = lie;
        const firstUse = s.acc.va.subarray(0, n).indexOf(s.acc.va[at]);
        const r = sys.core.runDevice(dev, p.mm, s.acc);
        expect((r.deviceFailure as DriverError).code).toBe("DRIVER_FRAME");
        expect(r.deviceFailure!.message).toContain(hex(s.acc.va[at]));
        expect(r.deviceFailure!.message).toContain("names no frame");
        expect(r.completed).toBe(firstUse);
        expect(dev.stats.accesses).toBe(firstUse);
      });
    }

    it("a result naming no frame on the replay after a fault fails the device (DRIVER_FRAME) there too", () => {
      const sys = makeSystem({ contentMode: "tag" });
      const p = sys.machine.createProcess();
      const s = mixedStream(p, n);
      const { dev, drv } = addFake(sys.core, "dev0", FrameLyingFakeDriver as never);
      const liar = drv as FrameLyingFakeDriver;
      liar.lieAt = s.readBase + 7 * PAGE;
      liar.lie = 1 << 20;
      liar.lieOnReplay = true;
      const r = sys.core.runDevice(dev, p.mm, s.acc);
      expect((r.deviceFailure as DriverError).code).toBe("DRIVER_FRAME");
      expect(r.deviceFailure!.message).toContain(hex(liar.lieAt));
      expect(r.completed + r.cancelled).toBe(n);
      // Nothing completed on the lie: no access to that page is done.
      for (let k = 0; k < n; k++) if (s.acc.va[k] === liar.lieAt) expect(s.acc.done[k]).toBe(2);
      expect(dev.stats.accesses).toBe(r.completed);
    });

    it("strict checking catches a stale translation in the middle of the stream", () => {
      const sys = makeSystem({ contentMode: "tag" });
      const p = sys.machine.createProcess();
      const s = mixedStream(p, n);
      const { dev } = addFake(sys.core, "dev0", StaleTranslatingFakeDriver as never);
      expect(sys.core.runDevice(dev, p.mm, s.acc).completed).toBe(n);
      // A read page goes away; the broken driver keeps translating it.
      const gone = s.readBase + 100 * PAGE;
      p.mm.madvise(gone, PAGE, MADV_DONTNEED);
      const r = sys.core.runDevice(dev, p.mm, s.acc);
      expect((r.deviceFailure as DriverError).code).toBe("DRIVER_STALE");
      const firstUse = s.acc.va.subarray(0, n).indexOf(gone);
      expect(r.completed).toBe(firstUse);
    });

    it("a stream that grew between runs runs on its new arrays", () => {
      const sys = makeSystem({ contentMode: "tag" });
      const p = sys.machine.createProcess();
      const s = mixedStream(p, n);
      const { dev } = addFake(sys.core, "dev0", TranslatingFakeDriver);
      expect(sys.core.runDevice(dev, p.mm, s.acc).completed).toBe(n);
      const before = s.acc.va;
      const extra = s.acc.va.length - s.acc.count + 1;
      for (let k = 0; k < extra; k++) s.acc.read(s.readBase + (k % READ_PAGES) * PAGE);
      expect(s.acc.va).not.toBe(before);
      const r = sys.core.runDevice(dev, p.mm, s.acc);
      expect(r.completed).toBe(n + extra);
      for (let k = n; k < n + extra; k++)
        expect(s.acc.seen[k]).toBe(stampHash(p, 7000 + (s.acc.va[k] - s.readBase) / PAGE));
    });
  });
}

describe("compileBound", () => {
  function sum(a: number, b: number, scale: number): number {
    return (a + b) * scale;
  }
  it("gives each copy its own constants for the named parameters and ignores what is passed for them", () => {
    const bind = compileBound(sum, ["scale"]);
    const double = bind([2]);
    const triple = bind([3]);
    expect(double(1, 2, 100)).toBe(6);
    expect(triple(1, 2, 100)).toBe(9);
    expect(double).not.toBe(triple);
  });
  it("refuses a name that is not a parameter, and a wrong number of values", () => {
    expect(() => compileBound(sum, ["scales"])).toThrow(/sum has no parameter 'scales'/);
    expect(() => compileBound(sum, ["scale"])([1, 2])).toThrow(/1 values expected, got 2/);
  });
});
