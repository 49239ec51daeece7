/**
 * A fault batch grouped the way the iotlb fault handler services it: its distinct pages (a page
 * raised several times, by reads and writes, is one page needing the strongest access) and the
 * aligned fault windows holding them, both in arrival order. Scratch typed arrays sized by the
 * fault buffer, reused for every batch.
 */
import { DEVICE_READ, type DeviceFaultBatch } from "@hmmkit/core";

/** Page access bits: some entry of the page reads, some entry writes (or is an atomic). */
export const PAGE_READ = 1;
export const PAGE_WRITE = 2;

/** The distinct pages and windows of one batch. */
export class FaultGrouping {
  /** Distinct pages. */
  pages = 0;
  /** Per page: address space, page number, PAGE_READ | PAGE_WRITE bits, window index. */
  pageMm: Int32Array;
  pageVpn: Float64Array;
  pageAccess: Uint8Array;
  pageWindow: Int32Array;
  /** Per page, once serviced: index in CANCEL_ERRNOS of the error of its read and its write (0: none). */
  readError: Uint8Array;
  writeError: Uint8Array;
  /** Per page: the next page of its window (-1 at the end), so a window's pages are a list. */
  pageNext: Int32Array;
  /** Per batch entry: its page. */
  entryPage: Int32Array;
  /** Distinct windows. */
  windows = 0;
  /** Per window: address space, first page number, 1 if a page in it writes, pages of the batch in it. */
  windowMm: Int32Array;
  windowVpn: Float64Array;
  windowWrite: Uint8Array;
  windowFaulting: Int32Array;
  /** Per window: its first and last page (the list through pageNext, in arrival order). */
  windowFirstPage: Int32Array;
  windowLastPage: Int32Array;

  constructor(capacity: number) {
    this.pageMm = new Int32Array(capacity);
    this.pageVpn = new Float64Array(capacity);
    this.pageAccess = new Uint8Array(capacity);
    this.pageWindow = new Int32Array(capacity);
    this.readError = new Uint8Array(capacity);
    this.writeError = new Uint8Array(capacity);
    this.pageNext = new Int32Array(capacity);
    this.entryPage = new Int32Array(capacity);
    this.windowMm = new Int32Array(capacity);
    this.windowVpn = new Float64Array(capacity);
    this.windowWrite = new Uint8Array(capacity);
    this.windowFaulting = new Int32Array(capacity);
    this.windowFirstPage = new Int32Array(capacity);
    this.windowLastPage = new Int32Array(capacity);
  }

  /** Entries this grouping can hold. */
  get capacity(): number {
    return this.entryPage.length;
  }

  /** Group `batch` into pages and windows of `windowPages` pages (a power of two). */
  group(batch: DeviceFaultBatch, windowPages: number): void {
    this.pages = 0;
    this.windows = 0;
    let last = -1;
    for (let k = 0; k < batch.count; k++) {
      const mmId = batch.mmId[k];
      const vpn = batch.va[k] / 4096;
      const bit = batch.access[k] === DEVICE_READ ? PAGE_READ : PAGE_WRITE;
      // Streams raise runs of one page: try the last page first.
      let p = last >= 0 && this.pageVpn[last] === vpn && this.pageMm[last] === mmId ? last : -1;
      for (let j = 0; p < 0 && j < this.pages; j++)
        if (this.pageVpn[j] === vpn && this.pageMm[j] === mmId) p = j;
      if (p < 0) p = this.addPage(mmId, vpn, windowPages);
      this.pageAccess[p] |= bit;
      if (bit === PAGE_WRITE) this.windowWrite[this.pageWindow[p]] = 1;
      this.entryPage[k] = p;
      last = p;
    }
  }

  private addPage(mmId: number, vpn: number, windowPages: number): number {
    const p = this.pages++;
    this.pageMm[p] = mmId;
    this.pageVpn[p] = vpn;
    this.pageAccess[p] = 0;
    this.readError[p] = 0;
    this.writeError[p] = 0;
    // An aligned window: the page number with its low log2(windowPages) bits cleared.
    const first = vpn - (vpn % windowPages);
    let w = -1;
    for (let j = this.windows - 1; j >= 0 && w < 0; j--)
      if (this.windowVpn[j] === first && this.windowMm[j] === mmId) w = j;
    if (w < 0) {
      w = this.windows++;
      this.windowMm[w] = mmId;
      this.windowVpn[w] = first;
      this.windowWrite[w] = 0;
      this.windowFaulting[w] = 0;
      this.windowFirstPage[w] = p;
    } else this.pageNext[this.windowLastPage[w]] = p;
    this.windowLastPage[w] = p;
    this.pageNext[p] = -1;
    this.windowFaulting[w]++;
    this.pageWindow[p] = w;
    return p;
  }
}
