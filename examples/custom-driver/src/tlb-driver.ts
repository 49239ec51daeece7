import {
  type DeviceContext,
  type DeviceTranslation,
  deviceFrameResult,
  HMM_API_VERSION,
  HMM_PFN_DEVICE_PRIVATE,
  HMM_PFN_WRITE,
  type HmmDriver,
  type HmmPlugin,
  TOKENS,
  TRANSLATE_MISS,
} from "@hmmkit/core";
import { inject, injectable } from "tsyringe";

/** A device without a page table: a small TLB (va -> pfn, flags) filled by the core's per-PTE callback. */
@injectable()
export class TinyTlbDriver implements HmmDriver {
  readonly tlb = new Map<number, { mmId: number; pfn: number; flags: number }>();
  constructor(@inject(TOKENS.DeviceContext) private readonly ctx: DeviceContext) {}

  mirrorPte(mmId: number, va: number, pfn: number, flags: number): void {
    this.tlb.set(va, { mmId, pfn, flags });
  }
  invalidate(mmId: number, start: number, end: number): void {
    for (const [va, e] of this.tlb) if (e.mmId === mmId && va >= start && va < end) this.tlb.delete(va);
  }
  /** The device's hardware lookup (HmmCore.runDevice): a hit gives the frame, a miss faults. */
  translate(mmId: number, va: number, write: boolean): number {
    const e = this.tlb.get(va);
    if (e === undefined || e.mmId !== mmId || (write && !(e.flags & HMM_PFN_WRITE))) return TRANSLATE_MISS;
    return e.flags & HMM_PFN_DEVICE_PRIVATE ? deviceFrameResult(e.pfn) : e.pfn;
  }
  copyToDevice(_mmId: number, _va: number, spfn: number, dpfn: number): void {
    if (spfn < 0) this.ctx.dma.zeroDevicePage(dpfn);
    else this.ctx.dma.systemToDevice(spfn, dpfn);
  }
  copyFromDevice(_mmId: number, _va: number, dpfn: number, spfn: number): void {
    this.ctx.dma.deviceToSystem(dpfn, spfn);
  }
  *translations(): Iterable<DeviceTranslation> {
    for (const [va, e] of this.tlb) {
      yield {
        mmId: e.mmId,
        va,
        pfn: e.pfn,
        order: 0,
        writable: (e.flags & HMM_PFN_WRITE) !== 0,
        devicePrivate: (e.flags & HMM_PFN_DEVICE_PRIVATE) !== 0,
      };
    }
  }
}

/** The plugin descriptor the package exports. */
export const plugin: HmmPlugin = {
  name: "tiny-tlb",
  apiVersion: HMM_API_VERSION,
  design: "per-pte",
  driver: TinyTlbDriver,
};
