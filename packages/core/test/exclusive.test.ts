import {
  ENTRY_DEVICE_EXCLUSIVE,
  ENTRY_PRESENT,
  ENTRY_WRITE,
  entryOwner,
  HPAGE_PMD_SIZE,
  MmError,
  MmuNotifyEvent,
  PROT_READ,
  type Process,
} from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { HMM_PFN_EXCLUSIVE, HMM_PFN_VALID, HMM_PFN_WRITE } from "../src/index.js";
import { PAGE, type RecordingFakeDriver } from "./fakes.js";
import {
  addFake,
  cpuEntry,
  expectBytes,
  expectCoherent,
  expectErrno,
  expectNoLeaks,
  makeSystem,
  mmapHuge,
  mmapPrivate,
  SHARED,
} from "./helpers.js";

/** ptr[i] = i + add over `n` pages of 32-bit ints, as bytes. */
function ints(n: number, add = 0): Uint8Array {
  const v = new Int32Array((n * PAGE) / 4);
  for (let i = 0; i < v.length; i++) v[i] = i + add;
  return new Uint8Array(v.buffer);
}

/** The CPU's `ptr[i]++` over the range: read every int, write it back plus one. */
function incrementAll(p: Process, a: number, n: number): void {
  const v = new Int32Array(p.read(a, n * PAGE).buffer.slice(0));
  for (let i = 0; i < v.length; i++) v[i]++;
  p.write(a, new Uint8Array(v.buffer));
}

function setup() {
  const sys = makeSystem();
  const { dev, drv } = addFake<RecordingFakeDriver>(sys.core, "gpu0");
  const p = sys.machine.createProcess();
  return { sys, ...sys, dev, drv, p };
}

describe("exclusive device access (make_device_exclusive)", () => {
  it("hmm-tests exclusive: the device gets exclusive writable pages; a CPU access revokes each with an EXCLUSIVE invalidation", () => {
    const { sys, core, dev, drv, p } = setup();
    const n = 16;
    const a = mmapPrivate(p, n * PAGE);
    p.write(a, ints(n));
    const frames = Array.from({ length: n }, (_, i) => cpuEntry(p.mm, a + i * PAGE)!.pfn);
    expect(core.makeExclusive(dev, p, a, a + n * PAGE)).toBe(n);
    for (let i = 0; i < n; i++) {
      const va = a + i * PAGE;
      const e = cpuEntry(p.mm, va)!;
      expect(e.kind).toBe(ENTRY_DEVICE_EXCLUSIVE);
      expect(entryOwner(e.flags)).toBe(dev.ownerId);
      expect(e.pfn).toBe(frames[i]);
      const m = drv.entry(p.mm.id, va)!;
      expect(m.pfn).toBe(frames[i]);
      expect(m.flags).toBe(HMM_PFN_VALID | HMM_PFN_WRITE | HMM_PFN_EXCLUSIVE);
    }
    // Conversion was announced with the device as owner.
    const conv = drv.invalidations.filter((v) => v.event === MmuNotifyEvent.EXCLUSIVE);
    expect(conv).toHaveLength(n);
    expect(conv.every((v) => v.owner === dev.ownerId)).toBe(true);
    expectBytes(drv.deviceRead(p.mm.id, a, n * PAGE), ints(n), "device view");
    expect(dev.stats.exclusivePages).toBe(n);
    expectCoherent(core, dev);
    drv.clearRecords();

    incrementAll(p, a, n);

    const back = drv.invalidations.filter((v) => v.event === MmuNotifyEvent.EXCLUSIVE);
    expect(back.map((v) => v.start)).toEqual(Array.from({ length: n }, (_, i) => a + i * PAGE));
    expect(back.every((v) => v.owner === null && v.end === v.start + PAGE)).toBe(true);
    // CHECK_EXCLUSIVE: nothing tagged exclusive is left in the mirror.
    expect(drv.exclusiveEntries()).toBe(0);
    for (let i = 0; i < n; i++) {
      const e = cpuEntry(p.mm, a + i * PAGE)!;
      expect(e.kind).toBe(ENTRY_PRESENT);
      expect(e.pfn).toBe(frames[i]);
    }
    expectBytes(p.read(a, n * PAGE), ints(n, 1));
    p.exit();
    expectNoLeaks(sys, [dev]);
  });

  it("hmm-tests exclusive_mprotect: after mprotect(PROT_READ) a device write fault is EPERM and make exclusive is EFAULT", () => {
    const { core, dev, drv, p } = setup();
    const n = 8;
    const a = mmapPrivate(p, n * PAGE);
    p.write(a, ints(n));
    expect(core.makeExclusive(dev, p, a, a + n * PAGE)).toBe(n);
    expectBytes(drv.deviceRead(p.mm.id, a, n * PAGE), ints(n));
    drv.clearRecords();
    p.mm.mprotect(a, n * PAGE, PROT_READ);
    expect(drv.invalidations.some((v) => v.event === MmuNotifyEvent.PROTECTION_VMA)).toBe(true);
    expect(drv.mirrored(p.mm.id)).toBe(0);
    for (let i = 0; i < n; i++) expect(cpuEntry(p.mm, a + i * PAGE)!.flags & ENTRY_WRITE).toBe(0);
    drv.clearRecords();
    expectErrno(() => core.deviceFault(dev, p, a, a + n * PAGE, true), "EPERM");
    // make_device_exclusive's write lookup fails on a read-only VMA with EFAULT, not EPERM.
    expectErrno(() => core.makeExclusive(dev, p, a, a + n * PAGE), "EFAULT", MmError);
    expect(drv.mirrorCalls).toEqual([]);
    expectBytes(p.read(a, n * PAGE), ints(n));
  });

  it("hmm-tests exclusive_cow: after fork both processes write their own copies of exclusive pages", () => {
    const { sys, core, dev, drv, p } = setup();
    const n = 8;
    const a = mmapPrivate(p, n * PAGE);
    p.write(a, ints(n));
    expect(core.makeExclusive(dev, p, a, a + n * PAGE)).toBe(n);
    drv.clearRecords();
    const child = p.fork();
    // fork took the pages back from the device before sharing them.
    expect(drv.exclusiveEntries()).toBe(0);
    expect(drv.invalidations.some((v) => v.event === MmuNotifyEvent.EXCLUSIVE && v.owner === null)).toBe(
      true,
    );
    for (let i = 0; i < n; i++) {
      expect(cpuEntry(p.mm, a + i * PAGE)!.kind).toBe(ENTRY_PRESENT);
      expect(cpuEntry(child.mm, a + i * PAGE)!.pfn).toBe(cpuEntry(p.mm, a + i * PAGE)!.pfn);
    }
    incrementAll(child, a, n);
    incrementAll(p, a, n);
    expectBytes(child.read(a, n * PAGE), ints(n, 1), "child");
    expectBytes(p.read(a, n * PAGE), ints(n, 1), "parent");
    incrementAll(child, a, n);
    expectBytes(child.read(a, n * PAGE), ints(n, 2), "child again");
    expectBytes(p.read(a, n * PAGE), ints(n, 1), "parent unchanged");
    expectCoherent(core, dev);
    child.exit();
    p.exit();
    expectNoLeaks(sys, [dev]);
  });

  it("another device's fault on an exclusive page takes it back from the owner with an EXCLUSIVE invalidation", () => {
    const { core, dev, drv, p } = setup();
    const { dev: gpu1, drv: d1 } = addFake<RecordingFakeDriver>(core, "gpu1");
    const n = 4;
    const a = mmapPrivate(p, n * PAGE);
    p.write(a, ints(n));
    core.makeExclusive(dev, p, a, a + n * PAGE);
    drv.clearRecords();
    expect(core.deviceFault(gpu1, p, a, a + n * PAGE, false).cpuFaults).toBe(n);
    expect(drv.exclusiveEntries()).toBe(0);
    expect(
      drv.invalidations.filter((v) => v.event === MmuNotifyEvent.EXCLUSIVE && v.owner === null),
    ).toHaveLength(n);
    for (let i = 0; i < n; i++) expect(cpuEntry(p.mm, a + i * PAGE)!.kind).toBe(ENTRY_PRESENT);
    expectBytes(d1.deviceRead(p.mm.id, a, n * PAGE), ints(n));
    expectCoherent(core, dev);
    expectCoherent(core, gpu1);
  });

  it("making part of a THP exclusive splits it and leaves the rest of the data alone", () => {
    const { core, dev, drv, p } = setup();
    const a = mmapHuge(p, 1);
    p.write(a, ints(512));
    expect(cpuEntry(p.mm, a)!.huge).toBe(true);
    expect(core.makeExclusive(dev, p, a + 4 * PAGE, a + 6 * PAGE)).toBe(2);
    expect(cpuEntry(p.mm, a)!.huge).toBe(false);
    expect(cpuEntry(p.mm, a + 4 * PAGE)!.kind).toBe(ENTRY_DEVICE_EXCLUSIVE);
    expect(cpuEntry(p.mm, a + 6 * PAGE)!.kind).toBe(ENTRY_PRESENT);
    expect(drv.exclusiveEntries()).toBe(2);
    expectCoherent(core, dev);
    expectBytes(p.read(a, HPAGE_PMD_SIZE), ints(512));
    expect(drv.exclusiveEntries()).toBe(0);
  });

  it("exclusive access to shared anonymous memory is EOPNOTSUPP, as make_device_exclusive refuses non-anonymous folios", () => {
    const { core, dev, drv, p } = setup();
    const a = p.mm.mmap({ length: PAGE, prot: 3, flags: SHARED });
    expectErrno(() => core.makeExclusive(dev, p, a, a + PAGE), "EOPNOTSUPP", MmError);
    expect(drv.mirrorCalls).toEqual([]);
    expect(drv.exclusiveEntries()).toBe(0);
  });

  it("make exclusive stops at the first page that cannot be made exclusive and keeps the pages before it exclusive", () => {
    const { core, dev, drv, p } = setup();
    const n = 4;
    const a = mmapPrivate(p, 2 * n * PAGE);
    p.write(a, ints(2 * n));
    p.mm.mprotect(a + n * PAGE, n * PAGE, PROT_READ);
    expectErrno(() => core.makeExclusive(dev, p, a, a + 2 * n * PAGE), "EFAULT", MmError);
    expect(drv.exclusiveEntries()).toBe(n);
    for (let i = 0; i < n; i++) expect(cpuEntry(p.mm, a + i * PAGE)!.kind).toBe(ENTRY_DEVICE_EXCLUSIVE);
    expect(cpuEntry(p.mm, a + n * PAGE)!.kind).toBe(ENTRY_PRESENT);
    expectCoherent(core, dev);
    expectBytes(p.read(a, 2 * n * PAGE), ints(2 * n));
  });
});
