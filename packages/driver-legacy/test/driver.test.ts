import { createHmm, DEVICE_WRITE, DeviceAccesses, type HmmSystem, TRANSLATE_MISS } from "@hmmkit/core";
import { attachSharedMirror, HmmEtype, sharedMirrorOf } from "@hmmkit/legacy";
import {
  contentDigest,
  HPAGE_PMD_SIZE,
  MADV_HUGEPAGE,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  PROT_READ,
  PROT_WRITE,
  type Process,
  stampToken,
} from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { fakePlugin, TranslatingFakeDriver } from "../../core/test/fakes.js";
import { attachLegacy, LegacyDeviceDriver, legacyPlugin } from "../src/index.js";

const PAGE = 4096;
const PMD = HPAGE_PMD_SIZE;
const RW = PROT_READ | PROT_WRITE;
const MiB = 1024 * 1024;

function system(): HmmSystem & { proc: Process } {
  const sys = createHmm({ machine: { memoryBytes: 64 * MiB, zeroPage: true } });
  return { ...sys, proc: sys.machine.createProcess() };
}

/** 2 MiB of 4 KiB pages and a 2 MiB THP window, CPU-written with per-page stamps. */
function layout(proc: Process): { small: number; huge: number } {
  const small = proc.mm.mmap({ length: PMD, prot: RW, flags: MAP_PRIVATE | MAP_ANONYMOUS });
  const raw = proc.mm.mmap({ length: 2 * PMD, prot: RW, flags: MAP_PRIVATE | MAP_ANONYMOUS });
  const huge = raw % PMD === 0 ? raw : raw - (raw % PMD) + PMD;
  proc.mm.madvise(huge, PMD, MADV_HUGEPAGE);
  for (let i = 0; i < 512; i += 3) proc.writeStamp(small + i * PAGE, PAGE, 1000 + i);
  proc.writeStamp(huge, PMD, 77);
  return { small, huge };
}

/** A seeded stream of reads and writes over both regions. */
function stream(small: number, huge: number, seed: number, n = 3000): DeviceAccesses {
  const acc = new DeviceAccesses();
  let a = seed >>> 0;
  const rnd = () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  for (let i = 0; i < n; i++) {
    const base = rnd() < 0.5 ? small : huge;
    const va = base + Math.floor(rnd() * 512) * PAGE;
    if (rnd() < 0.3) acc.write(va, 5000 + i);
    else acc.read(va);
  }
  return acc;
}

describe("the legacy driver", () => {
  it("runs device accesses through its own table programmed from hmm_pt, with correct data", () => {
    const sys = system();
    const { proc, core } = sys;
    const { small, huge } = layout(proc);
    const { device, mirror: sm } = attachLegacy(core);
    const acc = new DeviceAccesses();
    acc.read(small);
    acc.read(huge + 100 * PAGE);
    acc.write(small + PAGE, 4242);
    const res = core.runDevice(device, proc, acc);
    expect(res.completed).toBe(3);
    expect(res.cancelled).toBe(0);
    expect(acc.seen[0]).toBe(stampToken(1000));
    expect(acc.seen[1]).toBe(stampToken(77));
    expect(proc.readPageHash(small + PAGE)).toBe(stampToken(4242));
    // The huge PMD was mirrored whole: all 512 pages translate without another fault.
    const drv = device.driver as unknown as { translate(m: number, v: number, w: boolean): number };
    for (let i = 0; i < 512; i += 37)
      expect(drv.translate(proc.mm.id, huge + i * PAGE, false)).not.toBe(TRANSLATE_MISS);
    const st = sm.stats();
    expect(st.mirrorFaults).toBeGreaterThan(0);
    expect(device.stats.mirrorBytes).toBe(st.sharedMirrorBytes + st.driverTableBytes);
    expect(st.sharedMirrorBytes).toBe(st.sharedMirrorLeafBytes + st.sharedMirrorDirectoryBytes);
  });

  it("gives the same final memory digest and the same reads as a per-PTE driver on the same stream", () => {
    const results: { digest: string; seen: number[] }[] = [];
    for (const kind of ["per-pte", "legacy"]) {
      const sys = system();
      const { proc, core } = sys;
      const { small, huge } = layout(proc);
      const dev =
        kind === "legacy"
          ? attachLegacy(core).device
          : core.addDevice(fakePlugin(TranslatingFakeDriver, "translating-fake"), {
              name: "ref0",
              memoryPages: 256,
            });
      const acc = stream(small, huge, 12345);
      const res = core.runDevice(dev, proc, acc, { wave: 97 });
      expect(res.cancelled).toBe(0);
      // CPU churn in between: unmap a piece, write-protect another, then run again.
      proc.mm.munmap(small + 64 * PAGE, 16 * PAGE);
      proc.mm.mprotect(small + 128 * PAGE, 64 * PAGE, PROT_READ);
      const acc2 = new DeviceAccesses();
      for (let i = 0; i < 512; i += 5) if (i < 64 || i >= 80) acc2.read(small + i * PAGE);
      for (let i = 200; i < 260; i++) acc2.write(small + i * PAGE, 9000 + i);
      for (let i = 0; i < 512; i += 7) acc2.push(huge + i * PAGE, DEVICE_WRITE, 7000 + i);
      const res2 = core.runDevice(dev, proc, acc2);
      expect(res2.cancelled).toBe(0);
      results.push({
        digest: contentDigest(proc.mm),
        seen: [...acc.seen.subarray(0, acc.count), ...acc2.seen.subarray(0, acc2.count)],
      });
    }
    expect(results[1].digest).toBe(results[0].digest);
    expect(results[1].seen).toEqual(results[0].seen);
  });

  it("drops its table on HMM_MUNMAP and write-protects it on HMM_WRITE_PROTECT, counting tlbFlushes and pagesDropped", () => {
    const sys = system();
    const { proc, core } = sys;
    const { small } = layout(proc);
    const { device, mirror: sm } = attachLegacy(core);
    const m = sm.register(proc.mm);
    expect(m.fault(small, small + 32 * PAGE, true)).toBe(0);
    const drv = sm.driver as LegacyDeviceDriver;
    expect(drv.translate(proc.mm.id, small, true)).not.toBe(TRANSLATE_MISS);
    proc.mm.mprotect(small, 16 * PAGE, PROT_READ);
    expect(drv.translate(proc.mm.id, small, true)).toBe(TRANSLATE_MISS);
    expect(drv.translate(proc.mm.id, small, false)).not.toBe(TRANSLATE_MISS);
    proc.mm.munmap(small + 16 * PAGE, 16 * PAGE);
    expect(drv.translate(proc.mm.id, small + 16 * PAGE, false)).toBe(TRANSLATE_MISS);
    expect(device.stats.tlbFlushes).toBe(2);
    expect(device.stats.pagesDropped).toBe(16);
  });

  it("migrates to its memory through hmm_pt and brings pages home on a CPU fault with their data", () => {
    const sys = system();
    const { proc, core } = sys;
    const { small } = layout(proc);
    const { device, mirror: sm } = attachLegacy(core);
    core.migrateToDevice(device, proc, small, small + 64 * PAGE);
    const acc = new DeviceAccesses();
    for (let i = 0; i < 64; i += 3) acc.read(small + i * PAGE);
    acc.write(small + 2 * PAGE, 31337);
    const res = core.runDevice(device, proc, acc);
    expect(res.completed).toBe(acc.count);
    expect(device.stats.localAccesses).toBe(acc.count);
    expect(acc.seen[0]).toBe(stampToken(1000));
    expect(proc.readPageHash(small + 3 * PAGE)).toBe(stampToken(1003));
    expect(proc.readPageHash(small + 2 * PAGE)).toBe(stampToken(31337));
    expect(sm.stats().copyFromDeviceViaHmmPt).toBe(2);
  });

  it("is built through dependency injection with the device context and its SharedMirror", () => {
    const sys = system();
    const { device, mirror } = attachSharedMirror(sys.core, legacyPlugin, { name: "l0" });
    expect(device.driver).toBeDefined();
    expect(mirror.driver).toBeInstanceOf(LegacyDeviceDriver);
    expect(sharedMirrorOf(device)).toBe(mirror);
  });

  it("a device fault event programs only what HMM filled (HMM_DEVICE_WFAULT marks written pages dirty)", () => {
    const sys = system();
    const { proc, core } = sys;
    const { small } = layout(proc);
    const { mirror: sm } = attachLegacy(core);
    const m = sm.register(proc.mm);
    expect(m.fault(small, small + 4 * PAGE, true)).toBe(0);
    const pos = m.pt.entryPos(small);
    expect(m.pt.lo[pos] & 0x20).toBeTruthy();
    expect(HmmEtype.HMM_DEVICE_WFAULT).toBe(5);
  });
});

describe("the legacy driver and fork", () => {
  it("a device write to its own pages made read-only by fork brings them home and breaks COW; the child keeps the old data", () => {
    const sys = system();
    const { proc, core } = sys;
    const { small } = layout(proc);
    const { device } = attachLegacy(core);
    core.migrateToDevice(device, proc, small, small + 8 * PAGE);
    const child = proc.fork();
    const acc = new DeviceAccesses();
    for (let i = 0; i < 8; i++) acc.write(small + i * PAGE, 600 + i);
    const res = core.runDevice(device, proc, acc);
    expect(res.cancelled).toBe(0);
    expect(proc.readPageHash(small + 3 * PAGE)).toBe(stampToken(603));
    expect(child.readPageHash(small + 3 * PAGE)).toBe(stampToken(1003));
  });
});
