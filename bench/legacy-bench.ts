/**
 * HMM v12's shared-mirror path against per-PTE paths on the same 1 GiB device fault (CPU pages
 * present, device mirror cold), measured in the same run:
 *
 * - legacy: `hmm_mirror_fault` over 1 GiB (@hmmkit/legacy: the core's walk fills hmm_pt through
 *   the shared-mirror client, the driver's update event then reads hmm_pt and programs
 *   @hmmkit/driver-legacy's own table);
 * - gpu: `HmmCore.deviceFault` over the same 1 GiB with @hmmkit/driver-gpu, which fills its own
 *   device page table from the core's per-PTE callbacks;
 * - flat table: the same with a minimal per-PTE driver defined here (`FlatTablePerPteDriver`),
 *   which writes each reported frame and flags into one typed-array slot per page: the least a
 *   per-PTE driver with its own table can do.
 *
 * Each call starts from a cold device: the device is unbound from the address space first
 * (untimed), which drops its table (and the legacy mirror with its hmm_pt).
 */
import { type DeviceTranslation, HMM_API_VERSION, type HmmCore, type HmmDriver } from "@hmmkit/core";
import gpu from "@hmmkit/driver-gpu";
import { attachLegacy } from "@hmmkit/driver-legacy";
import type { Mm } from "@hmmkit/legacy";
import type { Bench } from "./harness.js";

const GiB = 1024 ** 3;

/** Names of the cases. */
export const LEGACY_CASES = {
  legacy: "legacy: hmm_mirror_fault 1 GiB (hmm_pt fill + driver table), 4 KiB-backed",
  gpu: "gpu: per-PTE device fault 1 GiB into its own table, 4 KiB-backed",
  flat: "flat table: per-PTE device fault 1 GiB into one typed array, 4 KiB-backed",
  legacyHuge: "legacy: hmm_mirror_fault 1 GiB, THP-backed",
  gpuHuge: "gpu: per-PTE device fault 1 GiB, THP-backed",
} as const;

/**
 * A per-PTE driver keeping the smallest own table there is: one Int32Array slot per page of a
 * 1 GiB window (pfn + 1, 0 for none) and one of flags. Bench-only: it mirrors one window of one
 * address space and drops everything on any invalidation.
 */
class FlatTablePerPteDriver implements HmmDriver {
  base = 0;
  readonly pfn = new Int32Array(GiB / 4096);
  readonly flags = new Int32Array(GiB / 4096);
  mirrorPte(_mmId: number, va: number, pfn: number, flags: number): void {
    const i = (va - this.base) / 4096;
    this.pfn[i] = pfn + 1;
    this.flags[i] = flags;
  }
  mirrorPtes(_mmId: number, va: number, count: number, pfns: Int32Array, flags: Int32Array): void {
    const i0 = (va - this.base) / 4096;
    for (let i = 0; i < count; i++) {
      this.pfn[i0 + i] = pfns[i] + 1;
      this.flags[i0 + i] = flags[i];
    }
  }
  invalidate(): void {
    this.pfn.fill(0);
  }
  unbind(): void {
    this.pfn.fill(0);
  }
  copyToDevice(): void {}
  copyFromDevice(): void {}
  translations(): Iterable<DeviceTranslation> {
    return [];
  }
}

/** Add the cases on `core`, faulting the 1 GiB 4 KiB-backed range `small` and THP range `huge` of `mm`. */
export function addLegacyCases(bench: Bench, core: HmmCore, mm: Mm, small: number, huge: number): void {
  const { device: leg, mirror: sm } = attachLegacy(core, { name: "legacy-bench", memoryPages: 512 });
  const g = core.addDevice(gpu, { name: "gpu-bench", memoryPages: 512 });
  const flat = core.addDevice(
    { name: "flat-table", apiVersion: HMM_API_VERSION, design: "per-pte", driver: FlatTablePerPteDriver },
    { name: "flat-bench", memoryPages: 512, callbackMode: "array", pmdCallback: false },
  );
  (flat.driver as FlatTablePerPteDriver).base = small;
  const coldLegacy = () => {
    core.unbind(leg, mm);
    sm.register(mm);
  };
  const legacyFault = (start: number) => () => {
    const r = sm.mirror(mm.id).fault(start, start + GiB, false);
    if (r !== 0) throw new Error(`hmm_mirror_fault returned ${r}`);
  };
  bench.addWithSetup(LEGACY_CASES.legacy, GiB / 4096, coldLegacy, legacyFault(small));
  bench.addWithSetup(LEGACY_CASES.legacyHuge, GiB / 4096, coldLegacy, legacyFault(huge));
  bench.addWithSetup(
    LEGACY_CASES.gpu,
    GiB / 4096,
    () => core.unbind(g, mm),
    () => {
      core.deviceFault(g, mm, small, small + GiB, false);
    },
  );
  bench.addWithSetup(
    LEGACY_CASES.gpuHuge,
    GiB / 4096,
    () => core.unbind(g, mm),
    () => {
      core.deviceFault(g, mm, huge, huge + GiB, false);
    },
  );
  bench.addWithSetup(
    LEGACY_CASES.flat,
    GiB / 4096,
    () => core.unbind(flat, mm),
    () => {
      core.deviceFault(flat, mm, small, small + GiB, false);
    },
  );
}
