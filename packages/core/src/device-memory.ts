import { type ContentMode, ContentStore, MmError } from "@hmmkit/mm";

/**
 * A device's private memory (the ZONE_DEVICE pages of a dev_pagemap): `npages` 4 KiB device frames
 * with a refcount each, a free list, and their contents. A frame is allocated with one reference
 * (the allocation's); each CPU entry that points at it holds one more; it returns to the free list
 * when the count drops to zero (dev_pagemap_ops.page_free). For eviction the memory also remembers
 * where each frame was last installed (address space and virtual address).
 */
export class DeviceMemory {
  readonly content: ContentStore;
  readonly refcount: Int32Array;
  /** Virtual address each frame was installed at (for eviction and teardown). */
  readonly installedVa: Float64Array;
  /** Address space each frame was installed in (0 = none). */
  readonly installedMm: Int32Array;
  private readonly freeStack: Int32Array;
  private nfree: number;
  /** Frames in use, linked oldest allocation first (eviction order). */
  private readonly next: Int32Array;
  private readonly prev: Int32Array;
  private head = -1;
  private tail = -1;

  constructor(
    readonly npages: number,
    mode: ContentMode,
  ) {
    if (!Number.isInteger(npages) || npages < 1)
      throw new MmError("EINVAL", `device memory needs at least one page, got ${npages}`);
    this.content = new ContentStore(mode, npages);
    this.refcount = new Int32Array(npages);
    this.installedVa = new Float64Array(npages);
    this.installedMm = new Int32Array(npages);
    this.freeStack = new Int32Array(npages);
    for (let i = 0; i < npages; i++) this.freeStack[i] = npages - 1 - i;
    this.nfree = npages;
    this.next = new Int32Array(npages).fill(-1);
    this.prev = new Int32Array(npages).fill(-1);
  }

  /** Frames in use. */
  get used(): number {
    return this.npages - this.nfree;
  }

  /** Frames free. */
  get free(): number {
    return this.nfree;
  }

  /** Allocate a frame with refcount 1, or -1 if none is free. */
  alloc(): number {
    if (this.nfree === 0) return -1;
    const dpfn = this.freeStack[--this.nfree];
    this.refcount[dpfn] = 1;
    this.installedMm[dpfn] = 0;
    this.prev[dpfn] = this.tail;
    this.next[dpfn] = -1;
    if (this.tail >= 0) this.next[this.tail] = dpfn;
    else this.head = dpfn;
    this.tail = dpfn;
    return dpfn;
  }

  /** Take a reference. */
  get(dpfn: number): void {
    if (this.refcount[dpfn] <= 0) throw new MmError("EINVAL", `device frame ${dpfn} is free`, "FRAME_STATE");
    this.refcount[dpfn]++;
  }

  /** Drop a reference; the frame is freed at zero. */
  put(dpfn: number): void {
    const r = --this.refcount[dpfn];
    if (r > 0) return;
    if (r < 0) throw new MmError("EINVAL", `device frame ${dpfn} refcount went negative`, "FRAME_STATE");
    this.installedMm[dpfn] = 0;
    const p = this.prev[dpfn];
    const n = this.next[dpfn];
    if (p >= 0) this.next[p] = n;
    else this.head = n;
    if (n >= 0) this.prev[n] = p;
    else this.tail = p;
    this.freeStack[this.nfree++] = dpfn;
  }

  /** Record where `dpfn` was installed. */
  noteInstalled(dpfn: number, mmId: number, va: number): void {
    this.installedMm[dpfn] = mmId;
    this.installedVa[dpfn] = va;
  }

  /** Up to `max` installed frames, oldest allocation first (eviction candidates). */
  oldestInUse(max: number): number[] {
    const out: number[] = [];
    for (let d = this.head; d >= 0 && out.length < max; d = this.next[d]) {
      if (this.installedMm[d] !== 0) out.push(d);
    }
    return out;
  }
}
