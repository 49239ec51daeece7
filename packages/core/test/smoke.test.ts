import { MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE } from "@hmmkit/mm";
import { inject, injectable } from "tsyringe";
import { describe, expect, it } from "vitest";
import {
  createHmm,
  type DeviceContext,
  type DeviceTranslation,
  HMM_API_VERSION,
  type HmmDriver,
  TOKENS,
} from "../src/index.js";

@injectable()
class MapFakeDriver implements HmmDriver {
  readonly pt = new Map<string, { pfn: number; flags: number }>();
  constructor(@inject(TOKENS.DeviceContext) readonly ctx: DeviceContext) {}
  mirrorPte(mmId: number, va: number, pfn: number, flags: number): void {
    this.pt.set(`${mmId}:${va}`, { pfn, flags });
  }
  invalidate(mmId: number, start: number, end: number): void {
    for (const k of [...this.pt.keys()]) {
      const [m, v] = k.split(":").map(Number);
      if (m === mmId && v >= start && v < end) this.pt.delete(k);
    }
  }
  copyToDevice(_mm: number, _va: number, spfn: number, dpfn: number): void {
    if (spfn < 0) this.ctx.dma.zeroDevicePage(dpfn);
    else this.ctx.dma.systemToDevice(spfn, dpfn);
  }
  copyFromDevice(_mm: number, _va: number, dpfn: number, spfn: number): void {
    this.ctx.dma.deviceToSystem(dpfn, spfn);
  }
  *translations(): Iterable<DeviceTranslation> {}
}

describe("core smoke", () => {
  it("faults, invalidates and migrates", () => {
    const { core, machine } = createHmm({ machine: { memoryBytes: 64 << 20 } });
    const dev = core.addDevice(
      { name: "fake", apiVersion: HMM_API_VERSION, design: "per-pte", driver: MapFakeDriver },
      { name: "gpu0", memoryPages: 1024 },
    );
    const p = machine.createProcess();
    const a = p.mm.mmap({
      length: 1 << 20,
      prot: PROT_READ | PROT_WRITE,
      flags: MAP_PRIVATE | MAP_ANONYMOUS,
    });
    p.write(a, new Uint8Array([7, 8, 9]));
    const r = core.deviceFault(dev, p, a, a + (1 << 20), false);
    expect(r.pages).toBe(256);
    const drv = core.translations(dev);
    expect(drv).toEqual([]);
    p.mm.munmap(a + 4096, 4096);
    const m = core.migrateToDevice(dev, p, a, a + 4096);
    expect(m.migrated).toBe(1);
    expect(Array.from(p.read(a, 3))).toEqual([7, 8, 9]);
    p.exit();
    expect(machine.usedFrames).toBe(0);
    expect(dev.memory.used).toBe(0);
  });
});
