import {
  ENTRY_DEVICE_PRIVATE,
  ENTRY_DIRTY,
  ENTRY_PRESENT,
  ENTRY_WRITE,
  ENTRY_ZERO,
  HPAGE_PMD_SIZE,
  hex,
  MADV_HUGEPAGE,
  PROT_NONE,
  PROT_READ,
  ZERO_PFN,
} from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import {
  HMM_PFN_DEVICE_PRIVATE,
  HMM_PFN_DIRTY,
  HMM_PFN_ORDER_SHIFT,
  HMM_PFN_VALID,
  HMM_PFN_WRITE,
  HMM_PFN_ZERO,
  hmmPfnToMapOrder,
} from "../src/index.js";
import { PAGE, type RecordingFakeDriver } from "./fakes.js";
import {
  addFake,
  type CpuEntry,
  cpuEntry,
  expectBytes,
  expectCoherent,
  expectErrno,
  expectNoLeaks,
  expectZeros,
  MiB,
  makeSystem,
  mmapPrivate,
  RW,
  randomBytes,
  reportedPages,
} from "./helpers.js";

/** The HMM flags a CPU entry must be reported with (hmm_vma_handle_pte / hmm_vma_handle_pmd). */
function flagsFromCpu(e: CpuEntry): number {
  if (e.kind === ENTRY_DEVICE_PRIVATE)
    return HMM_PFN_VALID | HMM_PFN_DEVICE_PRIVATE | (e.flags & ENTRY_WRITE ? HMM_PFN_WRITE : 0);
  let f = HMM_PFN_VALID;
  if (e.flags & ENTRY_WRITE) f |= HMM_PFN_WRITE;
  if (e.flags & ENTRY_DIRTY) f |= HMM_PFN_DIRTY;
  if (e.flags & ENTRY_ZERO) f |= HMM_PFN_ZERO;
  if (e.huge) f |= 9 << HMM_PFN_ORDER_SHIFT;
  return f;
}

/**
 * Mixed memory, 528 pages in three PMD-sized chunks:
 *   A (8 pages, end of PMD 0): 0 written, 1 on another device, 2 on this device, 3-4 read (zero
 *     page), 5-7 never touched;
 *   T (PMD 1): a THP (MADV_HUGEPAGE, written);
 *   D (8 pages, start of PMD 2): 0-3 written before fork (shared with the child), 4-7 untouched.
 */
function mixedMemory() {
  const sys = makeSystem({ zeroPage: true });
  const { core, machine } = sys;
  const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
  const { dev: other, drv: otherDrv } = addFake<RecordingFakeDriver>(core, "gpu1");
  const p = machine.createProcess();
  const M = mmapPrivate(p, 6 * MiB);
  expect(M % HPAGE_PMD_SIZE).toBe(0);
  const A = M + 2 * MiB - 8 * PAGE;
  const T = M + 2 * MiB;
  const D = M + 4 * MiB;
  const dData = randomBytes(4 * PAGE, 11);
  p.write(D, dData);
  const child = p.fork();
  const aData = randomBytes(3 * PAGE, 12);
  p.write(A, aData);
  expectZeros(p.read(A + 3 * PAGE, 2 * PAGE));
  p.mm.madvise(T, 2 * MiB, MADV_HUGEPAGE);
  const tData = randomBytes(PAGE, 13);
  p.write(T, tData);
  expect(core.migrateToDevice(other, p, A + PAGE, A + 2 * PAGE).migrated).toBe(1);
  expect(core.migrateToDevice(dev, p, A + 2 * PAGE, A + 3 * PAGE).migrated).toBe(1);
  drv.clearRecords();
  otherDrv.clearRecords();
  return { sys, core, machine, dev, drv, other, otherDrv, p, child, A, T, D, aData, dData, tData };
}

describe("per-PTE details of a device fault", () => {
  it("a read fault over mixed memory reports every page with the frame and flags of its CPU entry", () => {
    const s = mixedMemory();
    const { core, dev, drv, p, child, A, T, D } = s;
    const start = A;
    const end = D + 8 * PAGE;
    const r = core.deviceFault(dev, p, start, end, false);
    expect(r.pages).toBe((end - start) / PAGE);

    const pages = reportedPages(drv.mirrorCalls);
    expect(pages.map((x) => x.va)).toEqual(Array.from({ length: r.pages }, (_, i) => start + i * PAGE));
    const snap = core.snapshot(dev, p, start, end);
    pages.forEach((pg, i) => {
      const e = cpuEntry(p.mm, pg.va)!;
      expect(e, `0x${pg.va.toString(16)}`).not.toBeNull();
      expect(pg.pfn, `pfn at page ${i}`).toBe(e.pfn);
      expect(pg.flags, `flags at page ${i}`).toBe(flagsFromCpu(e));
      expect(pg.pfn).toBe(snap.pfns[i]);
      expect(pg.flags).toBe(snap.flags[i]);
    });

    const at = (va: number) => pages[(va - start) / PAGE];
    // A0: a written private page, writable and dirty.
    expect(at(A).flags).toBe(HMM_PFN_VALID | HMM_PFN_WRITE | HMM_PFN_DIRTY);
    // A1 lived on the other device: the fault brought it home through that device's driver.
    expect(s.otherDrv.copiesFromDevice.map((c) => c.va)).toEqual([A + PAGE]);
    expect(cpuEntry(p.mm, A + PAGE)!.kind).toBe(ENTRY_PRESENT);
    expect(at(A + PAGE).flags & HMM_PFN_DEVICE_PRIVATE).toBe(0);
    // A2 lives on this device: reported as its device frame, not faulted.
    expect(at(A + 2 * PAGE).flags).toBe(HMM_PFN_VALID | HMM_PFN_WRITE | HMM_PFN_DEVICE_PRIVATE);
    expect(at(A + 2 * PAGE).pfn).toBe(cpuEntry(p.mm, A + 2 * PAGE)!.pfn);
    expect(s.drv.copiesFromDevice).toEqual([]);
    // A3-7 and D4-7: the shared zero page, read-only.
    for (const va of [3, 4, 5, 6, 7].map((i) => A + i * PAGE).concat([4, 5, 6, 7].map((i) => D + i * PAGE))) {
      expect(at(va).pfn).toBe(ZERO_PFN);
      expect(at(va).flags).toBe(HMM_PFN_VALID | HMM_PFN_ZERO);
    }
    // T: one whole-PMD callback with map order 9, frames of the THP in order.
    const pmd = drv.mirrorCalls.filter((c) => c.cb === "mirrorPmd");
    expect(pmd).toHaveLength(1);
    expect(pmd[0].va).toBe(T);
    expect(hmmPfnToMapOrder(pmd[0].flags)).toBe(9);
    expect(pmd[0].pfn % 512).toBe(0);
    expect(pmd[0].flags & HMM_PFN_WRITE).not.toBe(0);
    // D0-3: shared with the child after fork: same frames as the child's, not writable.
    for (let i = 0; i < 4; i++) {
      expect(at(D + i * PAGE).pfn).toBe(cpuEntry(child.mm, D + i * PAGE)!.pfn);
      expect(at(D + i * PAGE).flags & HMM_PFN_WRITE).toBe(0);
    }
    // The frames reported hold what the CPU wrote (read through the device's own mirror).
    expectBytes(drv.deviceRead(p.mm.id, A, 3 * PAGE), s.aData);
    expectBytes(drv.deviceRead(p.mm.id, T, PAGE), s.tData);
    expectBytes(drv.deviceRead(p.mm.id, D, 4 * PAGE), s.dData);
    expectZeros(drv.deviceRead(p.mm.id, A + 3 * PAGE, 5 * PAGE));
    expect(expectCoherent(core, dev)).toBe(r.pages);
  });

  it("a write fault over mixed memory makes every page writable, breaking COW and replacing zero pages", () => {
    const s = mixedMemory();
    const { core, dev, drv, p, child, A, T, D } = s;
    const start = A;
    const end = D + 8 * PAGE;
    core.deviceFault(dev, p, start, end, false);
    const before = reportedPages(drv.mirrorCalls);
    drv.clearRecords();

    const r = core.deviceFault(dev, p, start, end, true);
    expect(r.pages).toBe((end - start) / PAGE);
    const pages = reportedPages(drv.mirrorCalls);
    expect(pages.map((x) => x.va)).toEqual(Array.from({ length: r.pages }, (_, i) => start + i * PAGE));
    const snap = core.snapshot(dev, p, start, end);
    pages.forEach((pg, i) => {
      const e = cpuEntry(p.mm, pg.va)!;
      expect(pg.flags & HMM_PFN_WRITE, `page ${i} writable`).toBe(HMM_PFN_WRITE);
      expect(e.flags & ENTRY_WRITE, `CPU entry ${i} writable`).toBe(ENTRY_WRITE);
      expect(pg.pfn).toBe(e.pfn);
      expect(pg.flags).toBe(flagsFromCpu(e));
      expect(pg.flags).toBe(snap.flags[i]);
      expect(pg.flags & HMM_PFN_ZERO).toBe(0);
    });
    const at = (va: number, list = pages) => list[(va - start) / PAGE];
    // Zero pages were replaced by fresh frames; the zero page itself was never reported writable.
    for (const i of [3, 4, 5, 6, 7]) expect(at(A + i * PAGE).pfn).not.toBe(ZERO_PFN);
    // The THP and this device's own page keep their frames.
    expect(at(T).pfn).toBe(at(T, before).pfn);
    expect(at(A + 2 * PAGE).pfn).toBe(at(A + 2 * PAGE, before).pfn);
    expect(at(A + 2 * PAGE).flags & HMM_PFN_DEVICE_PRIVATE).toBe(HMM_PFN_DEVICE_PRIVATE);
    // D0-3: COW broken in this process only: new frames, the child's keep its own and its data.
    for (let i = 0; i < 4; i++) {
      expect(at(D + i * PAGE).pfn).not.toBe(cpuEntry(child.mm, D + i * PAGE)!.pfn);
      expect(at(D + i * PAGE).pfn).not.toBe(at(D + i * PAGE, before).pfn);
    }
    // The COW breaks and zero-page replacements were announced before the frames changed.
    const cleared = new Set(drv.invalidations.filter((v) => v.mmId === p.mm.id).map((v) => v.start));
    for (const i of [0, 1, 2, 3]) expect(cleared.has(D + i * PAGE)).toBe(true);
    // A device write lands in the parent's new copies; the child still reads the old data.
    const w = randomBytes(4 * PAGE, 99);
    drv.deviceWrite(p.mm.id, D, w);
    expectBytes(p.read(D, 4 * PAGE), w);
    expectBytes(child.read(D, 4 * PAGE), s.dData);
    expectBytes(p.read(A, 3 * PAGE), s.aData);
    expect(expectCoherent(core, dev)).toBeGreaterThan(0);
    p.exit();
    child.exit();
    expectNoLeaks(s.sys, [dev, s.other]);
  });

  it("a read fault on a read-only page reports it readable but not writable", () => {
    const sys = makeSystem();
    const { core, machine } = sys;
    const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
    const p = machine.createProcess();
    const a = mmapPrivate(p, 4 * PAGE);
    const data = randomBytes(4 * PAGE, 3);
    p.write(a, data);
    p.mm.mprotect(a, 4 * PAGE, PROT_READ);
    core.deviceFault(dev, p, a, a + 4 * PAGE, false);
    const pages = reportedPages(drv.mirrorCalls);
    expect(pages).toHaveLength(4);
    for (const pg of pages) {
      expect(pg.flags & HMM_PFN_VALID).toBe(HMM_PFN_VALID);
      expect(pg.flags & HMM_PFN_WRITE).toBe(0);
      expect(pg.pfn).toBe(cpuEntry(p.mm, pg.va)!.pfn);
    }
    expectBytes(drv.deviceRead(p.mm.id, a, 4 * PAGE), data);
    expect(() => drv.deviceWrite(p.mm.id, a, new Uint8Array(1))).toThrow(/not mirrored writable/);
  });

  it("hmm-tests anon_read: pages never touched read as zeros and one CPU fault is run for the hole", () => {
    const sys = makeSystem();
    const { core, machine } = sys;
    const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
    const p = machine.createProcess();
    const n = 64;
    const a = mmapPrivate(p, n * PAGE);
    const data = randomBytes((n - 2) * PAGE, 4);
    p.write(a + 2 * PAGE, data);
    p.mm.mprotect(a, n * PAGE, PROT_READ);
    p.read(a + PAGE, 1); // page 1: the zero page; page 0 stays none
    const faultsBefore = machine.stats.faults;
    const r = core.deviceFault(dev, p, a, a + n * PAGE, false);
    expect(r.pages).toBe(n);
    expect(r.cpuFaults).toBe(1);
    expect(machine.stats.faults - faultsBefore).toBe(1);
    expectZeros(drv.deviceRead(p.mm.id, a, 2 * PAGE));
    expectBytes(drv.deviceRead(p.mm.id, a + 2 * PAGE, (n - 2) * PAGE), data);
  });

  it("hmm-tests anon_write: a write fault on never-touched memory lets the device write what the CPU then reads", () => {
    const sys = makeSystem();
    const { core, machine } = sys;
    const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
    const p = machine.createProcess();
    const n = 64;
    const a = mmapPrivate(p, n * PAGE);
    const r = core.deviceFault(dev, p, a, a + n * PAGE, true);
    expect(r).toEqual({ pages: n, cpuFaults: n, retries: 0, reportedReadOnly: 0 });
    const data = randomBytes(n * PAGE, 5);
    drv.deviceWrite(p.mm.id, a, data);
    expectBytes(p.read(a, n * PAGE), data);
  });
});

describe("PROT_NONE, holes and read-only mappings", () => {
  it("hmm-tests anon_read_prot: a fault over PROT_NONE is EFAULT with no callback, no CPU fault and RSS unchanged", () => {
    const sys = makeSystem();
    const { core, machine } = sys;
    const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
    const p = machine.createProcess();
    const n = 16;
    const a = mmapPrivate(p, n * PAGE);
    const data = randomBytes(n * PAGE, 6);
    p.write(a, data);
    p.mm.mprotect(a, n * PAGE, PROT_NONE);
    const faults = machine.stats.faults;
    const rss = p.mm.rss;
    expectErrno(() => core.deviceFault(dev, p, a, a + n * PAGE, false), "EFAULT");
    expectErrno(() => core.deviceFault(dev, p, a, a + n * PAGE, true), "EFAULT");
    expect(drv.mirrorCalls).toEqual([]);
    expect(machine.stats.faults).toBe(faults);
    expect(p.mm.rss).toBe(rss);
    expect(dev.stats.pagesMirrored).toBe(0);
    expect(dev.stats.cpuFaultsForDevice).toBe(0);
    p.mm.mprotect(a, n * PAGE, PROT_READ);
    expectBytes(p.read(a, n * PAGE), data);
  });

  it("a fault that runs into PROT_NONE is EFAULT after faulting in the pages before it, and the chunk holding the error is not reported", () => {
    const sys = makeSystem();
    const { core, machine } = sys;
    const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
    const p = machine.createProcess();
    const n = 16;
    const a = mmapPrivate(p, 2 * n * PAGE);
    expect(Math.floor(a / HPAGE_PMD_SIZE)).toBe(Math.floor((a + 2 * n * PAGE - 1) / HPAGE_PMD_SIZE));
    p.mm.mprotect(a + n * PAGE, n * PAGE, PROT_NONE);
    // hmm_range_fault faults as it walks: the untouched accessible half is populated before the
    // walk reaches the PROT_NONE VMA and returns -EFAULT.
    expectErrno(() => core.deviceFault(dev, p, a, a + 2 * n * PAGE, true), "EFAULT");
    expect(p.mm.rss).toBe(n);
    for (let i = 0; i < n; i++) expect(cpuEntry(p.mm, a + i * PAGE)!.kind).toBe(ENTRY_PRESENT);
    expect(cpuEntry(p.mm, a + n * PAGE)).toBeNull();
    expect(dev.stats.cpuFaultsForDevice).toBe(n);
    // Both halves are in one PMD-sized chunk, and a chunk that met an error is not committed.
    expect(drv.mirrorCalls).toEqual([]);
    expect(dev.stats.pagesMirrored).toBe(0);
  });

  it("a fault across PMD-sized chunks that meets PROT_NONE keeps the chunks committed before the error", () => {
    const sys = makeSystem();
    const { core, machine } = sys;
    const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
    const p = machine.createProcess();
    const raw = mmapPrivate(p, 5 * MiB);
    const base = raw + ((HPAGE_PMD_SIZE - (raw % HPAGE_PMD_SIZE)) % HPAGE_PMD_SIZE);
    const bad = base + HPAGE_PMD_SIZE + 8 * PAGE;
    p.mm.mprotect(bad, 8 * PAGE, PROT_NONE);
    const e = expectErrno(() => core.deviceFault(dev, p, base, bad + 8 * PAGE, true), "EFAULT");
    expect(e.message).toContain(hex(bad));
    // The first chunk (a whole PMD) was committed: a driver faulting per chunk would hold it.
    expect(drv.mirrored(p.mm.id)).toBe(512);
    expect(dev.stats.pagesMirrored).toBe(512);
    expect(drv.entry(p.mm.id, base + 511 * PAGE)!.flags & HMM_PFN_WRITE).toBe(HMM_PFN_WRITE);
    expect(drv.entry(p.mm.id, base + HPAGE_PMD_SIZE)).toBeUndefined();
    // The 8 pages of the second chunk before the error were faulted in, not reported.
    expect(p.mm.rss).toBe(512 + 8);
    expect(cpuEntry(p.mm, bad - PAGE)!.kind).toBe(ENTRY_PRESENT);
    expect(cpuEntry(p.mm, bad)).toBeNull();
    expectCoherent(core, dev);
  });

  it("a fault over a hole in the address space is EFAULT; the page before the hole is faulted in, nothing is reported", () => {
    const sys = makeSystem();
    const { core, machine } = sys;
    const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
    const p = machine.createProcess();
    const a = mmapPrivate(p, 3 * PAGE);
    p.mm.munmap(a + PAGE, PAGE);
    const faults = machine.stats.faults;
    expectErrno(() => core.deviceFault(dev, p, a + PAGE, a + 2 * PAGE, true), "EFAULT");
    expect(machine.stats.faults).toBe(faults);
    expectErrno(() => core.deviceFault(dev, p, a, a + 3 * PAGE, true), "EFAULT");
    expect(drv.mirrorCalls).toEqual([]);
    expect(machine.stats.faults).toBe(faults + 1);
    expect(p.mm.rss).toBe(1);
    expect(cpuEntry(p.mm, a)!.kind).toBe(ENTRY_PRESENT);
    expect(cpuEntry(p.mm, a + 2 * PAGE)).toBeNull();
  });

  it("a write fault that runs into a read-only VMA is EPERM after faulting in the writable pages before it", () => {
    const sys = makeSystem();
    const { core, machine } = sys;
    const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
    const p = machine.createProcess();
    const n = 8;
    const a = mmapPrivate(p, 2 * n * PAGE);
    p.mm.mprotect(a + n * PAGE, n * PAGE, PROT_READ);
    expectErrno(() => core.deviceFault(dev, p, a, a + 2 * n * PAGE, true), "EPERM");
    expect(p.mm.rss).toBe(n);
    expect(cpuEntry(p.mm, a + (n - 1) * PAGE)!.flags & ENTRY_WRITE).toBe(ENTRY_WRITE);
    expect(cpuEntry(p.mm, a + n * PAGE)).toBeNull();
    expect(drv.mirrorCalls).toEqual([]);
    // A read fault over the same range succeeds.
    expect(core.deviceFault(dev, p, a, a + 2 * n * PAGE, false).pages).toBe(2 * n);
  });

  it("hmm-tests anon_write_prot: a write fault on a read-only VMA is EPERM until mprotect makes it writable", () => {
    const sys = makeSystem();
    const { core, machine } = sys;
    const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
    const p = machine.createProcess();
    const n = 16;
    const a = mmapPrivate(p, n * PAGE, PROT_READ);
    const r1 = core.deviceFault(dev, p, a, a + PAGE, false);
    expect(r1).toEqual({ pages: 1, cpuFaults: 1, retries: 0, reportedReadOnly: 0 });
    expect(drv.entry(p.mm.id, a)!.pfn).toBe(ZERO_PFN);
    drv.clearRecords();
    const faults = machine.stats.faults;
    expectErrno(() => core.deviceFault(dev, p, a, a + n * PAGE, true), "EPERM");
    expect(drv.mirrorCalls).toEqual([]);
    expect(machine.stats.faults).toBe(faults);
    expectZeros(p.read(a, n * PAGE));
    p.mm.mprotect(a, n * PAGE, RW);
    const r2 = core.deviceFault(dev, p, a, a + n * PAGE, true);
    expect(r2.pages).toBe(n);
    const data = randomBytes(n * PAGE, 7);
    drv.deviceWrite(p.mm.id, a, data);
    expectBytes(p.read(a, n * PAGE), data);
    expect(cpuEntry(p.mm, a)!.pfn).not.toBe(ZERO_PFN);
  });

  it("unaligned, empty and out-of-range fault ranges are EINVAL", () => {
    const { core, machine } = makeSystem();
    const { dev } = addFake(core, "gpu0");
    const p = machine.createProcess();
    const a = mmapPrivate(p, 4 * PAGE);
    expectErrno(() => core.deviceFault(dev, p, a + 1, a + PAGE, false), "EINVAL");
    expectErrno(() => core.deviceFault(dev, p, a, a, false), "EINVAL");
    expectErrno(() => core.deviceFault(dev, p, a + PAGE, a, false), "EINVAL");
    expectErrno(() => core.deviceFault(dev, p, 2 ** 48, 2 ** 48 + PAGE, false), "EINVAL");
  });
});

describe("this device's own pages that are not writable", () => {
  it("after mprotect(PROT_READ) of migrated pages a write fault reports them without WRITE instead of EPERM", () => {
    const sys = makeSystem();
    const { core, machine } = sys;
    const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
    const p = machine.createProcess();
    const n = 8;
    const a = mmapPrivate(p, n * PAGE);
    const data = randomBytes(n * PAGE, 41);
    p.write(a, data);
    expect(core.migrateToDevice(dev, p, a, a + n * PAGE).migrated).toBe(n);
    p.mm.mprotect(a, n * PAGE, PROT_READ);
    for (let i = 0; i < n; i++) {
      const e = cpuEntry(p.mm, a + i * PAGE)!;
      expect(e.kind).toBe(ENTRY_DEVICE_PRIVATE);
      expect(e.flags & ENTRY_WRITE).toBe(0);
    }
    const r = core.deviceFault(dev, p, a, a + n * PAGE, true);
    expect(r).toEqual({ pages: n, cpuFaults: 0, retries: 0, reportedReadOnly: n });
    for (let i = 0; i < n; i++)
      expect(drv.entry(p.mm.id, a + i * PAGE)!.flags & (HMM_PFN_VALID | HMM_PFN_WRITE)).toBe(HMM_PFN_VALID);
    expect(dev.memory.used).toBe(n);
    expectCoherent(core, dev);
    // A present read-only page in the same VMA still needs a write fault: EPERM.
    expect(core.migrateToRam(dev, p, a, a + PAGE).migrated).toBe(1);
    expectErrno(() => core.deviceFault(dev, p, a, a + n * PAGE, true), "EPERM");
    expectBytes(p.read(a, n * PAGE), data);
  });

  it("a read fault on this device's own pages counts none of them as reported read-only", () => {
    const sys = makeSystem();
    const { core, machine } = sys;
    const { dev } = addFake<RecordingFakeDriver>(core, "gpu0");
    const p = machine.createProcess();
    const a = mmapPrivate(p, 4 * PAGE);
    p.write(a, randomBytes(4 * PAGE, 42));
    core.migrateToDevice(dev, p, a, a + 4 * PAGE);
    p.fork();
    expect(core.deviceFault(dev, p, a, a + 4 * PAGE, false).reportedReadOnly).toBe(0);
  });
});
