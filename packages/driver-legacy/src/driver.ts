import {
  type DeviceContext,
  type DeviceFaultBatch,
  type DeviceTranslation,
  TOKENS,
  TRANSLATE_MISS,
} from "@hmmkit/core";
import {
  cancelErrno,
  deviceAddressFrame,
  deviceAddressOwner,
  HMM_PTE_DIRTY,
  HMM_PTE_VALID_DEV,
  HMM_PTE_VALID_MASK,
  HMM_PTE_VALID_PFN,
  HMM_PTE_WRITE,
  HmmEtype,
  type HmmEvent,
  type HmmMirror,
  HmmPtIter,
  hmmPteHi,
  hmmPteLo,
  LEGACY_TOKENS,
  type SharedMirror,
  type SharedMirrorDriver,
} from "@hmmkit/legacy";
import { inject, injectable } from "tsyringe";
import { DeviceTable } from "./device-table.js";

const VALID_MASK = HMM_PTE_VALID_MASK;
const VALID_DEV = HMM_PTE_VALID_DEV;
const VALID_PFN = HMM_PTE_VALID_PFN;
const WRITE = HMM_PTE_WRITE;
const DIRTY = HMM_PTE_DIRTY;
const PAGE = 4096;

/**
 * A v12-era device driver. It uses only HMM v12's API: on a device fault it asks HMM to fault the
 * range (hmm_mirror_fault, through `HmmMirror.faultSteps`); HMM fills hmm_pt and calls `update`
 * with HMM_DEVICE_RFAULT / HMM_DEVICE_WFAULT, and the driver reads the hmm_pt entries of that
 * range and programs its own device page table from them (marking the pages of a write fault
 * dirty in hmm_pt, as v12 asks of a device that cannot track writes). Invalidation events drop
 * (MUNMAP, MIGRATE) or write-protect (FORK, WRITE_PROTECT) its table over the range. The hardware
 * (`translate`) walks its table. Its memory is HMM's hmm_pt plus its own table; both are reported
 * (`mirrorBytes` is their sum; the split is in the SharedMirror's stats).
 */
@injectable()
export class LegacyDeviceDriver implements SharedMirrorDriver {
  private readonly tables = new Map<number, DeviceTable>();
  private lastMm = -1;
  private lastTable: DeviceTable | null = null;

  constructor(
    @inject(TOKENS.DeviceContext) private readonly ctx: DeviceContext,
    @inject(LEGACY_TOKENS.SharedMirror) private readonly sm: SharedMirror,
  ) {}

  private table(mmId: number): DeviceTable {
    let t = this.tables.get(mmId);
    if (t === undefined) {
      t = new DeviceTable();
      this.tables.set(mmId, t);
    }
    return t;
  }

  /** Bytes of the driver's own tables. */
  get tableBytes(): number {
    let b = 0;
    for (const t of this.tables.values()) b += t.bytes;
    return b;
  }

  update(mirror: HmmMirror, event: HmmEvent): number {
    const et = event.etype;
    if (et === HmmEtype.HMM_DEVICE_RFAULT || et === HmmEtype.HMM_DEVICE_WFAULT)
      this.program(mirror, event.start, event.end, et === HmmEtype.HMM_DEVICE_WFAULT);
    else if (et !== HmmEtype.HMM_NONE) {
      const t = this.tables.get(mirror.mmId);
      if (t !== undefined) {
        const writeOnly = et === HmmEtype.HMM_FORK || et === HmmEtype.HMM_WRITE_PROTECT;
        const n = t.drop(event.start, event.end, writeOnly);
        if (n > 0) {
          this.ctx.stats.tlbFlushes++;
          if (!writeOnly) this.ctx.stats.pagesDropped += n;
        }
      }
    }
    this.reportBytes();
    return 0;
  }

  /**
   * Program [start, end) of the device table from the mirror's hmm_pt entries. The device table
   * has hmm_pt's geometry, so each hmm_pt leaf maps onto one device-table leaf, walked in step.
   */
  private program(mirror: HmmMirror, start: number, end: number, write: boolean): void {
    const t = this.table(mirror.mmId);
    const owner = this.ctx.ownerId;
    const src = mirror.iter();
    const dst = new HmmPtIter(t.pt);
    const mpt = mirror.pt;
    const dpt = t.pt;
    try {
      let addr = start;
      while (addr < end) {
        let pos = src.walk(addr, end);
        if (pos < 0) break;
        const next = src.next;
        let dpos = dst.populate(src.addr, next);
        const mlo = mpt.lo;
        const mhi = mpt.hi;
        const dlo = dpt.lo;
        const dhi = dpt.hi;
        let fresh = 0;
        dst.lock();
        for (let a = src.addr; a < next; a += PAGE, pos++, dpos++) {
          const lo = mlo[pos];
          if ((lo & VALID_MASK) === 0) continue;
          let frame = mhi[pos] * 0x100000 + (lo >>> 12);
          let kind = VALID_PFN;
          if (lo & VALID_DEV) {
            // Another device's memory (a shared tree) is not this device's to map.
            if (deviceAddressOwner(frame) !== owner) continue;
            frame = deviceAddressFrame(frame);
            kind = VALID_DEV;
          }
          const writable = lo & WRITE;
          // The device cannot track its writes: pages it may write are dirty (hmm_pte_set_dirty,
          // no directory lock needed for the dirty bit).
          if (write && writable) mlo[pos] = (lo | DIRTY) >>> 0;
          if ((dlo[dpos] & VALID_MASK) === 0) fresh++;
          dlo[dpos] = hmmPteLo(frame, kind | writable);
          dhi[dpos] = hmmPteHi(frame);
        }
        if (fresh > 0) dst.refN(fresh);
        dst.unlock();
        addr = next;
      }
    } finally {
      dst.fini();
      src.fini();
    }
  }

  private reportBytes(): void {
    const own = this.tableBytes;
    this.sm.counters.driverTableBytes = own;
    this.ctx.stats.setMirrorBytes(this.sm.sharedBytes() + own);
  }

  translate(mmId: number, va: number, write: boolean): number {
    let t = this.lastTable;
    if (mmId !== this.lastMm || t === null) {
      t = this.tables.get(mmId) ?? null;
      if (t === null) return TRANSLATE_MISS;
      this.lastMm = mmId;
      this.lastTable = t;
    }
    const r = t.lookup(va, write);
    return r === -1 ? TRANSLATE_MISS : r;
  }

  /**
   * Service a fault batch: each run of consecutive pages (same address space and access) is one
   * hmm_mirror_fault; a run that fails is faulted again page by page and the failing pages'
   * accesses are cancelled.
   */
  *handleFaults(batch: DeviceFaultBatch): Generator<string, void, void> {
    let k = 0;
    while (k < batch.count) {
      const mmId = batch.mmId[k];
      const write = batch.isWrite(k);
      const start = batch.va[k];
      let j = k + 1;
      while (
        j < batch.count &&
        batch.mmId[j] === mmId &&
        batch.isWrite(j) === write &&
        batch.va[j] === start + (j - k) * PAGE
      )
        j++;
      const end = start + (j - k) * PAGE;
      if (this.translate(mmId, start, write) === TRANSLATE_MISS || j - k > 1) {
        const mirror = this.sm.mirror(mmId);
        const r = yield* mirror.faultSteps(start, end, write);
        if (r < 0) {
          for (let i = k; i < j; i++) {
            const r1 = j - k === 1 ? r : yield* mirror.faultSteps(batch.va[i], batch.va[i] + PAGE, write);
            if (r1 < 0) batch.cancel(i, cancelErrno(r1));
          }
        }
      }
      k = j;
    }
  }

  copyToDevice(_mmId: number, _va: number, spfn: number, dpfn: number): void {
    if (spfn < 0) this.ctx.dma.zeroDevicePage(dpfn);
    else this.ctx.dma.systemToDevice(spfn, dpfn);
  }

  copyFromDevice(_mmId: number, _va: number, dpfn: number, spfn: number): void {
    this.ctx.dma.deviceToSystem(dpfn, spfn);
  }

  *translations(): Iterable<DeviceTranslation> {
    for (const [mmId, t] of this.tables) {
      const out: DeviceTranslation[] = [];
      t.forEach((va, frame, device, writable) => {
        out.push({ mmId, va, pfn: frame, order: 0, writable, devicePrivate: device });
      });
      yield* out;
    }
  }

  release(): void {
    this.tables.clear();
    this.lastTable = null;
    this.lastMm = -1;
  }
}

/** The plugin descriptor (attach it with attachSharedMirror from @hmmkit/legacy). */
export const legacyPlugin = {
  name: "legacy",
  apiVersion: "^12.0.0",
  design: "shared-mirror",
  driver: LegacyDeviceDriver,
  description: "A v12-era driver: faults through hmm_mirror_fault, programs its own table from hmm_pt",
} as const;
