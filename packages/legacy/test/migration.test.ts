import { DeviceAccesses } from "@hmmkit/core";
import { describe, expect, it } from "vitest";
import { deviceAddress, HMM_PTE_VALID_DEV, HMM_PTE_VALID_PFN, hmmPtePfn } from "../src/index.js";
import { attachFake, entryOf, makeSystem, mmapPrivate, PAGE } from "./helpers.js";

describe("migration through the shared table", () => {
  it("pages migrated to the device live in hmm_pt as device addresses; a CPU fault looks them up there and copies from the device", () => {
    const sys = makeSystem();
    const { proc, core } = sys;
    const va = mmapPrivate(proc, 8 * PAGE);
    proc.writeStamp(va, 8 * PAGE, 41);
    const hashes: number[] = [];
    for (let i = 0; i < 8; i++) hashes.push(proc.readPageHash(va + i * PAGE));
    const { dev, sm, drv, mirror } = attachFake(sys, proc);
    const r = core.migrateToDevice(dev, proc, va, va + 8 * PAGE);
    expect(r.migrated).toBe(8);
    for (let i = 0; i < 8; i++) {
      const e = entryOf(mirror, va + i * PAGE)!;
      expect(e.lo & HMM_PTE_VALID_DEV).toBeTruthy();
      expect(e.lo & HMM_PTE_VALID_PFN).toBe(0);
      expect(hmmPtePfn(e.lo, e.hi)).toBe(deviceAddress(sm.ownerId, drv.copiesTo[i].dpfn));
    }
    // The CPU touches page 3: it comes home through hmm_pt's device address.
    expect(proc.readPageHash(va + 3 * PAGE)).toBe(hashes[3]);
    expect(sm.counters.copyFromDeviceViaHmmPt).toBe(1);
    expect(drv.copiesFrom).toHaveLength(1);
    expect(drv.copiesFrom[0].dpfn).toBe(drv.copiesTo[3].dpfn);
    expect(entryOf(mirror, va + 3 * PAGE)!.lo).toBe(0);
    // The rest come home on migrateToRam, each through hmm_pt.
    core.migrateToRam(dev, proc, va, va + 8 * PAGE);
    expect(sm.counters.copyFromDeviceViaHmmPt).toBe(8);
    expect(sm.counters.copyFromDeviceUnmirrored).toBe(0);
    for (let i = 0; i < 8; i++) expect(proc.readPageHash(va + i * PAGE)).toBe(hashes[i]);
    // Every device entry was cleared as its page came home; the emptied leaf was pruned.
    expect(mirror.pt.entryPos(va)).toBe(-1);
  });

  it("a device access to a migrated page goes to the device's own memory (translated from hmm_pt)", () => {
    const sys = makeSystem();
    const { proc, core } = sys;
    const va = mmapPrivate(proc, 4 * PAGE);
    proc.writeStamp(va, 4 * PAGE, 9);
    const { dev } = attachFake(sys, proc);
    core.migrateToDevice(dev, proc, va, va + 4 * PAGE);
    const before = dev.stats.localAccesses;
    const acc = new DeviceAccesses();
    for (let i = 0; i < 4; i++) acc.read(va + i * PAGE);
    const res = core.runDevice(dev, proc, acc);
    expect(res.completed).toBe(4);
    expect(dev.stats.localAccesses - before).toBe(4);
    expect(acc.seen[0]).toBe(proc.readPageHash(va));
  });
});
