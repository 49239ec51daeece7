import { HPAGE_PMD_SIZE, MADV_DONTNEED, PROT_READ, ZERO_PFN } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import {
  HMM_PFN_VALID,
  HMM_PFN_WRITE,
  HMM_PFN_ZERO,
  HmmError,
  hmmPfnToMapOrder,
  MmuNotifyEvent,
} from "../src/index.js";
import {
  ArrayFakeDriver,
  DualFormFakeDriver,
  PAGE,
  PteOnlyFakeDriver,
  type RecordingFakeDriver,
} from "./fakes.js";
import {
  addFake,
  cpuEntry,
  expectBytes,
  expectCoherent,
  expectErrno,
  MiB,
  makeSystem,
  mmapHuge,
  mmapPrivate,
  randomBytes,
  reportedPages,
} from "./helpers.js";

function thpSystem() {
  const sys = makeSystem({ thp: "madvise" });
  const p = sys.machine.createProcess();
  return { ...sys, p };
}

describe("huge PMDs reach the driver once per PMD", () => {
  it("a MADV_HUGEPAGE 2 MiB-aligned range reaches mirrorPmd exactly once per PMD with the THP's frames", () => {
    const { core, p } = thpSystem();
    const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
    const base = mmapHuge(p, 2);
    const data = randomBytes(2 * PAGE, 21);
    p.write(base, data.subarray(0, PAGE));
    p.write(base + HPAGE_PMD_SIZE, data.subarray(PAGE));
    expect(cpuEntry(p.mm, base)!.huge).toBe(true);
    expect(cpuEntry(p.mm, base + HPAGE_PMD_SIZE)!.huge).toBe(true);
    const r = core.deviceFault(dev, p, base, base + 2 * HPAGE_PMD_SIZE, false);
    expect(r.pages).toBe(1024);
    expect(drv.mirrorCalls.map((c) => [c.cb, c.va])).toEqual([
      ["mirrorPmd", base],
      ["mirrorPmd", base + HPAGE_PMD_SIZE],
    ]);
    for (const c of drv.mirrorCalls) {
      expect(c.pfn).toBe(cpuEntry(p.mm, c.va)!.pfn);
      expect(c.pfn % 512).toBe(0);
      expect(c.flags & (HMM_PFN_VALID | HMM_PFN_WRITE)).toBe(HMM_PFN_VALID | HMM_PFN_WRITE);
      expect(hmmPfnToMapOrder(c.flags)).toBe(9);
    }
    expectBytes(drv.deviceRead(p.mm.id, base, PAGE), data.subarray(0, PAGE));
    expectBytes(drv.deviceRead(p.mm.id, base + HPAGE_PMD_SIZE, PAGE), data.subarray(PAGE));
    expect(dev.stats.pmdCallbacks).toBe(2);
    expect(dev.stats.pteCallbacks).toBe(0);
  });

  it("a fault covering only part of a PMD still reports the whole PMD, once", () => {
    const { core, p } = thpSystem();
    const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
    const base = mmapHuge(p, 2);
    // Never touched: a write fault on 2 pages in the middle allocates the THP, reported whole.
    const r = core.deviceFault(dev, p, base + 5 * PAGE, base + 7 * PAGE, true);
    expect(r.pages).toBe(512);
    expect(drv.mirrorCalls.map((c) => [c.cb, c.va])).toEqual([["mirrorPmd", base]]);
    expect(drv.mirrorCalls[0].pfn).toBe(cpuEntry(p.mm, base)!.pfn);
    expect(drv.mirrored(p.mm.id)).toBe(512);
    // A read fault straddling the PMD boundary: the huge zero page of PMD 1 and THP of PMD 0.
    drv.clearRecords();
    const r2 = core.deviceFault(dev, p, base + HPAGE_PMD_SIZE - PAGE, base + HPAGE_PMD_SIZE + PAGE, false);
    expect(r2.pages).toBe(1024);
    expect(drv.mirrorCalls.map((c) => [c.cb, c.va])).toEqual([
      ["mirrorPmd", base],
      ["mirrorPmd", base + HPAGE_PMD_SIZE],
    ]);
    const zero = drv.mirrorCalls[1];
    expect(zero.pfn).toBe(ZERO_PFN);
    expect(zero.flags & (HMM_PFN_ZERO | HMM_PFN_WRITE)).toBe(HMM_PFN_ZERO);
    expect(hmmPfnToMapOrder(zero.flags)).toBe(9);
    expect(expectCoherent(core, dev)).toBe(1024);
  });

  it("a driver without mirrorPmd gets 512 per-PTE calls, in order, each with map order 9", () => {
    const { core, p } = thpSystem();
    const { dev, drv } = addFake(core, "gpu0", PteOnlyFakeDriver);
    expect(dev.callbackMode).toBe("per-pte");
    expect(dev.usesPmdCallback).toBe(false);
    const base = mmapHuge(p, 1);
    p.write(base, new Uint8Array([1]));
    const head = cpuEntry(p.mm, base)!.pfn;
    core.deviceFault(dev, p, base + 100 * PAGE, base + 101 * PAGE, false);
    expect(drv.mirrorCalls).toHaveLength(512);
    drv.mirrorCalls.forEach((c, i) => {
      expect(c.cb).toBe("mirrorPte");
      expect(c.va).toBe(base + i * PAGE);
      expect(c.pfn).toBe(head + i);
      expect(hmmPfnToMapOrder(c.flags)).toBe(9);
    });
  });

  it("pmdCallback: false sends a driver that has mirrorPmd 512 per-PTE calls instead", () => {
    const { core, p } = thpSystem();
    const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0", undefined, { pmdCallback: false });
    expect(dev.usesPmdCallback).toBe(false);
    const base = mmapHuge(p, 1);
    p.write(base, new Uint8Array([1]));
    core.deviceFault(dev, p, base, base + PAGE, false);
    expect(drv.mirrorCalls.every((c) => c.cb === "mirrorPte")).toBe(true);
    expect(drv.mirrorCalls).toHaveLength(512);
  });

  it("the array form gets one call per leaf table and one per huge PMD", () => {
    const { core, p } = thpSystem();
    const { dev, drv } = addFake(core, "gpu0", ArrayFakeDriver);
    expect(dev.callbackMode).toBe("array");
    const small = mmapPrivate(p, 4 * MiB);
    expect(small % HPAGE_PMD_SIZE).toBe(0);
    const s0 = small + 2 * MiB - 16 * PAGE;
    const data = randomBytes(32 * PAGE, 22);
    p.write(s0, data);
    core.deviceFault(dev, p, s0, s0 + 32 * PAGE, false);
    expect(drv.mirrorCalls.map((c) => [c.va, c.count])).toEqual([
      [s0, 16],
      [small + 2 * MiB, 16],
    ]);
    for (const pg of reportedPages(drv.mirrorCalls)) expect(pg.pfn).toBe(cpuEntry(p.mm, pg.va)!.pfn);
    expectBytes(drv.deviceRead(p.mm.id, s0, 32 * PAGE), data);

    drv.clearRecords();
    const base = mmapHuge(p, 1);
    p.write(base, new Uint8Array([7]));
    core.deviceFault(dev, p, base + PAGE, base + 3 * PAGE, false);
    expect(drv.mirrorCalls).toHaveLength(1);
    const c = drv.mirrorCalls[0];
    expect([c.cb, c.va, c.count]).toEqual(["mirrorPtes", base, 512]);
    const head = cpuEntry(p.mm, base)!.pfn;
    expect(c.pfns).toEqual(Array.from({ length: 512 }, (_, i) => head + i));
    expect(c.flagList.every((f) => hmmPfnToMapOrder(f) === 9 && f === c.flagList[0])).toBe(true);
    expect(dev.stats.arrayCallbacks).toBe(3);
  });
});

describe("callback form selection", () => {
  it("Device.callbackMode reports per-PTE when the driver has it and the array form otherwise", () => {
    const { core } = makeSystem();
    expect(addFake(core, "a").dev.callbackMode).toBe("per-pte");
    expect(addFake(core, "a-huge").dev.usesPmdCallback).toBe(true);
    expect(addFake(core, "b", PteOnlyFakeDriver).dev.callbackMode).toBe("per-pte");
    expect(addFake(core, "c", ArrayFakeDriver).dev.callbackMode).toBe("array");
    expect(addFake(core, "d", DualFormFakeDriver).dev.callbackMode).toBe("per-pte");
  });

  it('callbackMode: "array" in the device config forces the array form on a driver that has both', () => {
    const { core, machine } = makeSystem();
    const { dev, drv } = addFake(core, "gpu0", DualFormFakeDriver, { callbackMode: "array" });
    expect(dev.callbackMode).toBe("array");
    const p = machine.createProcess();
    const a = mmapPrivate(p, 8 * PAGE);
    p.write(a, randomBytes(8 * PAGE, 1));
    core.deviceFault(dev, p, a, a + 8 * PAGE, false);
    expect(drv.mirrorCalls.map((c) => [c.cb, c.count])).toEqual([["mirrorPtes", 8]]);
    const { dev: dev2, drv: drv2 } = addFake(core, "gpu1", DualFormFakeDriver, { callbackMode: "per-pte" });
    expect(dev2.callbackMode).toBe("per-pte");
    core.deviceFault(dev2, p, a, a + 8 * PAGE, false);
    expect(drv2.mirrorCalls.map((c) => c.cb)).toEqual(Array(8).fill("mirrorPte"));
  });

  it("a callbackMode the driver cannot serve, or one that does not exist, is a clear configuration error", () => {
    const { core, machine } = makeSystem();
    const e1 = expectErrno(
      () => addFake(core, "gpu0", ArrayFakeDriver, { callbackMode: "per-pte" }),
      "EINVAL",
    );
    expect(e1.code).toBe("BAD_CONFIG");
    expect(e1.message).toMatch(/gpu0.*per-pte.*recording-fake/);
    const e2 = expectErrno(
      () => addFake(core, "gpu0", PteOnlyFakeDriver, { callbackMode: "array" }),
      "EINVAL",
    );
    expect(e2.message).toMatch(/gpu0.*array/);
    const e3 = expectErrno(
      () => addFake(core, "gpu0", DualFormFakeDriver, { callbackMode: "per-PTE" }),
      "EINVAL",
    );
    expect(e3).toBeInstanceOf(HmmError);
    expect(e3.message).toMatch(/callbackMode.*per-PTE/);
    expect(e3.message).toMatch(/auto.*per-pte.*array/);
    // Nothing of the failed attempts stays registered: the name is free, the device works.
    expect(core.devices.size).toBe(0);
    const { dev, drv } = addFake(core, "gpu0");
    const p = machine.createProcess();
    const a = mmapPrivate(p, PAGE);
    core.deviceFault(dev, p, a, a + PAGE, true);
    expect(drv.mirrored(p.mm.id)).toBe(1);
  });
});

describe("the order of invalidations around a THP split (as contract.ts documents it)", () => {
  const CLEAR = MmuNotifyEvent.CLEAR;
  for (const op of ["dontneed", "migrate", "mprotect", "munmap"] as const) {
    it(`${op} of part of a THP: ${op === "dontneed" || op === "migrate" ? "the partial range first, then the whole-PMD CLEAR" : "the whole-PMD CLEAR first, then the partial range"}`, () => {
      const { core, p } = thpSystem();
      const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
      const base = mmapHuge(p, 1);
      p.write(base, randomBytes(PAGE, 29));
      core.deviceFault(dev, p, base, base + PAGE, false);
      expect(cpuEntry(p.mm, base)!.huge).toBe(true);
      drv.clearRecords();
      const s = base + 16 * PAGE;
      const e = base + 32 * PAGE;
      const run = {
        dontneed: () => p.mm.madvise(s, e - s, MADV_DONTNEED),
        migrate: () => core.migrateToDevice(dev, p, s, e),
        mprotect: () => p.mm.mprotect(s, e - s, PROT_READ),
        munmap: () => p.mm.munmap(s, e - s),
      };
      const events = {
        dontneed: CLEAR,
        migrate: MmuNotifyEvent.MIGRATE,
        mprotect: MmuNotifyEvent.PROTECTION_VMA,
        munmap: MmuNotifyEvent.UNMAP,
      };
      run[op]();
      const event = events[op];
      const seen = drv.invalidations.map((v) => [v.event, v.start - base, v.end - base]);
      const partial = [event, 16 * PAGE, 32 * PAGE];
      const whole = [CLEAR, 0, HPAGE_PMD_SIZE];
      const i = seen.findIndex((v) => v.join() === partial.join());
      const j = seen.findIndex((v) => v.join() === whole.join());
      expect(i).toBeGreaterThanOrEqual(0);
      expect(j).toBeGreaterThanOrEqual(0);
      if (op === "dontneed" || op === "migrate") expect(i).toBeLessThan(j);
      else expect(j).toBeLessThan(i);
    });
  }
});
