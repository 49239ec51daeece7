import { DeviceAccesses } from "@hmmkit/core";
import { stampToken } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { addIotlb, expectCoherent, makeSystem, mmapPrivate, PAGE } from "./helpers.js";

describe("iotlb never migrates to itself, and its copy callbacks are correct DMA", () => {
  it("a run services every miss remotely: no page moves to the device", () => {
    const sys = makeSystem();
    const p = sys.machine.createProcess();
    const base = mmapPrivate(p, 128 * PAGE);
    const { dev } = addIotlb(sys.core, { memoryPages: 256, faultWindow: 8 });
    const acc = new DeviceAccesses();
    for (let i = 0; i < 128; i++) acc.write(base + i * PAGE, i);
    for (let i = 0; i < 128; i++) acc.read(base + i * PAGE);
    const r = sys.core.runDevice(dev, p.mm, acc);
    expect(r.completed).toBe(256);
    expect(dev.stats.migratedToDevice).toBe(0);
    expect(dev.stats.localAccesses).toBe(0);
    expect(dev.stats.remoteAccesses).toBe(256);
    expect(dev.memory.used).toBe(0);
  });

  it("pages the core migrates to it are read and written locally, and come home intact on a CPU touch and on removal", () => {
    for (const contentMode of ["bytes", "tag"] as const) {
      const sys = makeSystem({ contentMode });
      const p = sys.machine.createProcess();
      const base = mmapPrivate(p, 32 * PAGE);
      for (let i = 0; i < 32; i++) p.writeStamp(base + i * PAGE, PAGE, 100 + i);
      const { dev } = addIotlb(sys.core, { memoryPages: 64 });
      // Holes migrate as zero-filled pages (copyToDevice with spfn -1).
      const hole = mmapPrivate(p, 4 * PAGE);
      expect(sys.core.migrateToDevice(dev, p.mm, base, base + 32 * PAGE).migrated).toBe(32);
      expect(sys.core.migrateToDevice(dev, p.mm, hole, hole + 4 * PAGE).migrated).toBe(4);
      expectCoherent(sys.core, dev);
      const acc = new DeviceAccesses();
      for (let i = 0; i < 32; i++) acc.read(base + i * PAGE);
      for (let i = 0; i < 4; i++) acc.read(hole + i * PAGE);
      acc.write(base, 999);
      sys.core.runDevice(dev, p.mm, acc);
      expect(dev.stats.localAccesses).toBe(37);
      for (let i = 0; i < 32; i++) expect(acc.seen[i]).toBe(stampToken(100 + i));
      for (let i = 0; i < 4; i++) expect(acc.seen[32 + i]).toBe(0);
      // A CPU touch brings a page home through copyFromDevice; the device write is there.
      expect(p.readPageHash(base)).toBe(stampToken(999));
      expect(p.readPageHash(base + 5 * PAGE)).toBe(stampToken(105));
      expectCoherent(sys.core, dev);
      // Removal brings the rest home.
      sys.core.removeDevice(dev);
      for (let i = 1; i < 32; i++) expect(p.readPageHash(base + i * PAGE)).toBe(stampToken(100 + i));
      p.exit();
      expect(sys.machine.usedFrames).toBe(0);
    }
  });
});
