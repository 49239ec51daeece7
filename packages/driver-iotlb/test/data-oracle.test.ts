import {
  cpuOpSteps,
  cpuTouchSteps,
  DEVICE_ATOMIC,
  DEVICE_READ,
  DEVICE_WRITE,
  DeviceAccesses,
  type DeviceRunResult,
  Scheduler,
} from "@hmmkit/core";
import { HPAGE_PMD_SIZE, MADV_DONTNEED, stampToken } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { addIotlb, expectCoherent, makeSystem, mmapHuge, mmapPrivate, PAGE, prng } from "./helpers.js";

const SEED = 0x10719;
const ROUNDS = 24;

/** `n` distinct indices below `max` not in `taken` (which they join). */
function pick(rand: () => number, n: number, max: number, taken: Set<number>): number[] {
  const out: number[] = [];
  while (out.length < n) {
    const i = Math.floor(rand() * max);
    if (taken.has(i)) continue;
    taken.add(i);
    out.push(i);
  }
  return out;
}

describe("every iotlb device read equals the shadow of the writes", () => {
  it.each(["bytes", "tag"] as const)(
    "CPU writes, MADV_DONTNEED and device reads, writes and atomics interleaved by a seeded scheduler, and a fork (%s content)",
    (contentMode) => {
      const sys = makeSystem({ contentMode });
      const p = sys.machine.createProcess();
      // 64 base pages and one THP: the pages the workload touches.
      const small = mmapPrivate(p, 64 * PAGE);
      const huge = mmapHuge(p, 1);
      const pages: number[] = [];
      for (let i = 0; i < 64; i++) pages.push(small + i * PAGE);
      for (let i = 0; i < 512; i += 8) pages.push(huge + i * PAGE);
      p.writeStamp(huge, HPAGE_PMD_SIZE, 3); // THP on first touch
      const inHuge = (va: number) => va >= huge && va < huge + HPAGE_PMD_SIZE;
      const shadow = new Map<number, number>(pages.map((va) => [va, inHuge(va) ? stampToken(3) : 0]));
      const { dev } = addIotlb(sys.core, { tlbEntries: 16, tlbWays: 2, faultWindow: 4 });
      const rand = prng(SEED);
      let stamp = 1;
      let checkedReads = 0;
      /** Fork: the device reads the child's copy, the child's writes stay the child's. */
      const forkRound = (round: number): number => {
        const child = p.fork();
        const acc = new DeviceAccesses();
        for (const va of pages) acc.read(va);
        const cs = stamp++;
        child.writeStamp(pages[0], PAGE, cs);
        sys.core.runDevice(dev, child.mm, acc);
        for (let k = 0; k < pages.length; k++)
          expect(acc.seen[k], `fork in round ${round}: child page ${k}`).toBe(
            k === 0 ? stampToken(cs) : shadow.get(pages[k]),
          );
        expectCoherent(sys.core, dev);
        child.exit();
        return pages.length;
      };
      for (let round = 0; round < ROUNDS; round++) {
        const taken = new Set<number>();
        const devPages = pick(rand, 24, pages.length, taken);
        const cpuPages = pick(rand, 6, pages.length, taken);
        const zapPage = pick(rand, 1, pages.length, taken)[0];
        const acc = new DeviceAccesses();
        const expected: number[] = [];
        for (const i of devPages) {
          const va = pages[i];
          const r = rand();
          const kind = r < 0.4 ? DEVICE_READ : r < 0.8 ? DEVICE_WRITE : DEVICE_ATOMIC;
          const s = stamp++;
          acc.push(va, kind, s);
          expected.push(shadow.get(va)!);
          if (kind !== DEVICE_READ) shadow.set(va, stampToken(s));
        }
        const sched = new Scheduler(SEED + round);
        sched.spawn("device", sys.core.runDeviceSteps(dev, p.mm, acc, { wave: 8 }));
        for (const i of cpuPages) {
          const s = stamp++;
          sched.spawn(`cpu${i}`, cpuTouchSteps(p, pages[i], PAGE, true, s));
          shadow.set(pages[i], stampToken(s));
        }
        sched.spawn(
          "zap",
          cpuOpSteps("madvise", () => p.mm.madvise(pages[zapPage], PAGE, MADV_DONTNEED)),
        );
        shadow.set(pages[zapPage], 0);
        const results = sched.run();
        for (const [name, t] of results) expect(t.error, `${name} in round ${round}`).toBeUndefined();
        const run = results.get("device")!.value as DeviceRunResult;
        expect(run.completed, `round ${round}`).toBe(devPages.length);
        for (let k = 0; k < acc.count; k++) {
          if (acc.kind[k] === DEVICE_WRITE) continue;
          expect(acc.seen[k], `round ${round}: access ${k} at 0x${acc.va[k].toString(16)}`).toBe(expected[k]);
          checkedReads++;
        }
        expectCoherent(sys.core, dev);
        if (round === ROUNDS / 2) checkedReads += forkRound(round);
      }
      expect(checkedReads).toBeGreaterThan(ROUNDS * 8);
      // The CPU sees every write, the device's included.
      for (const va of pages) expect(p.readPageHash(va), `0x${va.toString(16)}`).toBe(shadow.get(va));
      expect(dev.stats.invalidations).toBeGreaterThan(0);
      expect(dev.stats.tlbFlushes).toBeGreaterThan(0);
      p.exit();
      expect(sys.machine.usedFrames).toBe(0);
    },
  );
});
