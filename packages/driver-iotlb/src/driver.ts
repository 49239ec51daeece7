import {
  DEFAULT_FAULT_BUFFER,
  type DeviceContext,
  type DeviceFaultBatch,
  type DeviceTranslation,
  HMM_PFN_DEVICE_PRIVATE,
  HMM_PFN_EXCLUSIVE,
  HMM_PFN_WRITE,
  type HmmCore,
  type HmmDriver,
  type MmuNotifyEvent,
  TOKENS,
} from "@hmmkit/core";
import { inject, injectable } from "tsyringe";
import { TranslationCompletions } from "./completions.js";
import { type IotlbOptions, parseIotlbOptions } from "./options.js";
import { type FaultWindow, PageRequests } from "./page-requests.js";
import {
  DeviceTlb,
  NOT_LAST_HIT,
  TLB_DEVICE,
  TLB_EXCLUSIVE,
  TLB_HUGE,
  TLB_VALID,
  TLB_WRITE,
  type TlbDropCount,
} from "./tlb.js";

const PAGE = 4096;
const HUGE_PAGES = 512;
const DEVICE = TLB_DEVICE;
const EXCLUSIVE = TLB_EXCLUSIVE;

/** The TLB bits of a page reported with HMM_PFN_* `flags`. */
function tlbFlags(flags: number): number {
  return (
    (flags & HMM_PFN_WRITE ? TLB_WRITE : 0) |
    (flags & HMM_PFN_DEVICE_PRIVATE ? DEVICE : 0) |
    (flags & HMM_PFN_EXCLUSIVE ? EXCLUSIVE : 0)
  );
}

/**
 * A device with no mirror table (ATS/PRI, RDMA ODP): its only translation state is a small
 * set-associative TLB filled by the per-PTE callbacks. A TLB miss is a page request (a device
 * fault of the page, or of the aligned `faultWindow` around it); invalidations flush the matching
 * entries. Its memory is the TLB's, whatever the process maps. It never migrates memory to itself;
 * its copy callbacks still copy correctly when the core moves pages for it (explicit migrations,
 * eviction, removal).
 */
@injectable()
export class IotlbDriver implements HmmDriver {
  /** Settings, defaults filled in. */
  readonly options: IotlbOptions;
  /** The TLB (inspect it, do not write it). */
  readonly tlb: DeviceTlb;
  /** Translations held for stalled accesses until they replay (see completions.ts). */
  readonly completions: TranslationCompletions;
  private readonly requests: PageRequests;
  /** The fault in progress in handleFaults (the pages the device asked for). */
  private readonly window: FaultWindow;
  private readonly drop: TlbDropCount = { entries: 0, pages: 0 };

  constructor(
    @inject(TOKENS.DeviceContext) private readonly ctx: DeviceContext,
    @inject(TOKENS.HmmCore) core: HmmCore,
  ) {
    this.options = parseIotlbOptions(ctx.config);
    this.tlb = new DeviceTlb(this.options.tlbEntries, this.options.tlbWays);
    this.completions = new TranslationCompletions();
    this.requests = new PageRequests(
      this,
      ctx,
      core,
      this.tlb,
      this.completions,
      this.options.faultWindow,
      (ctx.config.faultBuffer as number | undefined) ?? DEFAULT_FAULT_BUFFER,
    );
    this.window = this.requests.window;
    // The TLB is the device's only translation structure, fixed at construction: nothing the
    // device mirrors changes it (completions are request state, see completions.ts).
    ctx.stats.setMirrorBytes(this.tlb.bytes);
  }

  // ---- the translation hardware ---------------------------------------------------------------

  translate(mmId: number, va: number, write: boolean): number {
    // The hot path, small enough to inline into the device's access loop: no stalled access
    // waiting for a held translation, and the page in the TLB's last-hit entry. The rest
    // (held translations, the sets) is the TLB's miss side, kept out of line.
    const c = this.completions;
    if (c.pending === 0) {
      const r = this.tlb.lookupLastHit(mmId, va / PAGE, write);
      if (r !== NOT_LAST_HIT) return r;
    }
    return this.tlb.lookupMiss(mmId, va / PAGE, write, c);
  }

  // ---- per-PTE callbacks ------------------------------------------------------------------------

  mirrorPte(mmId: number, va: number, pfn: number, flags: number): void {
    const vpn = va / PAGE;
    const f = tlbFlags(flags);
    const w = this.window;
    if (!w.open) {
      this.tlb.fill(mmId, vpn, pfn, f);
      return;
    }
    // The rest of a PMD reported page by page (no pmdCallback) is not what the device asked for.
    const off = vpn - w.first;
    if (mmId !== w.mm || off < 0 || off >= w.pages) return;
    this.tlb.fill(mmId, vpn, pfn, f);
    if (w.mark[off] !== 0) this.completions.record(mmId, vpn, pfn, f);
  }

  mirrorPmd(mmId: number, va: number, pfn: number, flags: number): void {
    const hvpn = va / PAGE;
    const f = tlbFlags(flags);
    const huge = this.options.hugeEntries;
    if (huge) this.tlb.fillHuge(mmId, hvpn, pfn, f);
    const w = this.window;
    if (!w.open || mmId !== w.mm) return;
    // Without huge entries the device caches the pages it asked for at 4 KiB, as an ATC that
    // supports only the base page size gets them from the IOMMU.
    const lo = Math.max(w.first, hvpn);
    const hi = Math.min(w.first + w.pages, hvpn + HUGE_PAGES);
    for (let v = lo; v < hi; v++) {
      if (!huge) this.tlb.fill(mmId, v, pfn + (v - hvpn), f);
      if (w.mark[v - w.first] !== 0) this.completions.record(mmId, v, pfn + (v - hvpn), f);
    }
  }

  invalidate(mmId: number, start: number, end: number, _event: MmuNotifyEvent, _owner: number | null): void {
    // Every event flushes, MIGRATE of its own pages included: an ATC entry names a frame, and the
    // frame changes. The range may be all of user space (RELEASE): scan the TLB, not the range.
    const first = Math.floor(start / PAGE);
    const last = Math.ceil(end / PAGE);
    this.tlb.invalidate(mmId, first, last, this.drop);
    this.completions.invalidate(mmId, first, last);
    this.countFlush();
  }

  unbind(mmId: number): void {
    this.tlb.dropMm(mmId, this.drop);
    this.completions.invalidate(mmId, 0, Number.POSITIVE_INFINITY);
    this.countFlush();
  }

  private countFlush(): void {
    if (this.drop.entries === 0) return;
    this.ctx.stats.tlbFlushes++;
    this.ctx.stats.pagesDropped += this.drop.pages;
  }

  copyToDevice(_mmId: number, _va: number, spfn: number, dpfn: number): void {
    if (spfn < 0) this.ctx.dma.zeroDevicePage(dpfn);
    else this.ctx.dma.systemToDevice(spfn, dpfn);
  }

  copyFromDevice(_mmId: number, _va: number, dpfn: number, spfn: number): void {
    this.ctx.dma.deviceToSystem(dpfn, spfn);
  }

  *translations(): Iterable<DeviceTranslation> {
    const t = this.tlb;
    for (let e = 0; e < t.entries; e++) {
      const f = t.flags[e];
      if ((f & TLB_VALID) === 0) continue;
      yield translation(t.mm[e], t.vpn[e], t.pfn[e], f, f & TLB_HUGE ? 9 : 0);
    }
    const c = this.completions;
    for (let s = 0; s < c.vpn.length; s++) {
      if (c.refs[s] === 0 || t.holds(c.mm[s], c.vpn[s])) continue;
      yield translation(c.mm[s], c.vpn[s], c.pfn[s], c.flags[s], 0);
    }
  }
  // ---- the fault handler (page requests) --------------------------------------------------------

  /** See PageRequests.service (page-requests.ts). */
  handleFaults(batch: DeviceFaultBatch): Generator<string, void, void> {
    return this.requests.service(batch);
  }
}

function translation(mmId: number, vpn: number, pfn: number, f: number, order: number): DeviceTranslation {
  return {
    mmId,
    va: vpn * PAGE,
    pfn,
    order,
    writable: (f & TLB_WRITE) !== 0,
    devicePrivate: (f & DEVICE) !== 0,
    exclusive: (f & EXCLUSIVE) !== 0,
  };
}
