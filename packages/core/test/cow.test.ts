import { ENTRY_DEVICE_PRIVATE, HPAGE_PMD_SIZE, MmuNotifyEvent } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { HMM_PFN_DEVICE_PRIVATE, HMM_PFN_WRITE } from "../src/index.js";
import { type InvalidateCall, PAGE, type RecordingFakeDriver } from "./fakes.js";
import {
  addFake,
  cpuEntry,
  expectBytes,
  expectCoherent,
  expectNoLeaks,
  makeSystem,
  mmapHuge,
  mmapPrivate,
  randomBytes,
  SHARED,
} from "./helpers.js";

/** True if some recorded invalidation of `mmId` with `event` covers [va, va + PAGE). */
function covered(list: InvalidateCall[], mmId: number, va: number, event: number): boolean {
  return list.some((v) => v.mmId === mmId && v.event === event && v.start <= va && va + PAGE <= v.end);
}

describe("device write faults on copy-on-write pages", () => {
  it("a device write fault after fork breaks COW in the faulting process, invalidates every device mirroring it, and the other process keeps its data", () => {
    const sys = makeSystem();
    const { core, machine } = sys;
    const { dev: gpu0, drv: d0 } = addFake<RecordingFakeDriver>(core, "gpu0");
    const { dev: gpu1, drv: d1 } = addFake<RecordingFakeDriver>(core, "gpu1");
    const parent = machine.createProcess();
    const n = 8;
    const a = mmapPrivate(parent, n * PAGE);
    const old = randomBytes(n * PAGE, 31);
    parent.write(a, old);
    const child = parent.fork();
    // gpu0 mirrors both processes, gpu1 mirrors the child; all read-only views of shared frames.
    core.deviceFault(gpu0, parent, a, a + n * PAGE, false);
    core.deviceFault(gpu0, child, a, a + n * PAGE, false);
    core.deviceFault(gpu1, child, a, a + n * PAGE, false);
    const shared = Array.from({ length: n }, (_, i) => cpuEntry(parent.mm, a + i * PAGE)!.pfn);
    for (let i = 0; i < n; i++) {
      expect(d1.entry(child.mm.id, a + i * PAGE)!.pfn).toBe(shared[i]);
      expect(d1.entry(child.mm.id, a + i * PAGE)!.flags & HMM_PFN_WRITE).toBe(0);
    }
    d0.clearRecords();
    d1.clearRecords();

    core.deviceFault(gpu0, child, a, a + n * PAGE, true);

    for (let i = 0; i < n; i++) {
      const va = a + i * PAGE;
      // The child got its own copies; the parent still maps the original frames.
      expect(cpuEntry(child.mm, va)!.pfn).not.toBe(shared[i]);
      expect(cpuEntry(parent.mm, va)!.pfn).toBe(shared[i]);
      // Every device mirroring the child was told before its frames changed (a COW break is CLEAR).
      expect(covered(d1.invalidations, child.mm.id, va, MmuNotifyEvent.CLEAR)).toBe(true);
      expect(covered(d0.invalidations, child.mm.id, va, MmuNotifyEvent.CLEAR)).toBe(true);
      expect(d1.entry(child.mm.id, va)).toBeUndefined();
      // gpu0 now holds the child's new frames, writable; its view of the parent is untouched.
      expect(d0.entry(child.mm.id, va)!.pfn).toBe(cpuEntry(child.mm, va)!.pfn);
      expect(d0.entry(child.mm.id, va)!.flags & HMM_PFN_WRITE).toBe(HMM_PFN_WRITE);
      expect(d0.entry(parent.mm.id, va)!.pfn).toBe(shared[i]);
    }
    expect(d0.invalidations.some((v) => v.mmId === parent.mm.id)).toBe(false);
    const fresh = randomBytes(n * PAGE, 32);
    d0.deviceWrite(child.mm.id, a, fresh);
    expectBytes(child.read(a, n * PAGE), fresh, "child");
    expectBytes(parent.read(a, n * PAGE), old, "parent");
    expectBytes(d0.deviceRead(parent.mm.id, a, n * PAGE), old, "gpu0's view of the parent");
    expectCoherent(core, gpu0);
    expectCoherent(core, gpu1);
    parent.exit();
    child.exit();
    expectNoLeaks(sys, [gpu0, gpu1]);
  });

  it("fork write-protects the parent's pages and the parent's mirrors are told with PROTECTION_PAGE", () => {
    const { core, machine } = makeSystem();
    const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
    const parent = machine.createProcess();
    const a = mmapPrivate(parent, 4 * PAGE);
    core.deviceFault(dev, parent, a, a + 4 * PAGE, true);
    expect(drv.entry(parent.mm.id, a)!.flags & HMM_PFN_WRITE).toBe(HMM_PFN_WRITE);
    drv.clearRecords();
    parent.fork();
    for (let i = 0; i < 4; i++)
      expect(covered(drv.invalidations, parent.mm.id, a + i * PAGE, MmuNotifyEvent.PROTECTION_PAGE)).toBe(
        true,
      );
    expect(drv.mirrored(parent.mm.id)).toBe(0);
    expectCoherent(core, dev);
  });

  it("a device write fault on its own device pages shared after fork reports them without WRITE, faults nothing and leaves them on the device", () => {
    const sys = makeSystem();
    const { core, machine } = sys;
    const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
    const parent = machine.createProcess();
    const n = 8;
    const a = mmapPrivate(parent, n * PAGE);
    const data = randomBytes(n * PAGE, 37);
    parent.write(a, data);
    expect(core.migrateToDevice(dev, parent, a, a + n * PAGE).migrated).toBe(n);
    const child = parent.fork();
    const faults = machine.stats.faults;
    // hmm_vma_handle_pte: this device's private page is reported as it is, never faulted, even
    // for a write; the driver decides (dmirror returns EFAULT).
    for (const proc of [parent, child]) {
      const r = core.deviceFault(dev, proc, a, a + n * PAGE, true);
      expect(r).toEqual({ pages: n, cpuFaults: 0, retries: 0, reportedReadOnly: n });
      for (let i = 0; i < n; i++) {
        const f = drv.entry(proc.mm.id, a + i * PAGE)!.flags;
        expect(f & (HMM_PFN_WRITE | HMM_PFN_DEVICE_PRIVATE)).toBe(HMM_PFN_DEVICE_PRIVATE);
        expect(cpuEntry(proc.mm, a + i * PAGE)!.kind).toBe(ENTRY_DEVICE_PRIVATE);
      }
    }
    expect(machine.stats.faults).toBe(faults);
    expect(dev.memory.used).toBe(n);
    expectCoherent(core, dev);
    // The CPU's write breaks COW (the page comes home first); the other process keeps the data.
    const mine = randomBytes(n * PAGE, 38);
    child.write(a, mine);
    expectBytes(child.read(a, n * PAGE), mine, "child");
    expectBytes(parent.read(a, n * PAGE), data, "parent");
    expect(core.deviceFault(dev, child, a, a + n * PAGE, true).reportedReadOnly).toBe(0);
    child.exit();
    parent.exit();
    expectNoLeaks(sys, [dev]);
  });

  for (const migrate of [false, true]) {
    for (const thp of [false, true]) {
      it(`hmm-tests anon_write_child (migrate=${migrate}, thp=${thp}): a device write in the child is invisible to the parent`, () => {
        const sys = makeSystem();
        const { core, machine } = sys;
        const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0", undefined, { memoryPages: 1024 });
        const parent = machine.createProcess();
        const size = thp ? HPAGE_PMD_SIZE : 64 * PAGE;
        const n = size / PAGE;
        const a = thp ? mmapHuge(parent, 1) : mmapPrivate(parent, size);
        const data = randomBytes(size, 33);
        parent.write(a, data);
        if (thp) expect(cpuEntry(parent.mm, a)!.huge).toBe(true);
        if (migrate)
          expect(core.migrateToDevice(dev, parent, a, a + size)).toEqual({
            selected: n,
            migrated: n,
            allocFailed: 0,
          });
        const child = parent.fork();
        // The child checks its copy (a CPU read: device pages come home for both processes).
        expectBytes(child.read(a, size), data, "child before");
        expect(core.deviceFault(dev, child, a, a + size, true).pages).toBe(n);
        const mine = randomBytes(size, 34);
        drv.deviceWrite(child.mm.id, a, mine);
        expectBytes(child.read(a, size), mine, "child after");
        expectCoherent(core, dev);
        child.exit();
        expectBytes(parent.read(a, size), data, "parent");
        parent.exit();
        expectNoLeaks(sys, [dev]);
      });
    }
  }

  it("hmm-tests anon_write_child_shared: a device write in the child of a MAP_SHARED mapping is seen by the parent", () => {
    const sys = makeSystem();
    const { core, machine } = sys;
    const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
    const parent = machine.createProcess();
    const n = 16;
    const a = parent.mm.mmap({ length: n * PAGE, prot: 3, flags: SHARED });
    parent.write(a, randomBytes(n * PAGE, 35));
    const child = parent.fork();
    expect(core.deviceFault(dev, child, a, a + n * PAGE, true).pages).toBe(n);
    const mine = randomBytes(n * PAGE, 36);
    drv.deviceWrite(child.mm.id, a, mine);
    child.exit();
    expectBytes(parent.read(a, n * PAGE), mine);
    parent.exit();
    expectNoLeaks(sys, [dev]);
  });
});
