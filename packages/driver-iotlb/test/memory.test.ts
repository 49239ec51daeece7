import { DeviceAccesses } from "@hmmkit/core";
import { describe, expect, it } from "vitest";
import { addIotlb, MiB, makeSystem, mmapHuge, mmapPrivate, PAGE } from "./helpers.js";

/** Mirror `bytes` of 4 KiB or THP memory through an iotlb device; returns its counters. */
function mirror(bytes: number, huge: boolean, config: Record<string, unknown> = {}) {
  const sys = makeSystem({ memoryBytes: 512 * MiB, contentMode: "tag" });
  const p = sys.machine.createProcess();
  const base = huge ? mmapHuge(p, bytes / (2 * MiB)) : mmapPrivate(p, bytes);
  const { dev } = addIotlb(sys.core, config);
  const bytesAtStart = dev.stats.mirrorBytes;
  // The whole range through the per-PTE callbacks, then a device launch over its first MiB.
  sys.core.deviceFault(dev, p.mm, base, base + bytes, true);
  const acc = new DeviceAccesses();
  for (let i = 0; i < 256; i++) acc.write(base + i * PAGE, i);
  sys.core.runDevice(dev, p.mm, acc);
  return { stats: dev.stats, bytesAtStart };
}

describe("iotlb memory is constant whatever is mirrored", () => {
  it("1 MiB and 256 MiB mirrored at 4 KiB give the same mirror bytes: the TLB's, 25 bytes per entry", () => {
    const small = mirror(MiB, false);
    const large = mirror(256 * MiB, false);
    expect(large.stats.pagesMirrored).toBeGreaterThanOrEqual(65536);
    expect(small.stats.mirrorBytes).toBe(64 * 25);
    expect(large.stats.mirrorBytes).toBe(64 * 25);
    expect(large.stats.mirrorBytesPeak).toBe(64 * 25);
    expect(large.bytesAtStart).toBe(64 * 25);
  });

  it("with 2 MiB pages too, and it follows the configured TLB size only", () => {
    const huge = mirror(256 * MiB, true);
    expect(huge.stats.pmdCallbacks).toBeGreaterThanOrEqual(128);
    expect(huge.stats.mirrorBytes).toBe(64 * 25);
    expect(mirror(MiB, false, { tlbEntries: 1024, tlbWays: 8 }).stats.mirrorBytesPeak).toBe(1024 * 25);
  });
});
