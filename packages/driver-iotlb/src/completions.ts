/**
 * Translation completions held for stalled accesses. With ATS/PRI a faulting access waits for the
 * response to its page request, re-issues its translation request and completes with the
 * translation it gets back, whether or not the ATC keeps a copy. Here the fault handler's mirror
 * callbacks record the translation of each faulting page, with one reference per stalled access
 * waiting for it (the batch entries not cancelled); each replay of such an access takes one
 * reference and completes with that translation, then caches it in the TLB. So a stalled access
 * completes on its replay even when later fills of the same launch replaced its TLB entry (more
 * faulting pages than the TLB holds, or than a set has ways), as hardware does, instead of
 * faulting again.
 *
 * This is request state, not a mirror: it holds only pages with accesses still stalled, is emptied
 * whenever the last of them completed, and invalidations drop its entries like TLB entries. Its
 * size follows the accesses in flight (a launch's wave), never what the process maps. An open
 * addressing hash table (linear probing) in typed arrays; it grows by doubling.
 */
const INITIAL_SLOTS = 256;
/** Bytes per slot: vpn (Float64), mm, pfn, refs and gen (Int32), flags (Uint8). */
const SLOT_BYTES = 8 + 4 + 4 + 4 + 4 + 1;

/** `take` result when no completion with a waiting access holds the page. */
export const NOT_HELD = -1;

/** The completions of stalled accesses. */
export class TranslationCompletions {
  /** Page number per slot; -1 for an empty slot. */
  vpn: Float64Array;
  mm: Int32Array;
  pfn: Int32Array;
  /** TLB_* bits of each slot (TLB_WRITE, TLB_DEVICE, TLB_EXCLUSIVE; a completion is one page). */
  flags: Uint8Array;
  /** Stalled accesses still waiting for each slot's translation (0: spent or dropped). */
  refs: Int32Array;
  /** The batch that recorded each slot (0 once dropped): only that batch's entries may wait for it. */
  gen: Int32Array;
  /** The batch being serviced (see beginBatch). */
  generation = 0;
  /** Slots occupied (spent ones included until the table empties). */
  used = 0;
  /** References outstanding over all slots: while 0 the table is empty and `translate` skips it. */
  pending = 0;
  /** Most slots the table has had. */
  peakSlots = 0;
  private mask: number;

  constructor() {
    this.vpn = new Float64Array(0);
    this.mm = new Int32Array(0);
    this.pfn = new Int32Array(0);
    this.flags = new Uint8Array(0);
    this.refs = new Int32Array(0);
    this.gen = new Int32Array(0);
    this.mask = 0;
    this.allocate(INITIAL_SLOTS);
  }

  /** Bytes of the arrays now. */
  get bytes(): number {
    return this.vpn.length * SLOT_BYTES;
  }

  private home(mmId: number, vpn: number): number {
    // Fibonacci hashing of the page number's low 32 bits mixed with the address space.
    return (Math.imul((vpn | 0) ^ Math.imul(mmId, 0x27d4eb2d), 0x9e3779b1) >>> 0) & this.mask;
  }

  /** The slot holding page `vpn` of `mmId`, or -1. */
  find(mmId: number, vpn: number): number {
    const vp = this.vpn;
    for (let s = this.home(mmId, vpn); ; s = (s + 1) & this.mask) {
      const v = vp[s];
      if (v === -1) return -1;
      if (v === vpn && this.mm[s] === mmId) return s;
    }
  }

  /** A new fault batch is being serviced: what it records is what its entries may wait for. */
  beginBatch(): void {
    this.generation = (this.generation % 0x7fffffff) + 1;
  }

  /** The slot page `vpn` of `mmId` got in the current batch, or -1. */
  recorded(mmId: number, vpn: number): number {
    const s = this.find(mmId, vpn);
    return s >= 0 && this.gen[s] === this.generation ? s : -1;
  }

  /** Record the translation of a faulting page (the latest report wins); returns its slot. */
  record(mmId: number, vpn: number, pfn: number, flags: number): number {
    let s = this.find(mmId, vpn);
    if (s < 0) {
      if ((this.used + 1) * 2 > this.vpn.length) this.grow();
      s = this.home(mmId, vpn);
      while (this.vpn[s] !== -1) s = (s + 1) & this.mask;
      this.vpn[s] = vpn;
      this.mm[s] = mmId;
      this.refs[s] = 0;
      this.used++;
    }
    this.pfn[s] = pfn;
    this.flags[s] = flags;
    this.gen[s] = this.generation;
    return s;
  }

  /** One more stalled access waits for slot `s`. */
  addRef(s: number): void {
    this.refs[s]++;
    this.pending++;
  }

  /**
   * A replay of page `vpn`: take one reference and return the slot, or NOT_HELD. The caller
   * checks the slot's flags against the access.
   */
  take(mmId: number, vpn: number): number {
    const s = this.find(mmId, vpn);
    if (s < 0 || this.refs[s] === 0) return NOT_HELD;
    this.refs[s]--;
    this.pending--;
    return s;
  }

  /**
   * Empty the table once no access waits (spent slots are reclaimed here, not one by one). A table
   * grown for a large launch goes back to its initial size.
   */
  resetIfIdle(): void {
    if (this.pending !== 0 || this.used === 0) return;
    this.used = 0;
    if (this.vpn.length > INITIAL_SLOTS * 16) this.allocate(INITIAL_SLOTS);
    else this.vpn.fill(-1);
  }

  private allocate(slots: number): void {
    this.vpn = new Float64Array(slots).fill(-1);
    this.mm = new Int32Array(slots);
    this.pfn = new Int32Array(slots);
    this.flags = new Uint8Array(slots);
    this.refs = new Int32Array(slots);
    this.gen = new Int32Array(slots);
    this.mask = slots - 1;
    this.peakSlots = Math.max(this.peakSlots, slots);
  }

  /** Drop the completions of `mmId` overlapping pages [first, last): their accesses fault again. */
  invalidate(mmId: number, first: number, last: number): void {
    if (this.used === 0) return;
    const vp = this.vpn;
    for (let s = 0; s < vp.length; s++) {
      const v = vp[s];
      if (v < first || v >= last || this.mm[s] !== mmId) continue;
      this.pending -= this.refs[s];
      this.refs[s] = 0;
      this.gen[s] = 0;
    }
    this.resetIfIdle();
  }

  private grow(): void {
    const oldVpn = this.vpn;
    const oldMm = this.mm;
    const oldPfn = this.pfn;
    const oldFlags = this.flags;
    const oldRefs = this.refs;
    const oldGen = this.gen;
    this.allocate(oldVpn.length * 2);
    this.used = 0;
    for (let s = 0; s < oldVpn.length; s++) {
      if (oldVpn[s] === -1 || (oldRefs[s] === 0 && oldGen[s] !== this.generation)) continue;
      const t = this.record(oldMm[s], oldVpn[s], oldPfn[s], oldFlags[s]);
      this.refs[t] = oldRefs[s];
      this.gen[t] = oldGen[s];
    }
  }
}
