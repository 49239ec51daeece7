import {
  createHmm,
  type DeviceContext,
  type DeviceTranslation,
  HMM_API_VERSION,
  type HmmDriver,
  TOKENS,
} from "@hmmkit/core";
import {
  type ContentMode,
  contentDigest,
  MADV_HUGEPAGE,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  PROT_READ,
  PROT_WRITE,
} from "@hmmkit/mm";
import { inject, injectable } from "tsyringe";
import { describe, expect, it } from "vitest";

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

const MiB = 1024 * 1024;

/**
 * One fixed workload: stamped CPU writes over 4 KiB and THP memory, a fork whose child writes,
 * device faults, optional migrations to the device and back. Returns the parent's digests after
 * each phase.
 */
function run(mode: ContentMode, callbackMode: "per-pte" | "array", migrate: boolean): string[] {
  const { core, machine } = createHmm({ machine: { memoryBytes: 64 * MiB, contentMode: mode } });
  const dev = core.addDevice(
    { name: "copy-fake", apiVersion: HMM_API_VERSION, design: "per-pte", driver: CopyingFakeDriver },
    { name: "dev0", memoryPages: 2048, callbackMode },
  );
  const p = machine.createProcess();
  const rw = PROT_READ | PROT_WRITE;
  const small = p.mm.mmap({ length: MiB, prot: rw, flags: MAP_PRIVATE | MAP_ANONYMOUS });
  const huge = p.mm.mmap({ length: 4 * MiB, prot: rw, flags: MAP_PRIVATE | MAP_ANONYMOUS });
  p.mm.madvise(huge, 4 * MiB, MADV_HUGEPAGE);
  const out: string[] = [];
  for (let i = 0; i < 64; i++) p.writeStamp(small + ((i * 37) % 256) * 4096, 4096, 1000 + i);
  p.writeStamp(huge, 2 * MiB, 77);
  out.push(contentDigest(p.mm));
  const c = p.fork();
  c.writeStamp(small, 8 * 4096, 5);
  core.deviceFault(dev, p, small, small + MiB, true);
  core.deviceFault(dev, p, huge, huge + 4 * MiB, false);
  if (migrate) core.migrateToDevice(dev, p, small, small + MiB / 2);
  out.push(contentDigest(p.mm));
  p.writeStamp(small + 4096, 4096, 9);
  if (migrate) core.migrateToRam(dev, p, small, small + MiB);
  out.push(contentDigest(p.mm), contentDigest(c.mm));
  c.exit();
  p.exit();
  expect(machine.usedFrames).toBe(0);
  return out;
}

describe("content digests across packages", () => {
  it("depend only on the workload: same in bytes and tag mode, for either callback form, migrated or not", () => {
    const reference = run("bytes", "per-pte", false);
    // Faults, fork and migration change no content; the parent's write and the child's do.
    expect(reference[1]).toBe(reference[0]);
    expect(new Set(reference.slice(1)).size).toBe(3);
    for (const mode of ["bytes", "tag"] as const) {
      for (const cb of ["per-pte", "array"] as const) {
        for (const migrate of [false, true])
          expect(run(mode, cb, migrate), `${mode} ${cb} migrate=${migrate}`).toEqual(reference);
      }
    }
  });
});
