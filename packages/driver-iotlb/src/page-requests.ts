/**
 * The iotlb fault handler: a batch of the device's faults serviced as page requests. Each distinct
 * page once, grouped into aligned fault windows, one core deviceFault per window (a step
 * generator, so the scheduler interleaves CPU threads at the core's preemption points), clipped by
 * the core's errors, cancelling what the core refuses; the window in progress tells the mirror
 * callbacks what the device asked for.
 */
import {
  CANCEL_ERRNOS,
  type Device,
  type DeviceContext,
  type DeviceFaultBatch,
  type HmmCore,
  type HmmDriver,
} from "@hmmkit/core";
import type { TranslationCompletions } from "./completions.js";
import { FaultGrouping, PAGE_READ, PAGE_WRITE } from "./fault-grouping.js";
import { MAX_FAULT_WINDOW } from "./options.js";
import { type DeviceTlb, TLB_HUGE, TLB_MISS, TLB_VALID } from "./tlb.js";

const PAGE = 4096;
const MISS = TLB_MISS;
const EFAULT = CANCEL_ERRNOS.indexOf("EFAULT");
const EPERM = CANCEL_ERRNOS.indexOf("EPERM");
const ENOMEM = CANCEL_ERRNOS.indexOf("ENOMEM");
/** tryFault: the device failed meanwhile (stop servicing). */
const DEVICE_GONE = -1;
/** tryFault: the core asked to come back later (EBUSY, EAGAIN): leave the entries to replay. */
const TRY_AGAIN = -2;

/**
 * The fault in progress: pages [first, first + pages) of address space `mm`, `mark[i]` set for
 * the faulting ones. While `open`, mirror callbacks cache only these pages (the device's
 * translation requests) and record completions for the marked ones.
 */
export class FaultWindow {
  open = false;
  mm = 0;
  first = 0;
  pages = 0;
  readonly mark = new Uint8Array(MAX_FAULT_WINDOW);
}

/** Services fault batches for one iotlb device. */
export class PageRequests {
  /** The fault in progress (read by the mirror callbacks). */
  readonly window = new FaultWindow();
  private grouping: FaultGrouping;
  private dev: Device | null = null;
  private lastMm: ReturnType<HmmCore["mmById"]> = undefined;

  constructor(
    private readonly owner: HmmDriver,
    private readonly ctx: DeviceContext,
    private readonly core: HmmCore,
    private readonly tlb: DeviceTlb,
    private readonly completions: TranslationCompletions,
    private readonly faultWindow: number,
    capacity: number,
  ) {
    this.grouping = new FaultGrouping(capacity);
  }

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
  *service(batch: DeviceFaultBatch): Generator<string, void, void> {
    const dev = this.self();
    if (this.grouping.capacity < batch.count) this.grouping = new FaultGrouping(batch.capacity);
    const g = this.grouping;
    const window = this.faultWindow;
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
        this.window.open = false;
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
        this.window.open = false;
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
      this.window.open = false;
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
    const win = this.window;
    const mark = win.mark;
    mark.fill(0, 0, pages);
    if (w < 0) mark[0] = 1;
    else {
      const g = this.grouping;
      for (let p = g.windowFirstPage[w]; p >= 0; p = g.pageNext[p]) mark[g.pageVpn[p] - first] = 1;
    }
    win.mm = mmId;
    win.first = first;
    win.pages = pages;
    win.open = true;
  }

  /** This driver's Device (looked up once: it does not exist yet while the driver is built). */
  private self(): Device {
    if (this.dev === null || this.dev.driver !== this.owner) this.dev = this.core.device(this.ctx.name);
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
