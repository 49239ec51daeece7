/**
 * The device's translation cache: a set-associative TLB with LRU replacement inside each set, as
 * the address translation cache (ATC) of a PCIe ATS device or an RDMA NIC's on-chip MTT cache.
 * Everything lives in one ArrayBuffer with typed-array views (kdbush style), so a lookup
 * allocates nothing and the structure's size is fixed when the device is built.
 *
 * Entries are 4 KiB or 2 MiB. A 4 KiB entry for page number `vpn` lives in set `vpn & setMask`;
 * a 2 MiB entry for the PMD starting at page `hvpn` (a multiple of 512) in set
 * `(hvpn / 512) & setMask`. A lookup probes the 4 KiB set, then (only while huge entries exist)
 * the 2 MiB set, as a unified TLB that indexes once per page size.
 */

/** Entry flag: the entry holds a translation. */
export const TLB_VALID = 1;
/** Entry flag: the device may write through it. */
export const TLB_WRITE = 2;
/** Entry flag: the frame is in the device's own memory (a device pfn). */
export const TLB_DEVICE = 4;
/** Entry flag: a 2 MiB entry covering 512 pages from its (512-aligned) page number. */
export const TLB_HUGE = 8;
/** Entry flag: the translation was granted exclusive access (make_device_exclusive). */
export const TLB_EXCLUSIVE = 16;

/** `lookup` result when no entry allows the access. */
export const TLB_MISS = -1;

// Module-local copies for the hot path (a module's own const folds; an import is a cell load).
const VALID = TLB_VALID;
const WRITE = TLB_WRITE;
const DEVICE = TLB_DEVICE;
const HUGE = TLB_HUGE;
const MISS = TLB_MISS;
/**
 * What {@link DeviceTlb.lookupLastHit} returns when the page is not in the last-hit entry: no
 * translate result (a pfn >= 0, TLB_MISS, or -2 - dpfn for a device frame below 2^31 - 2).
 */
export const NOT_LAST_HIT = -0x80000000;

/** Translations held for stalled accesses (TranslationCompletions), as lookupMiss takes them. */
export interface HeldTranslations {
  /** References outstanding: 0 when nothing is held. */
  readonly pending: number;
  /** The slot holding (mmId, vpn) with an access waiting for it, taking one reference; < 0 if none. */
  take(mmId: number, vpn: number): number;
  readonly pfn: Int32Array;
  readonly flags: Uint8Array;
  /** Empty the table if no reference is outstanding. */
  resetIfIdle(): void;
}

const NONE_HELD: HeldTranslations = {
  pending: 0,
  take: () => -1,
  pfn: new Int32Array(0),
  flags: new Uint8Array(0),
  resetIfIdle: () => {},
};
/** Pages per 2 MiB entry, and the mask of a page's index inside it. */
const HUGE_PAGES = 512;
const HUGE_MASK = 511;

/** Bytes per entry: vpn and lru (Float64), pfn and mm (Int32), flags (Uint8). */
const ENTRY_BYTES = 8 + 8 + 4 + 4 + 1;

/** What an invalidation dropped. */
export interface TlbDropCount {
  /** Entries dropped. */
  entries: number;
  /** 4 KiB pages those entries covered (a 2 MiB entry counts 512). */
  pages: number;
}

/** A set-associative, LRU device TLB. */
export class DeviceTlb {
  /** Entries in all (sets * ways). */
  readonly entries: number;
  /** Entries per set. */
  readonly ways: number;
  /** Sets (a power of two). */
  readonly sets: number;
  /** The one buffer every view below lives in; its byteLength is the TLB's exact size. */
  readonly buffer: ArrayBuffer;
  /** Per entry: page number (a 2 MiB entry: its first, 512-aligned page); -1 when invalid. */
  readonly vpn: Float64Array;
  /** Per entry: the tick of its last use (fill or hit); the set's smallest is its LRU victim. */
  readonly lru: Float64Array;
  /** Per entry: the frame (system pfn, or device pfn with TLB_DEVICE; a 2 MiB entry: its first). */
  readonly pfn: Int32Array;
  /** Per entry: the address space (mm id). */
  readonly mm: Int32Array;
  /** Per entry: TLB_* bits. */
  readonly flags: Uint8Array;
  private readonly setMask: number;
  private tick = 0;
  /** Valid 2 MiB entries: while 0, lookups skip the second probe. */
  private huge = 0;
  /** Fills that replaced a valid entry (capacity and conflict misses to come). */
  replacements = 0;
  // The last entry hit, as a one-entry level-0 TLB in front of the sets (streams hit one entry
  // many times in a row, a 2 MiB entry 512 times): its address space (-1: none), first page,
  // pages, frame and flags. A hit there leaves the LRU tick alone and keeps LRU exact: the L0
  // entry is always the most recently used one (a hit on any other entry replaces it, and every
  // fill clears it), so its recorded tick orders it right against all the others.
  private l0Mm = -1;
  // A double from the start (page numbers pass 2^31): V8 would otherwise change the object's
  // shape at the first such fill, and deoptimize the loops that inlined the lookup.
  private l0First = Number.NEGATIVE_INFINITY;
  private l0Pages = 0;
  private l0Pfn = 0;
  private l0Flags = 0;
  private l0Entry = -1;

  constructor(entries: number, ways: number) {
    this.entries = entries;
    this.ways = ways;
    this.sets = entries / ways;
    this.setMask = this.sets - 1;
    this.buffer = new ArrayBuffer(entries * ENTRY_BYTES);
    let off = 0;
    this.vpn = new Float64Array(this.buffer, off, entries).fill(-1);
    off += entries * 8;
    this.lru = new Float64Array(this.buffer, off, entries);
    off += entries * 8;
    this.pfn = new Int32Array(this.buffer, off, entries);
    off += entries * 4;
    this.mm = new Int32Array(this.buffer, off, entries);
    off += entries * 4;
    this.flags = new Uint8Array(this.buffer, off, entries);
  }

  /** Exact bytes of the TLB's arrays. */
  get bytes(): number {
    return this.buffer.byteLength;
  }

  /** Valid entries now. */
  get used(): number {
    let n = 0;
    for (let e = 0; e < this.entries; e++) if (this.flags[e] & VALID) n++;
    return n;
  }

  /**
   * The hot path: the frame page `vpn` of `mmId` translates to for a read or (`write`) a write,
   * as a translate result (a system pfn, or -2 - dpfn for a device frame), or TLB_MISS. A hit
   * makes the entry the most recently used of its set. Allocates nothing.
   */
  lookup(mmId: number, vpn: number, write: boolean): number {
    const r = this.lookupLastHit(mmId, vpn, write);
    return r !== NOT_LAST_HIT ? r : this.lookupMiss(mmId, vpn, write, NONE_HELD);
  }

  /**
   * {@link lookup} in the last-hit entry only (the hot path of a stream: every access to the
   * pages an entry covers after the first), or NOT_LAST_HIT. Small enough for V8 to inline.
   */
  lookupLastHit(mmId: number, vpn: number, write: boolean): number {
    const off = vpn - this.l0First;
    if (mmId !== this.l0Mm || off < 0 || off >= this.l0Pages) return NOT_LAST_HIT;
    const f = this.l0Flags;
    if (write && (f & WRITE) === 0) return MISS;
    // `| 0`: off is a small integer here, and the result stays an int32 for the caller.
    const pfn = this.l0Pfn + (off | 0);
    return f & DEVICE ? -2 - pfn : pfn;
  }

  /**
   * {@link lookup} when the last-hit entry could not answer, or with translations `held` for
   * stalled accesses: a held translation of the page is taken, cached and returned (see
   * completions.ts), otherwise the sets are searched, 4 KiB then 2 MiB.
   *
   * The whole miss side in one method, on purpose larger than V8 inlines: V8 inlines a call by the
   * counts it has seen, so a first run that faults would make this path look hot, and inlined into
   * the access loop of every later run it slows their hit path (1.4x on a streaming read).
   */
  lookupMiss(mmId: number, vpn: number, write: boolean, held: HeldTranslations): number {
    if (held.pending !== 0) {
      const slot = held.take(mmId, vpn);
      if (slot >= 0) {
        const pfn = held.pfn[slot];
        const f = held.flags[slot];
        held.resetIfIdle();
        const r = this.lookup(mmId, vpn, write);
        if (r !== MISS) return r;
        this.fill(mmId, vpn, pfn, f);
        if (write && (f & WRITE) === 0) return MISS;
        return f & DEVICE ? -2 - pfn : pfn;
      }
    }
    const vp = this.vpn;
    const mmArr = this.mm;
    const fl = this.flags;
    const ways = this.ways;
    // `&` works on the low 32 bits of the page number (exact for integers below 2^53).
    let e = (vpn & this.setMask) * ways;
    let end = e + ways;
    for (; e < end; e++) {
      if (vp[e] === vpn && mmArr[e] === mmId && (fl[e] & HUGE) === 0) {
        const f = fl[e];
        if (write && (f & WRITE) === 0) return MISS;
        this.lru[e] = ++this.tick;
        this.setL0(e, mmId, vpn, 1);
        return f & DEVICE ? -2 - this.pfn[e] : this.pfn[e];
      }
    }
    if (this.huge === 0) return MISS;
    const sub = vpn & HUGE_MASK;
    const hvpn = vpn - sub;
    e = ((hvpn / HUGE_PAGES) & this.setMask) * ways;
    end = e + ways;
    for (; e < end; e++) {
      if (vp[e] === hvpn && mmArr[e] === mmId && (fl[e] & HUGE) !== 0) {
        const f = fl[e];
        if (write && (f & WRITE) === 0) return MISS;
        this.lru[e] = ++this.tick;
        this.setL0(e, mmId, hvpn, HUGE_PAGES);
        return f & DEVICE ? -2 - (this.pfn[e] + sub) : this.pfn[e] + sub;
      }
    }
    return MISS;
  }

  private setL0(e: number, mmId: number, first: number, pages: number): void {
    this.l0Entry = e;
    this.l0Mm = mmId;
    this.l0First = first;
    this.l0Pages = pages;
    this.l0Pfn = this.pfn[e];
    this.l0Flags = this.flags[e];
  }

  /** {@link lookup} without making the entry the most recently used (inspection, fault handling). */
  peek(mmId: number, vpn: number, write: boolean): number {
    const e = this.find(mmId, vpn);
    if (e < 0) return MISS;
    const f = this.flags[e];
    if (write && (f & WRITE) === 0) return MISS;
    const pfn = f & HUGE ? this.pfn[e] + (vpn & HUGE_MASK) : this.pfn[e];
    return f & DEVICE ? -2 - pfn : pfn;
  }

  /** The entry covering page `vpn` of `mmId` (4 KiB first, then 2 MiB), or -1. */
  find(mmId: number, vpn: number): number {
    const base = (vpn & this.setMask) * this.ways;
    for (let e = base; e < base + this.ways; e++)
      if (this.vpn[e] === vpn && this.mm[e] === mmId && (this.flags[e] & HUGE) === 0) return e;
    const hvpn = vpn - (vpn & HUGE_MASK);
    const hbase = ((hvpn / HUGE_PAGES) & this.setMask) * this.ways;
    for (let e = hbase; e < hbase + this.ways; e++)
      if (this.vpn[e] === hvpn && this.mm[e] === mmId && (this.flags[e] & HUGE) !== 0) return e;
    return -1;
  }

  /** Whether an entry (4 KiB or 2 MiB) covers page `vpn` of `mmId` (inspection; changes no LRU state). */
  holds(mmId: number, vpn: number): boolean {
    return this.find(mmId, vpn) >= 0;
  }

  /** Cache a 4 KiB translation (`flags`: TLB_* bits, VALID implied); replaces the set's LRU entry. */
  fill(mmId: number, vpn: number, pfn: number, flags: number): void {
    if (this.huge > 0) this.dropHugeCovering(mmId, vpn);
    this.place((vpn & this.setMask) * this.ways, mmId, vpn, pfn, (flags & ~HUGE) | VALID);
  }

  /** Cache a 2 MiB translation of the PMD at page `hvpn` (512-aligned); its 4 KiB entries go. */
  fillHuge(mmId: number, hvpn: number, pfn: number, flags: number): void {
    const vp = this.vpn;
    const fl = this.flags;
    for (let e = 0; e < this.entries; e++) {
      if (
        (fl[e] & (VALID | HUGE)) === VALID &&
        this.mm[e] === mmId &&
        vp[e] >= hvpn &&
        vp[e] < hvpn + HUGE_PAGES
      )
        this.clear(e);
    }
    this.place(((hvpn / HUGE_PAGES) & this.setMask) * this.ways, mmId, hvpn, pfn, flags | HUGE | VALID);
  }

  /** Drop every entry of `mmId` overlapping pages [first, last). */
  invalidate(mmId: number, first: number, last: number, out: TlbDropCount): TlbDropCount {
    out.entries = 0;
    out.pages = 0;
    const vp = this.vpn;
    const fl = this.flags;
    for (let e = 0; e < this.entries; e++) {
      const f = fl[e];
      if ((f & VALID) === 0 || this.mm[e] !== mmId) continue;
      const size = f & HUGE ? HUGE_PAGES : 1;
      if (vp[e] + size <= first || vp[e] >= last) continue;
      out.entries++;
      out.pages += size;
      this.clear(e);
    }
    return out;
  }

  /** Drop every entry of `mmId` (any range). */
  dropMm(mmId: number, out: TlbDropCount): TlbDropCount {
    return this.invalidate(mmId, 0, Number.POSITIVE_INFINITY, out);
  }

  /** Write an entry into the set starting at entry `base`: the same tag in place, else an empty way, else the LRU way. */
  private place(base: number, mmId: number, vpn: number, pfn: number, flags: number): void {
    const vp = this.vpn;
    const fl = this.flags;
    const huge = flags & HUGE;
    let same = -1;
    let empty = -1;
    let oldestWay = -1;
    let oldest = Number.POSITIVE_INFINITY;
    for (let e = base; e < base + this.ways; e++) {
      const f = fl[e];
      if ((f & VALID) === 0) {
        if (empty < 0) empty = e;
      } else if (vp[e] === vpn && this.mm[e] === mmId && (f & HUGE) === huge) {
        same = e;
        break;
      } else if (this.lru[e] < oldest) {
        oldest = this.lru[e];
        oldestWay = e;
      }
    }
    const victim = same >= 0 ? same : empty >= 0 ? empty : oldestWay;
    this.l0Mm = -1;
    if (victim === oldestWay) {
      this.replacements++;
      this.clear(victim);
    } else if (victim === same && huge) this.huge--;
    vp[victim] = vpn;
    this.mm[victim] = mmId;
    this.pfn[victim] = pfn;
    fl[victim] = flags;
    this.lru[victim] = ++this.tick;
    if (huge) this.huge++;
  }

  /** A 4 KiB fill inside a cached 2 MiB entry means the PMD was split: the 2 MiB entry goes. */
  private dropHugeCovering(mmId: number, vpn: number): void {
    const hvpn = vpn - (vpn & HUGE_MASK);
    const base = ((hvpn / HUGE_PAGES) & this.setMask) * this.ways;
    for (let e = base; e < base + this.ways; e++)
      if (this.vpn[e] === hvpn && this.mm[e] === mmId && this.flags[e] & HUGE) this.clear(e);
  }

  private clear(e: number): void {
    if (e === this.l0Entry) this.l0Mm = -1;
    if (this.flags[e] & HUGE) this.huge--;
    this.flags[e] = 0;
    this.vpn[e] = -1;
  }
}
