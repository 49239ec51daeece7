import {
  CANCEL_ERRNOS,
  DEFAULT_FAULT_BUFFER,
  type Device,
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
import { NOT_HELD, TranslationCompletions } from "./completions.js";
import { FaultGrouping, PAGE_READ, PAGE_WRITE } from "./fault-grouping.js";
import { type IotlbOptions, MAX_FAULT_WINDOW, parseIotlbOptions } from "./options.js";
import {
  DeviceTlb,
  TLB_DEVICE,
  TLB_EXCLUSIVE,
  TLB_HUGE,
  TLB_MISS,
  TLB_VALID,
  TLB_WRITE,
  type TlbDropCount,
} from "./tlb.js";

const PAGE = 4096;
const HUGE_PAGES = 512;
const MISS = TLB_MISS;
const DEVICE = TLB_DEVICE;
const EXCLUSIVE = TLB_EXCLUSIVE;

const EFAULT = CANCEL_ERRNOS.indexOf("EFAULT");
const EPERM = CANCEL_ERRNOS.indexOf("EPERM");
const ENOMEM = CANCEL_ERRNOS.indexOf("ENOMEM");
/** tryFault: the device failed meanwhile (stop servicing). */
const DEVICE_GONE = -1;
/** tryFault: the core asked to come back later (EBUSY, EAGAIN): leave the entries to replay. */
const TRY_AGAIN = -2;

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
  private grouping: FaultGrouping;
  private readonly drop: TlbDropCount = { entries: 0, pages: 0 };
  private dev: Device | null = null;
  private lastMm: ReturnType<HmmCore["mmById"]> = undefined;
  // The fault in progress in handleFaults: mirror callbacks fill only the pages it asked for
  // (the device's translation requests), and record completions for its faulting pages.
  private winOpen = false;
  private winMm = 0;
  private winFirst = 0;
  private winPages = 0;
  private readonly winMark = new Uint8Array(MAX_FAULT_WINDOW);

  constructor(
    @inject(TOKENS.DeviceContext) private readonly ctx: DeviceContext,
    @inject(TOKENS.HmmCore) private readonly core: HmmCore,
  ) {
    this.options = parseIotlbOptions(ctx.config);
    this.tlb = new DeviceTlb(this.options.tlbEntries, this.options.tlbWays);
    this.completions = new TranslationCompletions();
    this.grouping = new FaultGrouping((ctx.config.faultBuffer as number | undefined) ?? DEFAULT_FAULT_BUFFER);
    // The TLB is the device's only translation structure, fixed at construction: nothing the
    // device mirrors changes it (completions are request state, see completions.ts).
    ctx.stats.setMirrorBytes(this.tlb.bytes);
  }

  // ---- the translation hardware ---------------------------------------------------------------

  translate(mmId: number, va: number, write: boolean): number {
    const vpn = va / PAGE;
    const c = this.completions;
    if (c.pending !== 0) {
      const slot = c.take(mmId, vpn);
      if (slot !== NOT_HELD) return this.complete(mmId, vpn, write, slot);
    }
    return this.tlb.lookup(mmId, vpn, write);
  }

  /** A stalled access replays with the translation its page request got, and the TLB caches it. */
  private complete(mmId: number, vpn: number, write: boolean, slot: number): number {
    const c = this.completions;
    const pfn = c.pfn[slot];
    const f = c.flags[slot];
    c.resetIfIdle();
    const r = this.tlb.lookup(mmId, vpn, write);
    if (r !== MISS) return r;
    this.tlb.fill(mmId, vpn, pfn, f);
    if (write && (f & TLB_WRITE) === 0) return MISS;
    return f & DEVICE ? -2 - pfn : pfn;
  }

  // ---- per-PTE callbacks ------------------------------------------------------------------------

  mirrorPte(mmId: number, va: number, pfn: number, flags: number): void {
    const vpn = va / PAGE;
    const f = tlbFlags(flags);
    if (!this.winOpen) {
      this.tlb.fill(mmId, vpn, pfn, f);
      return;
    }
    // The rest of a PMD reported page by page (no pmdCallback) is not what the device asked for.
    const off = vpn - this.winFirst;
    if (mmId !== this.winMm || off < 0 || off >= this.winPages) return;
    this.tlb.fill(mmId, vpn, pfn, f);
    if (this.winMark[off] !== 0) this.completions.record(mmId, vpn, pfn, f);
  }

  mirrorPmd(mmId: number, va: number, pfn: number, flags: number): void {
    const hvpn = va / PAGE;
    const f = tlbFlags(flags);
    const huge = this.options.hugeEntries;
    if (huge) this.tlb.fillHuge(mmId, hvpn, pfn, f);
    if (!this.winOpen || mmId !== this.winMm) return;
    // Without huge entries the device caches the pages it asked for at 4 KiB, as an ATC that
    // supports only the base page size gets them from the IOMMU.
    const lo = Math.max(this.winFirst, hvpn);
    const hi = Math.min(this.winFirst + this.winPages, hvpn + HUGE_PAGES);
    for (let v = lo; v < hi; v++) {
      if (!huge) this.tlb.fill(mmId, v, pfn + (v - hvpn), f);
      if (this.winMark[v - this.winFirst] !== 0) this.completions.record(mmId, v, pfn + (v - hvpn), f);
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

  /**
   * Service a batch: each distinct page once (a write covers the reads of the page), grouped into
   * aligned windows of `faultWindow` pages, one deviceFault per window in arrival order. A window
   * the core refuses (EFAULT past the end of the VMA or on PROT_NONE, EPERM for a write to a
   * read-only VMA; the pages before the error stay faulted, as hmm_range_fault leaves them) is
   * clipped by faulting its faulting pages one by one; a page refused on its own has its entries
   * cancelled with the errno (a write refused with EPERM is retried as a read for the page's read
   * entries). That is the kernel's page request path for an SVA device: iommu_sva_handle_mm
   * (drivers/iommu/iommu-sva.c) answers IOMMU_PAGE_RESP_INVALID when the address has no VMA, the
   * VMA does not allow the access, or handle_mm_fault fails (out of memory included), and the
   * device fails the stalled requests. Each page here is its own page request group: within a
   * group the kernel's errors are sticky (iommu_sva_handle_iopf stops at the first failure and
   * fails the whole group), which would fail good pages with a bad neighbour.
   */
  *handleFaults(batch: DeviceFaultBatch): Generator<string, void, void> {
    const dev = this.self();
    if (this.grouping.capacity < batch.count) this.grouping = new FaultGrouping(batch.capacity);
    const g = this.grouping;
    const window = this.options.faultWindow;
    g.group(batch, window);
    this.completions.beginBatch();
    for (let w = 0; w < g.windows; w++) {
      const mm = this.mmOf(g.windowMm[w]);
      const start = g.windowVpn[w] * PAGE;
      // An earlier fault of this batch (a 2 MiB entry, a window) may have made it valid already.
      if (mm !== undefined && this.heldAlready(w)) continue;
      let err = EFAULT;
      if (mm !== undefined) {
        this.openWindow(g.windowMm[w], g.windowVpn[w], window, w);
        err = yield* this.tryFault(dev, mm, start, start + window * PAGE, g.windowWrite[w] === 1);
        this.winOpen = false;
      }
      if (err === DEVICE_GONE) return;
      if (err === 0) {
        this.ctx.stats.prefetchedPages += window - g.windowFaulting[w];
        continue;
      }
      if (err === TRY_AGAIN) continue;
      for (let p = g.windowFirstPage[w]; p >= 0; p = g.pageNext[p]) {
        // A one-page window already was this page's fault: reuse its error.
        const known = window === 1 || mm === undefined ? err : 0;
        if (!(yield* this.faultPage(dev, mm, p, known))) return;
      }
    }
    // Cancel what the core refused; every other entry's access waits for its page's completion.
    const c = this.completions;
    for (let k = 0; k < batch.count; k++) {
      const p = g.entryPage[k];
      const code = batch.isWrite(k) ? g.writeError[p] : g.readError[p];
      if (code > 0) batch.cancel(k, CANCEL_ERRNOS[code] as "EFAULT" | "EPERM" | "ENOMEM");
      else {
        const slot = c.recorded(g.pageMm[p], g.pageVpn[p]);
        if (slot >= 0) c.addRef(slot);
      }
    }
    c.resetIfIdle();
  }

  /**
   * Fault page `p` of the grouping on its own: for write if an entry writes, then for read if the
   * write was refused with EPERM and an entry reads. `known`: the error a fault of exactly this
   * page in its strongest access already gave (0: not tried). False if the device failed.
   */
  private *faultPage(
    dev: Device,
    mm: ReturnType<HmmCore["mmById"]>,
    p: number,
    known: number,
  ): Generator<string, boolean, void> {
    const g = this.grouping;
    const access = g.pageAccess[p];
    const va = g.pageVpn[p] * PAGE;
    const mmId = g.pageMm[p];
    let err = known;
    if (access & PAGE_WRITE) {
      if (err === 0 && mm !== undefined) {
        this.openWindow(mmId, g.pageVpn[p], 1, -1);
        err = yield* this.tryFault(dev, mm, va, va + PAGE, true);
        this.winOpen = false;
      }
      if (err === DEVICE_GONE) return false;
      if (err > 0) g.writeError[p] = err;
      if (err <= 0 || (access & PAGE_READ) === 0) return true;
      if (err !== EPERM) {
        g.readError[p] = err;
        return true;
      }
      err = 0;
    }
    if (err === 0 && mm !== undefined) {
      this.openWindow(mmId, g.pageVpn[p], 1, -1);
      err = yield* this.tryFault(dev, mm, va, va + PAGE, false);
      this.winOpen = false;
    }
    if (err === DEVICE_GONE) return false;
    if (err > 0) g.readError[p] = err;
    return true;
  }

  /** One deviceFault, its outcome as a number: 0 done, an errno index to cancel with, or DEVICE_GONE / TRY_AGAIN. */
  private *tryFault(
    dev: Device,
    mm: NonNullable<ReturnType<HmmCore["mmById"]>>,
    start: number,
    end: number,
    write: boolean,
  ): Generator<string, number, void> {
    try {
      yield* this.core.deviceFaultSteps(dev, mm, start, end, write);
      return 0;
    } catch (e) {
      if (dev.state !== "active" || dev.dispatcher.failed) return DEVICE_GONE;
      const errno = (e as { errno?: unknown } | null)?.errno;
      if (errno === "EFAULT") return EFAULT;
      if (errno === "EPERM") return EPERM;
      if (errno === "ENOMEM") return ENOMEM;
      if (errno === "EBUSY" || errno === "EAGAIN") return TRY_AGAIN;
      throw e;
    }
  }

  /**
   * True if the TLB already translates every faulting page of window `w` for its access: their
   * completions come from the TLB and no page request is sent.
   */
  private heldAlready(w: number): boolean {
    const g = this.grouping;
    const mmId = g.windowMm[w];
    for (let p = g.windowFirstPage[w]; p >= 0; p = g.pageNext[p])
      if (this.tlb.peek(mmId, g.pageVpn[p], (g.pageAccess[p] & PAGE_WRITE) !== 0) === MISS) return false;
    const t = this.tlb;
    for (let p = g.windowFirstPage[w]; p >= 0; p = g.pageNext[p]) {
      const vpn = g.pageVpn[p];
      const e = t.find(mmId, vpn);
      const f = t.flags[e];
      const pfn = f & TLB_HUGE ? t.pfn[e] + (vpn - t.vpn[e]) : t.pfn[e];
      this.completions.record(mmId, vpn, pfn, f & ~(TLB_HUGE | TLB_VALID));
    }
    return true;
  }

  /** Open the fault window [first, first + pages) of `mmId`, marking window `w`'s faulting pages (w < 0: page `first` alone). */
  private openWindow(mmId: number, first: number, pages: number, w: number): void {
    const mark = this.winMark;
    mark.fill(0, 0, pages);
    if (w < 0) mark[0] = 1;
    else {
      const g = this.grouping;
      for (let p = g.windowFirstPage[w]; p >= 0; p = g.pageNext[p]) mark[g.pageVpn[p] - first] = 1;
    }
    this.winMm = mmId;
    this.winFirst = first;
    this.winPages = pages;
    this.winOpen = true;
  }

  /** This driver's Device (looked up once: it does not exist yet while the driver is built). */
  private self(): Device {
    if (this.dev === null || this.dev.driver !== this) this.dev = this.core.device(this.ctx.name);
    return this.dev;
  }

  /** The live address space `mmId`, if it still exists. */
  private mmOf(mmId: number): ReturnType<HmmCore["mmById"]> {
    const m = this.lastMm;
    if (m !== undefined && m.id === mmId && !m.exited) return m;
    const found = this.core.mmById(mmId);
    this.lastMm = found;
    return found !== undefined && !found.exited ? found : undefined;
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
