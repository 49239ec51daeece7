import {
  HMM_PTE_VALID_DEV,
  HMM_PTE_VALID_MASK,
  HMM_PTE_WRITE,
  HmmPt,
  HmmPtIter,
  hmmPtePfn,
} from "@hmmkit/legacy";

const VALID_MASK = HMM_PTE_VALID_MASK;
const VALID_DEV = HMM_PTE_VALID_DEV;
const WRITE = HMM_PTE_WRITE;
const LEAF_SPAN = 2 * 1024 * 1024;

/**
 * The device's own page table for one address space (v12-era hardware still walked its own
 * table). It has hmm_pt's layout (v12's dummy driver kept its device table in an hmm_pt as well):
 * 4 KiB directories of 512 eight-byte entries, a system pfn (VALID_PFN) or a frame of the device's
 * memory (VALID_DEV), and WRITE. `lookup` is the hardware walk (no references; the last leaf is
 * cached until a directory is freed).
 */
export class DeviceTable {
  readonly pt = new HmmPt();
  private cacheBase = -1;
  private cacheLeaf = -1;
  private cacheGen = -1;

  /** Bytes of the table (directories and root). */
  get bytes(): number {
    return this.pt.bytes;
  }

  /**
   * The translate result for `va`: a system pfn, -2 - dpfn for a device frame, or -1 (no entry,
   * or read-only for a write).
   */
  lookup(va: number, write: boolean): number {
    const pt = this.pt;
    const b = va - (va % LEAF_SPAN);
    let leaf: number;
    if (b === this.cacheBase && this.cacheGen === pt.pruneGeneration) leaf = this.cacheLeaf;
    else {
      leaf = pt.leafAt(va);
      if (leaf < 0) return -1;
      this.cacheBase = b;
      this.cacheLeaf = leaf;
      this.cacheGen = pt.pruneGeneration;
    }
    const pos = leaf * 512 + (Math.floor(va / 4096) % 512);
    const lo = pt.lo[pos];
    if ((lo & VALID_MASK) === 0 || (write && (lo & WRITE) === 0)) return -1;
    const frame = pt.hi[pos] * 0x100000 + (lo >>> 12);
    return lo & VALID_DEV ? -2 - frame : frame;
  }

  /**
   * Drop (or, with `writeOnly`, write-protect) every entry in [start, end), walking only the
   * directories that exist. Returns the pages dropped or write-protected.
   */
  drop(start: number, end: number, writeOnly: boolean): number {
    const pt = this.pt;
    const it = new HmmPtIter(pt);
    let n = 0;
    try {
      let addr = start;
      while (addr < end) {
        let pos = it.walk(addr, end);
        if (pos < 0) break;
        const next = it.next;
        it.lock();
        for (let a = it.addr; a < next; a += 4096, pos++) {
          const lo = pt.lo[pos];
          if ((lo & VALID_MASK) === 0) continue;
          if (writeOnly) {
            if (lo & WRITE) {
              pt.lo[pos] = (lo & ~WRITE) >>> 0;
              n++;
            }
            continue;
          }
          pt.lo[pos] = 0;
          pt.hi[pos] = 0;
          it.unref();
          n++;
        }
        it.unlock();
        addr = next;
      }
    } finally {
      it.fini();
    }
    return n;
  }

  /** Every valid entry: calls `fn(va, frame, device, writable)`. */
  forEach(fn: (va: number, frame: number, device: boolean, writable: boolean) => void): void {
    const pt = this.pt;
    const it = new HmmPtIter(pt);
    try {
      let addr = 0;
      const end = 2 ** 47 - 4096;
      while (addr < end) {
        let pos = it.walk(addr, end);
        if (pos < 0) break;
        const next = it.next;
        for (let a = it.addr; a < next; a += 4096, pos++) {
          const lo = pt.lo[pos];
          if ((lo & VALID_MASK) === 0) continue;
          fn(a, hmmPtePfn(lo, pt.hi[pos]), (lo & VALID_DEV) !== 0, (lo & WRITE) !== 0);
        }
        addr = next;
      }
    } finally {
      it.fini();
    }
  }
}
