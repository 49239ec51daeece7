import { HMM_PFN_DEVICE_PRIVATE, HMM_PFN_WRITE, type Steps } from "@hmmkit/core";
import { HmmPtAssertionError, hex } from "./errors.js";
import { HmmEtype, hmmEtypeClearsEntry } from "./etype.js";
import type { HmmPt } from "./hmm-pt.js";
import { HmmPtIter } from "./hmm-pt-iter.js";
import {
  deviceAddress,
  deviceAddressOwner,
  HMM_PTE_DIRTY,
  HMM_PTE_VALID_DEV,
  HMM_PTE_VALID_MASK,
  HMM_PTE_VALID_PFN,
  HMM_PTE_WRITE,
  hmmPteHi,
  hmmPteLo,
  hmmPtePfn,
} from "./hmm-pte.js";
import { hmmMirrorFaultSteps } from "./mirror-fault.js";
import { type FaultMirror, type MirrorHost, type Mm, PAGE_SIZE } from "./types.js";

// Module-local copies for the per-entry loops (V8 folds local consts; see core device-fault.ts).
const VALID_MASK = HMM_PTE_VALID_MASK;
const VALID_DEV = HMM_PTE_VALID_DEV;
const VALID_PFN = HMM_PTE_VALID_PFN;
const WRITE = HMM_PTE_WRITE;
const DIRTY = HMM_PTE_DIRTY;
const PFN_WRITE = HMM_PFN_WRITE;
const PFN_DEVICE_PRIVATE = HMM_PFN_DEVICE_PRIVATE;

/**
 * struct hmm_mirror: one device mirroring one address space, with its mirror page table `pt`
 * (hmm_mirror_register: hmm_pt_init(&mirror->pt) over all of user space). With the
 * `sharedDirectories` option, the mirrors of one address space share one tree.
 */
export class HmmMirror implements FaultMirror {
  /**
   * mirror->hmm: the address space while the mirror is attached; null once it was killed
   * (unregistered, unbound, its address space exited, or its update failed). A detached mirror's
   * faults return -ENODEV.
   */
  hmm: { readonly mm: Mm } | null;
  /** The fault walker whose fill is in progress (the core's mirror callbacks write through it). */
  active: HmmPtIter | null = null;
  /** During hmm_mm_fault: the core's reports are CPU faults only, not hmm_pt fills. */
  cpuFaultOnly = false;
  /** The range of the fault event in progress (hmm->device_faults in v12). */
  faultStart = 0;
  faultEnd = 0;
  /** event->backoff, set by an overlapping invalidation (hmm_wait_device_fault). */
  backoff = false;

  constructor(
    readonly device: MirrorHost,
    mm: Mm,
    /** The mirror page table (hmm_pt). */
    readonly pt: HmmPt,
  ) {
    this.hmm = { mm };
  }

  /** The address space id (the `mmId` of callbacks). */
  get mmId(): number {
    return this.hmm?.mm.id ?? -1;
  }

  /** A walker of this mirror's hmm_pt (hmm_pt_iter_init); end it with `fini()`. */
  iter(): HmmPtIter {
    return new HmmPtIter(this.pt);
  }

  /**
   * hmm_mirror_fault: make [start, end) valid in hmm_pt for a read (HMM_DEVICE_RFAULT) or write
   * (HMM_DEVICE_WFAULT) fault, faulting the CPU side as needed, and tell the driver (`update` with
   * the fault event) what it filled. Returns 0 or a negative errno: -EFAULT (no VMA, PROT_NONE),
   * -EACCES (write fault on a VMA without VM_WRITE), -ENOMEM, -EINVAL (an empty or non-integer range;
   * an unaligned one is rounded out to pages, as hmm_event_init does), -ENODEV (the
   * mirror is detached), -EBUSY (a migration in flight, or no progress after many retries).
   */
  fault(start: number, end: number, write: boolean): number {
    const it = this.faultSteps(start, end, write);
    for (;;) {
      const r = it.next();
      if (r.done) return r.value;
    }
  }

  /** Step form of {@link fault}: yields at directory (PMD) boundaries and where v12 could sleep. */
  faultSteps(start: number, end: number, write: boolean): Steps<number> {
    return hmmMirrorFaultSteps(this, start, end, write);
  }

  /**
   * Write `count` page entries from `va` as the core reported them (frames in `pfns[pfnOff + i]`,
   * HMM_PFN_* flags in `flags[flagsOff + i]`; with `huge` >= 0 the frames are huge .. huge + count
   * - 1 and every page has `flags[flagsOff]`), under each leaf directory's lock, taking a
   * reference for every entry that becomes valid (hmm_mirror_fault_pmd / _hpmd). An entry already
   * valid must hold the same address (BUG_ON in v12: HmmPtAssertionError); the write bit is added
   * when the CPU entry is writable.
   */
  fill(
    va: number,
    count: number,
    pfns: Int32Array | null,
    pfnOff: number,
    flags: Int32Array,
    flagsOff: number,
    huge: number,
  ): void {
    if (this.hmm === null || this.cpuFaultOnly) return;
    const own = this.active;
    const it = own ?? this.iter();
    const pt = this.pt;
    const ownerId = this.device.ownerId;
    const end = va + count * PAGE_SIZE;
    let addr = va;
    let i = 0;
    let written = 0;
    try {
      while (addr < end) {
        let pos = it.populate(addr, end);
        const n = (it.next - addr) / PAGE_SIZE;
        const lo = pt.lo;
        const hi = pt.hi;
        let fresh = 0;
        it.lock();
        try {
          for (let k = 0; k < n; k++, i++, pos++) {
            const f = huge >= 0 ? flags[flagsOff] : flags[flagsOff + i];
            const frame = huge >= 0 ? huge + i : pfns![pfnOff + i];
            let a = frame;
            let kind = VALID_PFN;
            if (f & PFN_DEVICE_PRIVATE) {
              a = deviceAddress(ownerId, frame);
              kind = VALID_DEV;
            }
            let e = lo[pos];
            if ((e & VALID_MASK) === 0) {
              // hmm_pte_from_pfn; the leaf's count gains one per new entry (below, per leaf).
              e = hmmPteLo(a, kind);
              hi[pos] = hmmPteHi(a);
              fresh++;
            } else if ((e & kind) === 0 || hmmPtePfn(e, hi[pos]) !== a) {
              throw new HmmPtAssertionError(
                `hmm_mirror_fault: hmm_pt entry of ${hex(addr + k * PAGE_SIZE)} in mm ${this.mmId} holds ${e & VALID_DEV ? "device address" : "pfn"} ${hmmPtePfn(e, hi[pos])} but the CPU page table maps ${kind === VALID_DEV ? "device address" : "pfn"} ${a}: an invalidation did not clear it`,
              );
            }
            if (f & PFN_WRITE) e |= WRITE;
            lo[pos] = e >>> 0;
          }
        } finally {
          // hmm_pt_iter_directory_ref for each entry made valid, checked once per leaf.
          if (fresh > 0) it.refN(fresh);
          written += fresh;
          it.unlock();
        }
        addr = it.next;
      }
    } finally {
      pt.stats.entriesWritten += written;
      if (own === null) it.fini();
    }
  }

  /**
   * hmm_mirror_update_pt: apply an event to the entries of [start, end): MIGRATE and MUNMAP clear
   * them (dropping the leaf's reference for each; a leaf left empty is pruned when the walker
   * leaves it), FORK and WRITE_PROTECT clear the write bit. A dirty, writable entry being cleared
   * is counted (v12 calls set_page_dirty on its page). During a migration of device
   * `migrateOwner`, that device's entries stay: the migration's copy-from-device looks their device
   * address up here (and clears them once copied).
   */
  updatePt(start: number, end: number, etype: HmmEtype, migrateOwner: number): void {
    const clear = hmmEtypeClearsEntry(etype);
    const pt = this.pt;
    const stats = pt.stats;
    const counters = this.device.counters;
    const it = this.iter();
    try {
      let addr = start;
      while (addr < end) {
        let pos = it.walk(addr, end);
        if (pos < 0) break;
        const next = it.next;
        const n = (next - it.addr) / PAGE_SIZE;
        it.lock();
        try {
          for (let k = 0; k < n; k++, pos++) {
            const lo = pt.lo[pos];
            if ((lo & VALID_MASK) === 0) continue;
            if (!clear) {
              pt.lo[pos] = (lo & ~WRITE) >>> 0;
              continue;
            }
            if (
              migrateOwner >= 0 &&
              lo & VALID_DEV &&
              deviceAddressOwner(hmmPtePfn(lo, pt.hi[pos])) === migrateOwner
            )
              continue;
            if (lo & DIRTY && lo & WRITE) counters.dirtyPages++;
            pt.lo[pos] = 0;
            pt.hi[pos] = 0;
            it.unref();
            stats.entriesCleared++;
          }
        } finally {
          it.unlock();
        }
        addr = next;
      }
    } finally {
      it.fini();
    }
  }

  /**
   * The device address recorded for `va` and clear its entry (the CPU fault path on a device
   * page: v12 looks the page's device address up in hmm_pt). Returns the device address, or -1
   * when hmm_pt has no device entry there.
   */
  takeDeviceEntry(va: number): number {
    const it = this.iter();
    try {
      const pos = it.lookup(va, va + PAGE_SIZE);
      if (pos < 0) return -1;
      const pt = this.pt;
      const lo = pt.lo[pos];
      if ((lo & VALID_DEV) === 0) return -1;
      const a = hmmPtePfn(lo, pt.hi[pos]);
      it.lock();
      pt.lo[pos] = 0;
      pt.hi[pos] = 0;
      it.unlock();
      it.unref();
      pt.stats.entriesCleared++;
      return a;
    } finally {
      it.fini();
    }
  }

  /**
   * hmm_pte_set_dirty: the device wrote page `va` (no directory lock: the dirty bit is one of the
   * two exceptions). Returns false when hmm_pt has no valid entry there.
   */
  setDirty(va: number): boolean {
    const pos = this.pt.entryPos(va);
    if (pos < 0 || (this.pt.lo[pos] & VALID_MASK) === 0) return false;
    this.pt.lo[pos] = (this.pt.lo[pos] | DIRTY) >>> 0;
    return true;
  }

  /** The events a fault of this mirror reports to the driver. */
  static faultEtype(write: boolean): HmmEtype {
    return write ? HmmEtype.HMM_DEVICE_WFAULT : HmmEtype.HMM_DEVICE_RFAULT;
  }
}
