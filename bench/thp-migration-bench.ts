import {
  createHmm,
  type DeviceContext,
  type DeviceTranslation,
  HMM_API_VERSION,
  type HmmDriver,
  TOKENS,
} from "@hmmkit/core";
import { HPAGE_PMD_SIZE, MADV_HUGEPAGE, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE } from "@hmmkit/mm";
import { inject, injectable } from "tsyringe";
import type { Bench } from "./harness.js";

/** Bytes moved each way per call: 16 THPs. */
const BYTES = 16 * HPAGE_PMD_SIZE;

/** Names of the two cases (benchmark_thp_migration's HUGEPAGE round trip, with and without compound). */
export const THP_MIGRATION_CASES = {
  compound: "core: 32 MiB THP round trip to device and back, compoundMigration",
  split: "core: 32 MiB THP round trip to device and back, THPs split",
};

/** A driver that copies pages with the device's DMA engine and keeps no mirror. */
@injectable()
class CopyOnlyFakeDriver implements HmmDriver {
  constructor(@inject(TOKENS.DeviceContext) private readonly ctx: DeviceContext) {}
  mirrorPte(): void {}
  mirrorPmd(): void {}
  invalidate(): void {}
  copyToDevice(_mm: number, _va: number, spfn: number, dpfn: number): void {
    if (spfn < 0) this.ctx.dma.zeroDevicePage(dpfn);
    else this.ctx.dma.systemToDevice(spfn, dpfn);
  }
  copyFromDevice(_mm: number, _va: number, dpfn: number, spfn: number): void {
    this.ctx.dma.deviceToSystem(dpfn, spfn);
  }
  *translations(): Iterable<DeviceTranslation> {}
}

/**
 * hmm-tests benchmark_thp_migration's HUGEPAGE case: 32 MiB of written THPs migrated to the
 * device and back, once through a device with compoundMigration (16 device-private PMDs, 16 THPs
 * home) and once through one without (the THPs are split on the way out and come home as 4 KiB
 * pages). Each case has its own machine, in tag mode. Items are pages moved (both ways).
 */
export function addThpMigrationCases(bench: Bench): void {
  for (const [name, compound] of [
    [THP_MIGRATION_CASES.compound, true],
    [THP_MIGRATION_CASES.split, false],
  ] as const) {
    const { core, machine } = createHmm({ machine: { contentMode: "tag", memoryBytes: 256 * 1024 * 1024 } });
    const dev = core.addDevice(
      { name: "copy-only", apiVersion: HMM_API_VERSION, design: "per-pte", driver: CopyOnlyFakeDriver },
      { name: "gpu0", memoryPages: 2 * (BYTES / 4096), compoundMigration: compound },
    );
    const p = machine.createProcess();
    const raw = p.mm.mmap({
      length: BYTES + HPAGE_PMD_SIZE,
      prot: PROT_READ | PROT_WRITE,
      flags: MAP_PRIVATE | MAP_ANONYMOUS,
    });
    const base = raw - (raw % HPAGE_PMD_SIZE) + HPAGE_PMD_SIZE;
    p.mm.madvise(base, BYTES, MADV_HUGEPAGE);
    p.writeStamp(base, BYTES, 0x7e57);
    bench.add(name, 2 * (BYTES / 4096), () => {
      core.migrateToDevice(dev, p, base, base + BYTES);
      core.migrateToRam(dev, p, base, base + BYTES);
    });
  }
}
