import type { MmuNotifyEvent } from "@hmmkit/mm";
import type { DeviceTranslation, HmmDriver } from "./contract.js";
import { DriverError } from "./errors.js";
import type { DeviceStats } from "./stats.js";

/** How the core reports pages to a driver. */
export type CallbackMode = "per-pte" | "array";

/**
 * The one place that calls a driver. It counts calls, routes pages to the callback form the
 * driver uses, and turns a throw into a DriverError naming device, driver, callback and address;
 * the first failure is handed to `onFailure` (the core's fault containment) and every later call
 * is skipped. Hot loops keep the try/catch outside the per-page loop and the call site
 * monomorphic (same driver, same argument shape).
 */
export class DriverDispatcher {
  failure: DriverError | null = null;
  private readonly pfnScratch = new Int32Array(512);
  private readonly flagScratch = new Int32Array(512);

  constructor(
    readonly deviceName: string,
    readonly driverName: string,
    readonly driver: HmmDriver,
    readonly mode: CallbackMode,
    /** Whether whole PMDs go to `mirrorPmd`. */
    readonly pmdCallback: boolean,
    readonly stats: DeviceStats,
    private readonly onFailure: (err: DriverError) => void,
  ) {}

  /** True once the driver has failed. */
  get failed(): boolean {
    return this.failure !== null;
  }

  private fail(callback: string, address: number | null, cause: unknown): void {
    if (this.failure !== null) return;
    this.failure = new DriverError(this.deviceName, this.driverName, callback, address, cause);
    this.stats.driverFailures++;
    this.onFailure(this.failure);
  }

  /**
   * Report `count` pages from `va`: page i has frame `pfns[pfnOff + i]` and HMM flags
   * `flags[flagOff + i]`. False if the driver failed.
   */
  mirrorRange(
    mmId: number,
    va: number,
    count: number,
    pfns: Int32Array,
    pfnOff: number,
    flags: Int32Array,
    flagOff: number,
  ): boolean {
    if (this.failure !== null) return false;
    const d = this.driver;
    let cur = va;
    try {
      if (this.mode === "array") {
        // The driver gets copies in the dispatcher's scratch buffers, never a view of the caller's
        // arrays (for a device fault, `pfns` is the CPU page table itself): a driver that
        // translates in place must not be able to change CPU state. `count` is at most 512.
        const p = this.pfnScratch;
        const f = this.flagScratch;
        if (p !== pfns) p.set(pfns.subarray(pfnOff, pfnOff + count));
        if (f !== flags) f.set(flags.subarray(flagOff, flagOff + count));
        this.stats.arrayCallbacks++;
        d.mirrorPtes!(mmId, va, count, p.subarray(0, count), f.subarray(0, count));
      } else {
        for (let i = 0; i < count; i++) {
          cur = va + i * 4096;
          d.mirrorPte!(mmId, cur, pfns[pfnOff + i], flags[flagOff + i]);
        }
        this.stats.pteCallbacks += count;
      }
    } catch (e) {
      this.fail(this.mode === "array" ? "mirrorPtes" : "mirrorPte", cur, e);
      return false;
    }
    return true;
  }

  /** Report a whole huge PMD at `va` (2 MiB aligned) mapping `pfn`..`pfn + 511` with `flags` (order 9 set). */
  mirrorPmd(mmId: number, va: number, pfn: number, flags: number): boolean {
    if (this.failure !== null) return false;
    if (this.pmdCallback) {
      try {
        this.stats.pmdCallbacks++;
        this.driver.mirrorPmd!(mmId, va, pfn, flags);
      } catch (e) {
        this.fail("mirrorPmd", va, e);
        return false;
      }
      return true;
    }
    const p = this.pfnScratch;
    const f = this.flagScratch;
    for (let i = 0; i < 512; i++) {
      p[i] = pfn + i;
      f[i] = flags;
    }
    return this.mirrorRange(mmId, va, 512, p, 0, f, 0);
  }

  /** Deliver an invalidation. False if the driver failed (its translations are then void anyway). */
  invalidate(mmId: number, start: number, end: number, event: MmuNotifyEvent, owner: number | null): boolean {
    if (this.failure !== null) return false;
    try {
      this.stats.invalidations++;
      this.driver.invalidate(mmId, start, end, event, owner);
    } catch (e) {
      this.fail("invalidate", start, e);
      return false;
    }
    return true;
  }

  /** Ask the driver to copy a page to device memory. False if it failed. */
  copyToDevice(mmId: number, va: number, spfn: number, dpfn: number): boolean {
    if (this.failure !== null) return false;
    try {
      this.driver.copyToDevice(mmId, va, spfn, dpfn);
    } catch (e) {
      this.fail("copyToDevice", va, e);
      return false;
    }
    return true;
  }

  /** Ask the driver to copy a page back to system memory. False if it failed. */
  copyFromDevice(mmId: number, va: number, dpfn: number, spfn: number): boolean {
    if (this.failure !== null) return false;
    try {
      this.driver.copyFromDevice(mmId, va, dpfn, spfn);
    } catch (e) {
      this.fail("copyFromDevice", va, e);
      return false;
    }
    return true;
  }

  /** The driver's translations (empty once it failed: its state is discarded). */
  translations(): DeviceTranslation[] {
    if (this.failure !== null) return [];
    try {
      return [...this.driver.translations()];
    } catch (e) {
      this.fail("translations", null, e);
      return [];
    }
  }

  /** Tell the driver it no longer mirrors `mmId` (HmmCore.unbind). A throw fails the device. */
  unbind(mmId: number): void {
    if (this.failure !== null || typeof this.driver.unbind !== "function") return;
    try {
      this.driver.unbind(mmId);
    } catch (e) {
      this.fail("unbind", null, e);
    }
  }

  /** Tell the driver the device is going away. A throw here is recorded but changes nothing else. */
  release(): void {
    if (this.failure !== null || typeof this.driver.release !== "function") return;
    try {
      this.driver.release();
    } catch (e) {
      this.fail("release", null, e);
    }
  }
}
