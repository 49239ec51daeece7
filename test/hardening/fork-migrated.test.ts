import {
  createHmm,
  type DeviceContext,
  type DeviceTranslation,
  HMM_API_VERSION,
  type HmmDriver,
  TOKENS,
} from "@hmmkit/core";
import {
  ENTRY_DEVICE_PRIVATE,
  ENTRY_KIND_MASK,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  PROT_READ,
  PROT_WRITE,
  type Process,
} from "@hmmkit/mm";
import { inject, injectable } from "tsyringe";
import { describe, expect, it } from "vitest";

const PAGE = 4096;
const MiB = 1024 * 1024;

/** A fake driver that mirrors nothing and copies pages with the DMA engine. */
@injectable()
class CopyingFakeDriver implements HmmDriver {
  constructor(@inject(TOKENS.DeviceContext) private readonly ctx: DeviceContext) {}
  mirrorPte(): void {}
  mirrorPtes(): void {}
  invalidate(): void {}
  copyToDevice(_m: number, _va: number, spfn: number, dpfn: number): void {
    if (spfn < 0) this.ctx.dma.zeroDevicePage(dpfn);
    else this.ctx.dma.systemToDevice(spfn, dpfn);
  }
  copyFromDevice(_m: number, _va: number, dpfn: number, spfn: number): void {
    this.ctx.dma.deviceToSystem(dpfn, spfn);
  }
  *translations(): Iterable<DeviceTranslation> {}
}

function pattern(n: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (seed + i * 13) & 255);
}

/** A process with `pages` never-touched private pages migrated to a device. */
function migratedUntouched(pages: number) {
  const { core, machine } = createHmm({ machine: { memoryBytes: 64 * MiB, contentMode: "bytes" } });
  const dev = core.addDevice(
    { name: "copying-fake", apiVersion: HMM_API_VERSION, design: "per-pte", driver: CopyingFakeDriver },
    { name: "gpu0", memoryPages: 256 },
  );
  const p = machine.createProcess();
  const a = p.mm.mmap({
    length: pages * PAGE,
    prot: PROT_READ | PROT_WRITE,
    flags: MAP_PRIVATE | MAP_ANONYMOUS,
  });
  expect(core.migrateToDevice(dev, p, a, a + pages * PAGE)).toEqual({
    selected: pages,
    migrated: pages,
    allocFailed: 0,
  });
  return { core, machine, dev, p, a };
}

/** The device frame the CPU entry at `va` points to (the page must be device-private). */
function devicePfn(p: Process, va: number): number {
  const pos = p.mm.pt.ptePos(va);
  expect(p.mm.pt.pteFlags[pos] & ENTRY_KIND_MASK).toBe(ENTRY_DEVICE_PRIVATE);
  return p.mm.pt.ptePfn[pos];
}

describe("fork after migrating never-touched memory to a device", () => {
  it("the child reads what the device wrote into memory the CPU never touched", () => {
    const { machine, dev, p, a } = migratedUntouched(8);
    const data = pattern(8 * PAGE, 3);
    for (let i = 0; i < 8; i++)
      dev.memory.content.writeBytes(devicePfn(p, a + i * PAGE), 0, data, i * PAGE, PAGE);
    const c = p.fork();
    expect(c.read(a, 8 * PAGE)).toEqual(data);
    expect(p.read(a, 8 * PAGE)).toEqual(data);
    c.exit();
    p.exit();
    expect(machine.usedFrames).toBe(0);
    expect(dev.memory.used).toBe(0);
  });

  it("the child reads what the CPU wrote after the migration", () => {
    const { machine, dev, p, a } = migratedUntouched(4);
    const data = pattern(4 * PAGE, 77);
    p.write(a, data);
    const c = p.fork();
    expect(c.read(a, 4 * PAGE)).toEqual(data);
    c.exit();
    p.exit();
    expect(machine.usedFrames).toBe(0);
    expect(dev.memory.used).toBe(0);
  });
});
