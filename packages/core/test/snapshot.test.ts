import { ENTRY_MIGRATION, ENTRY_ZERO, HPAGE_PMD_SIZE, PROT_NONE, PROT_READ } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import {
  describeHmmFlags,
  HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL,
  HMM_DMIRROR_PROT_ERROR,
  HMM_DMIRROR_PROT_NONE,
  HMM_DMIRROR_PROT_PMD,
  HMM_DMIRROR_PROT_READ,
  HMM_DMIRROR_PROT_WRITE,
  HMM_DMIRROR_PROT_ZERO,
  HMM_PFN_DEVICE_PRIVATE,
  HMM_PFN_DIRTY,
  HMM_PFN_ERROR,
  HMM_PFN_EXCLUSIVE,
  HMM_PFN_ORDER_SHIFT,
  HMM_PFN_REMOTE_PRIVATE,
  HMM_PFN_VALID,
  HMM_PFN_WRITE,
  HMM_PFN_ZERO,
  hmmFlagsToProt,
  hmmPfnToMapOrder,
  Scheduler,
} from "../src/index.js";
import { PAGE, type RecordingFakeDriver } from "./fakes.js";
import { addFake, cpuEntry, makeSystem, mmapHuge, mmapPrivate, RW, randomBytes } from "./helpers.js";

describe("snapshots (hmm_range_fault without faulting)", () => {
  it("hmm-tests snapshot: two devices see ERROR, ZERO|READ, READ, WRITE, DEV_PRIVATE_LOCAL|WRITE and NONE", () => {
    const { core, machine } = makeSystem();
    const { dev: gpu0, drv: d0 } = addFake<RecordingFakeDriver>(core, "gpu0");
    const { dev: gpu1 } = addFake<RecordingFakeDriver>(core, "gpu1");
    const p = machine.createProcess();
    const a = mmapPrivate(p, 7 * PAGE, PROT_NONE);
    p.mm.munmap(a + PAGE, PAGE);
    p.mm.mprotect(a + 2 * PAGE, PAGE, PROT_READ);
    p.read(a + 2 * PAGE, 4);
    p.mm.mprotect(a + 3 * PAGE, PAGE, RW);
    p.write(a + 3 * PAGE, new Uint8Array([3]));
    p.mm.mprotect(a + 3 * PAGE, PAGE, PROT_READ);
    p.mm.mprotect(a + 4 * PAGE, 3 * PAGE, RW);
    p.write(a + 4 * PAGE, new Uint8Array([3]));
    expect(core.migrateToDevice(gpu0, p, a + 5 * PAGE, a + 6 * PAGE).migrated).toBe(1);
    expect(core.migrateToDevice(gpu1, p, a + 6 * PAGE, a + 7 * PAGE).migrated).toBe(1);
    d0.clearRecords();
    const faults = machine.stats.faults;
    const before = [0, 2, 3, 4, 5, 6].map((i) => cpuEntry(p.mm, a + i * PAGE));

    const prot = core.snapshotProt(gpu0, p, a, a + 7 * PAGE);

    expect(Array.from(prot)).toEqual([
      HMM_DMIRROR_PROT_ERROR,
      HMM_DMIRROR_PROT_ERROR,
      HMM_DMIRROR_PROT_ZERO | HMM_DMIRROR_PROT_READ,
      HMM_DMIRROR_PROT_READ,
      HMM_DMIRROR_PROT_WRITE,
      HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE,
      HMM_DMIRROR_PROT_NONE,
    ]);
    // Nothing was faulted, reported or moved: gpu1's page is still on gpu1.
    expect(machine.stats.faults).toBe(faults);
    expect(d0.mirrorCalls).toEqual([]);
    expect([0, 2, 3, 4, 5, 6].map((i) => cpuEntry(p.mm, a + i * PAGE))).toEqual(before);
    // gpu1 sees the mirror image: its own page local, gpu0's page not valid for it.
    const prot1 = core.snapshotProt(gpu1, p, a + 5 * PAGE, a + 7 * PAGE);
    expect(Array.from(prot1)).toEqual([
      HMM_DMIRROR_PROT_NONE,
      HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE,
    ]);
    // The raw snapshot gives gpu0 its device frame and marks gpu1's page remote, not valid.
    const s = core.snapshot(gpu0, p, a + 5 * PAGE, a + 7 * PAGE);
    expect(s.pfns[0]).toBe(cpuEntry(p.mm, a + 5 * PAGE)!.pfn);
    expect(s.flags[1] & HMM_PFN_VALID).toBe(0);
    expect(s.flags[1] & HMM_PFN_REMOTE_PRIVATE).toBe(HMM_PFN_REMOTE_PRIVATE);
    expect(s.pfns[1]).toBe(-1);
    expect(gpu0.stats.snapshots).toBe(2);
  });

  it("hmm-tests compound (THP): a written THP snapshots as WRITE|PMD on every page, READ|PMD after mprotect", () => {
    const { core, machine } = makeSystem();
    const { dev } = addFake(core, "gpu0");
    const p = machine.createProcess();
    const a = mmapHuge(p, 1);
    p.write(a, randomBytes(PAGE, 61));
    expect(cpuEntry(p.mm, a)!.huge).toBe(true);
    const w = core.snapshotProt(dev, p, a, a + HPAGE_PMD_SIZE);
    expect(w.every((b) => b === (HMM_DMIRROR_PROT_WRITE | HMM_DMIRROR_PROT_PMD))).toBe(true);
    const s = core.snapshot(dev, p, a, a + HPAGE_PMD_SIZE);
    const head = cpuEntry(p.mm, a)!.pfn;
    expect(Array.from(s.pfns.subarray(0, 4))).toEqual([head, head + 1, head + 2, head + 3]);
    p.mm.mprotect(a, HPAGE_PMD_SIZE, PROT_READ);
    expect(cpuEntry(p.mm, a)!.huge).toBe(true);
    const r = core.snapshotProt(dev, p, a, a + HPAGE_PMD_SIZE);
    expect(r.every((b) => b === (HMM_DMIRROR_PROT_READ | HMM_DMIRROR_PROT_PMD))).toBe(true);
    // Part of a PMD still reports the PMD order.
    const part = core.snapshotProt(dev, p, a + 8 * PAGE, a + 10 * PAGE);
    expect(Array.from(part)).toEqual(Array(2).fill(HMM_DMIRROR_PROT_READ | HMM_DMIRROR_PROT_PMD));
  });

  it("hmm-tests migrate_anon_huge_zero: the huge zero page snapshots as READ|PMD (0x05), as dmirror_mkentry's is_zero_pfn is false for it", () => {
    const { core, machine } = makeSystem({ zeroPage: true });
    const { dev } = addFake(core, "gpu0");
    const p = machine.createProcess();
    const a = mmapHuge(p, 1);
    p.mm.mprotect(a, HPAGE_PMD_SIZE, PROT_READ);
    p.read(a, 4);
    const e = cpuEntry(p.mm, a)!;
    expect(e.huge && (e.flags & ENTRY_ZERO) !== 0).toBe(true);
    const s = core.snapshot(dev, p, a, a + HPAGE_PMD_SIZE);
    expect(s.flags[0] & HMM_PFN_ZERO).toBe(HMM_PFN_ZERO);
    const prot = core.snapshotProt(dev, p, a, a + HPAGE_PMD_SIZE);
    expect(prot[0]).toBe(0x05);
    expect(prot.every((b) => b === (HMM_DMIRROR_PROT_READ | HMM_DMIRROR_PROT_PMD))).toBe(true);
    // The 4 KiB zero page keeps ZERO|READ (0x11).
    const b = mmapPrivate(p, PAGE, PROT_READ);
    p.read(b, 4);
    expect(core.snapshotProt(dev, p, b, b + PAGE)[0]).toBe(HMM_DMIRROR_PROT_ZERO | HMM_DMIRROR_PROT_READ);
  });

  it("a snapshot describes this device's exclusive entries with EXCLUSIVE and the frame, so exclusive translations match it", () => {
    const { core, machine } = makeSystem();
    const { dev, drv } = addFake<RecordingFakeDriver>(core, "gpu0");
    const { dev: other } = addFake(core, "gpu1");
    const p = machine.createProcess();
    const n = 4;
    const a = mmapPrivate(p, n * PAGE);
    p.write(a, randomBytes(n * PAGE, 64));
    expect(core.makeExclusive(dev, p, a, a + n * PAGE)).toBe(n);
    const s = core.snapshot(dev, p, a, a + n * PAGE);
    const ts = core.translations(dev);
    expect(ts.length).toBe(n);
    for (const t of ts) {
      expect(t.exclusive).toBe(true);
      const i = (t.va - a) / PAGE;
      expect(s.pfns[i]).toBe(t.pfn);
      expect(s.flags[i] & (HMM_PFN_EXCLUSIVE | HMM_PFN_VALID)).toBe(HMM_PFN_EXCLUSIVE);
    }
    // The dmirror byte is NONE (not valid), and another device sees nothing.
    expect(Array.from(core.snapshotProt(dev, p, a, a + n * PAGE))).toEqual(
      Array(n).fill(HMM_DMIRROR_PROT_NONE),
    );
    const o = core.snapshot(other, p, a, a + n * PAGE);
    expect(Array.from(o.flags)).toEqual(Array(n).fill(0));
    expect(drv.exclusiveEntries()).toBe(n);
  });

  it("a page under migration snapshots as not valid (0), without waiting or faulting", () => {
    const { core, machine } = makeSystem();
    const { dev } = addFake(core, "gpu0");
    const p = machine.createProcess();
    const a = mmapPrivate(p, 2 * PAGE);
    p.write(a, randomBytes(2 * PAGE, 62));
    const steps = core.migrateToDeviceSteps(dev, p, a, a + 2 * PAGE);
    expect(steps.next().value).toBe("migrate:collected");
    expect(cpuEntry(p.mm, a)!.kind).toBe(ENTRY_MIGRATION);
    expect(Array.from(core.snapshotProt(dev, p, a, a + 2 * PAGE))).toEqual([0, 0]);
    const sched = new Scheduler(1).spawn("rest", steps);
    sched.run();
    expect(sched.result<{ migrated: number }>("rest").migrated).toBe(2);
    expect(Array.from(core.snapshotProt(dev, p, a, a + 2 * PAGE))).toEqual(
      Array(2).fill(HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE),
    );
  });
});

describe("flag helpers", () => {
  it("hmmFlagsToProt encodes flags as dmirror_mkentry does", () => {
    const order9 = 9 << HMM_PFN_ORDER_SHIFT;
    expect(hmmFlagsToProt(HMM_PFN_ERROR)).toBe(HMM_DMIRROR_PROT_ERROR);
    expect(hmmFlagsToProt(HMM_PFN_ERROR | HMM_PFN_VALID)).toBe(HMM_DMIRROR_PROT_ERROR);
    expect(hmmFlagsToProt(0)).toBe(HMM_DMIRROR_PROT_NONE);
    expect(hmmFlagsToProt(HMM_PFN_REMOTE_PRIVATE)).toBe(HMM_DMIRROR_PROT_NONE);
    expect(hmmFlagsToProt(HMM_PFN_VALID)).toBe(HMM_DMIRROR_PROT_READ);
    expect(hmmFlagsToProt(HMM_PFN_VALID | HMM_PFN_WRITE | HMM_PFN_DIRTY)).toBe(HMM_DMIRROR_PROT_WRITE);
    expect(hmmFlagsToProt(HMM_PFN_VALID | HMM_PFN_ZERO)).toBe(HMM_DMIRROR_PROT_ZERO | HMM_DMIRROR_PROT_READ);
    expect(hmmFlagsToProt(HMM_PFN_VALID | HMM_PFN_DEVICE_PRIVATE)).toBe(
      HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_READ,
    );
    expect(hmmFlagsToProt(HMM_PFN_VALID | HMM_PFN_WRITE | order9)).toBe(
      HMM_DMIRROR_PROT_WRITE | HMM_DMIRROR_PROT_PMD,
    );
    expect(hmmFlagsToProt(HMM_PFN_VALID | HMM_PFN_ZERO | order9)).toBe(
      HMM_DMIRROR_PROT_READ | HMM_DMIRROR_PROT_PMD,
    );
    expect(hmmFlagsToProt(HMM_PFN_EXCLUSIVE | HMM_PFN_WRITE)).toBe(HMM_DMIRROR_PROT_NONE);
    expect(hmmPfnToMapOrder(order9 | HMM_PFN_VALID)).toBe(9);
    expect(hmmPfnToMapOrder(HMM_PFN_VALID | HMM_PFN_WRITE | HMM_PFN_EXCLUSIVE)).toBe(0);
  });

  it("describeHmmFlags lists the flags by name", () => {
    expect(describeHmmFlags(0)).toBe("NONE");
    expect(describeHmmFlags(HMM_PFN_VALID | HMM_PFN_WRITE | (9 << HMM_PFN_ORDER_SHIFT))).toBe(
      "VALID|WRITE|order=9",
    );
    expect(describeHmmFlags(HMM_PFN_VALID | HMM_PFN_DEVICE_PRIVATE | HMM_PFN_EXCLUSIVE)).toBe(
      "VALID|DEVICE_PRIVATE|EXCLUSIVE",
    );
  });
});
