/**
 * The gpu's fault-servicing thread (UVM's bottom half), a step generator run by the core for each
 * fault batch. It follows uvm_gpu_replayable_faults.c (NVIDIA/open-gpu-kernel-modules):
 *
 * - coalesce and sort (fetch_fault_buffer_entries, preprocess_fault_batch): the batch's entries
 *   are sorted by address space and page, duplicates of a page are merged (a write among them
 *   makes the page a write fault), and each page keeps the entries that raised it;
 * - service per VA block (service_fault_batch, service_fault_batch_block): consecutive pages of one
 *   2 MiB block are serviced together: decide where they go (migrate or map remotely, by policy
 *   and thrashing state), add the prefetch pages (prefetch.ts), make room in device memory by
 *   evicting other blocks, and make one core call per contiguous region;
 * - cancel what cannot be serviced: a faulted page still without a translation allowing its
 *   access is faulted again alone, and an EFAULT, EPERM or ENOMEM from the core cancels that
 *   page's entries (UVM flags faults it cannot service as fatal and cancels their accesses,
 *   cancel_fault_precise_va in the same file).
 */
import { type DeviceFaultBatch, DriverError, type HmmCore, type MigrateResult } from "@hmmkit/core";
import { BLOCK_BYTES, BLOCK_PAGES } from "./device-table.js";
import { type EvictionHost, makeRoom } from "./eviction.js";
import type { GpuOptions } from "./options.js";
import { computePrefetch, PrefetchScratch } from "./prefetch.js";
import { PTE_DEVICE, PTE_WRITE } from "./pte-encoding.js";
import { BOUNCE_NONE, BOUNCE_PINNED } from "./residency.js";

const PAGE = 4096;
/** Entries per batch the sort key can index (DeviceConfig.faultBuffer's maximum). */
const KEY_INDEX = 65536;
const CANCELLABLE = ["EFAULT", "EPERM", "ENOMEM"] as const;
type CancelErrno = (typeof CANCELLABLE)[number];

type Steps<T> = Generator<string, T, void>;
/** An address space, as the core hands it out (HmmCore.mmById). */
type Mm = NonNullable<ReturnType<HmmCore["mmById"]>>;

/** The errno of an error from the core or mm (HmmError, MmError), or null. */
function errnoOf(e: unknown): string | null {
  if (!(e instanceof Error)) return null;
  const errno = (e as { errno?: unknown }).errno;
  return typeof errno === "string" ? errno : null;
}

/** What the service needs from its driver. */
export interface FaultServiceHost extends EvictionHost {
  readonly options: GpuOptions;
  /** Whether migrations move whole blocks (the device config's compoundMigration). */
  readonly compound: boolean;
  /** Report the table's bytes to the device's stats. */
  reportBytes(): void;
}

/** The errno of a core error that cancels a fault, or null for anything else (rethrown). */
function cancelErrno(e: unknown): CancelErrno | null {
  const errno = errnoOf(e);
  if (e instanceof DriverError || errno === null) return null;
  return (CANCELLABLE as readonly string[]).includes(errno) ? (errno as CancelErrno) : null;
}

/** Services fault batches for one gpu. Scratch arrays are sized once per batch capacity. */
export class FaultService {
  /** Fault batches serviced: the driver's clock for thrashing windows and pins. */
  epoch = 0;
  private keys = new Float64Array(0);
  private order = new Int32Array(0);
  private uVpn = new Float64Array(0);
  private uWrite = new Uint8Array(0);
  private uFirst = new Int32Array(0);
  private uEnd = new Int32Array(0);
  private readonly faulted = new Uint8Array(BLOCK_PAGES);
  private readonly writeMask = new Uint8Array(BLOCK_PAGES);
  private readonly present = new Uint8Array(BLOCK_PAGES);
  private readonly allowed = new Uint8Array(BLOCK_PAGES);
  private readonly migratable = new Uint8Array(BLOCK_PAGES);
  private readonly want = new Uint8Array(BLOCK_PAGES);
  private readonly pf = new Uint8Array(BLOCK_PAGES);
  private readonly ents = new Int32Array(BLOCK_PAGES);
  private readonly scratch = new PrefetchScratch();

  constructor(private readonly h: FaultServiceHost) {}

  private ensure(cap: number): void {
    if (this.keys.length >= cap) return;
    this.keys = new Float64Array(cap);
    this.order = new Int32Array(cap);
    this.uVpn = new Float64Array(cap);
    this.uWrite = new Uint8Array(cap);
    this.uFirst = new Int32Array(cap);
    this.uEnd = new Int32Array(cap);
  }

  /** Service one batch (HmmDriver.handleFaults). */
  *handle(batch: DeviceFaultBatch): Steps<void> {
    const h = this.h;
    h.table.resetCaches();
    this.epoch++;
    h.counters.batches++;
    h.counters.faultEntries += batch.count;
    this.ensure(batch.capacity);
    const done = new Set<number>();
    for (let k = 0; k < batch.count; k++) {
      const mmId = batch.mmId[k];
      if (done.has(mmId)) continue;
      done.add(mmId);
      yield* this.handleMm(batch, mmId);
    }
    h.reportBytes();
  }

  /** Coalesce the entries of `mmId`, then service them block by block. */
  private *handleMm(batch: DeviceFaultBatch, mmId: number): Steps<void> {
    const h = this.h;
    const keys = this.keys;
    let n = 0;
    for (let k = 0; k < batch.count; k++) {
      if (batch.mmId[k] !== mmId) continue;
      // Page number and entry index in one exact double (vpn < 2^35, index < 2^16).
      keys[n++] = (batch.va[k] / PAGE) * KEY_INDEX + k;
    }
    const sorted = keys.subarray(0, n).sort();
    let nu = 0;
    for (let j = 0; j < n; j++) {
      const vpn = Math.floor(sorted[j] / KEY_INDEX);
      const k = sorted[j] - vpn * KEY_INDEX;
      this.order[j] = k;
      if (nu === 0 || this.uVpn[nu - 1] !== vpn) {
        this.uVpn[nu] = vpn;
        this.uWrite[nu] = 0;
        this.uFirst[nu] = j;
        nu++;
      } else h.counters.duplicateFaults++;
      this.uEnd[nu - 1] = j + 1;
      if (batch.isWrite(k)) this.uWrite[nu - 1] = 1;
    }
    const mm = h.core.mmById(mmId);
    if (mm === undefined || mm.exited) {
      for (let u = 0; u < nu; u++) this.cancelPage(batch, u, "EFAULT");
      return;
    }
    for (let u0 = 0; u0 < nu; ) {
      const vb = Math.floor(this.uVpn[u0] / BLOCK_PAGES);
      let u1 = u0 + 1;
      while (u1 < nu && Math.floor(this.uVpn[u1] / BLOCK_PAGES) === vb) u1++;
      yield* this.serviceBlock(batch, mm, vb, u0, u1);
      if (h.device().state !== "active") return;
      u0 = u1;
    }
  }

  private cancelPage(batch: DeviceFaultBatch, u: number, errno: CancelErrno): void {
    for (let j = this.uFirst[u]; j < this.uEnd[u]; j++) batch.cancel(this.order[j], errno);
    this.h.counters.cancelled += this.uEnd[u] - this.uFirst[u];
  }

  /** Pages of block `vb` inside readable VMAs (`allowed`) and inside private ones (`migratable`). */
  private vmaMasks(mm: Mm, vb: number): void {
    const base = vb * BLOCK_BYTES;
    const end = base + BLOCK_BYTES;
    this.allowed.fill(0);
    this.migratable.fill(0);
    for (let v = mm.vmas.findFrom(base); v !== null && v.start < end; v = mm.vmas.findFrom(v.end)) {
      if (!v.readable) continue;
      const lo = Math.max(0, (v.start - base) / PAGE);
      const hi = Math.min(BLOCK_PAGES, (v.end - base) / PAGE);
      this.allowed.fill(1, lo, hi);
      if (!v.shared) this.migratable.fill(1, lo, hi);
    }
  }

  /** Service the unique pages u0..u1-1, all in VA block `vb` of `mm`. */
  private *serviceBlock(batch: DeviceFaultBatch, mm: Mm, vb: number, u0: number, u1: number): Steps<void> {
    const h = this.h;
    const o = h.options;
    const table = h.table;
    h.counters.blocksServiced++;
    const faulted = this.faulted;
    const writeMask = this.writeMask;
    faulted.fill(0);
    writeMask.fill(0);
    for (let u = u0; u < u1; u++) {
      const i = this.uVpn[u] - vb * BLOCK_PAGES;
      faulted[i] = 1;
      writeMask[i] = this.uWrite[u];
    }
    this.vmaMasks(mm, vb);
    table.blockEntriesInto(mm.id, vb, this.ents);
    let migrate = o.migrate === "first-touch";
    if (o.migrate === "access-counter") migrate = table.accessCount(mm.id, vb) >= o.accessThreshold;
    let aux = table.auxOf(mm.id, vb);
    if (migrate && o.thrashing && aux >= 0) {
      if (h.residency.pinned(aux, this.epoch)) {
        migrate = false;
        h.counters.pinnedFaults += u1 - u0;
      } else {
        const r = h.residency.noteMigration(
          aux,
          this.epoch,
          o.thrashingThreshold,
          o.thrashingWindow,
          o.thrashingPinBatches,
        );
        if (r !== BOUNCE_NONE) h.counters.thrashingBounces++;
        if (r === BOUNCE_PINNED) {
          h.counters.thrashingPins++;
          h.counters.pinnedFaults += u1 - u0;
          migrate = false;
        }
      }
    }
    if (migrate) {
      if (aux < 0) {
        const b = table.findOrCreate(mm.id, vb);
        aux = h.residency.alloc(b);
        table.setAux(mm.id, vb, aux);
      }
      h.residency.serviced(aux, this.epoch);
      // An access-counter notification is about the whole block (UVM's access counters count per
      // 2 MiB region by default, uvm_gpu_access_counters.c): migrate all of it.
      yield* this.migrateBlock(mm, vb, aux, h.compound || o.migrate === "access-counter");
      table.resetAccessCount(mm.id, vb);
    } else yield* this.mapRemote(mm, vb);
    if (h.device().state !== "active") return;
    yield* this.fallback(batch, mm, u0, u1);
  }

  /** Prefetch pages for the faulted ones, given `present` (into `pf`); counts nothing. */
  private prefetchInto(): number {
    const o = this.h.options;
    if (!o.prefetch) {
      this.pf.fill(0);
      return 0;
    }
    return computePrefetch(
      this.present,
      this.faulted,
      o.prefetchThreshold,
      o.prefetchGranule,
      o.prefetchWindow,
      this.pf,
      this.scratch,
    );
  }

  /**
   * Migrate the faulted pages and their prefetch; with `wholeBlock` (compoundMigration, or an
   * access-counter notification) every page of the block in private VMAs (the core moves a THP, or
   * a 2 MiB hole, as one device-private PMD when one VMA covers the block).
   */
  private *migrateBlock(mm: Mm, vb: number, aux: number, wholeBlock: boolean): Steps<void> {
    const h = this.h;
    const { present, faulted, pf, want, ents, migratable } = this;
    for (let i = 0; i < BLOCK_PAGES; i++) present[i] = (ents[i] & PTE_DEVICE) !== 0 ? 1 : 0;
    if (wholeBlock)
      for (let i = 0; i < BLOCK_PAGES; i++) pf[i] = faulted[i] || present[i] ? 0 : migratable[i];
    else this.prefetchInto();
    let need = 0;
    let prefetched = 0;
    for (let i = 0; i < BLOCK_PAGES; i++) {
      const w = (faulted[i] | pf[i]) & migratable[i] & (present[i] ^ 1);
      want[i] = w;
      need += w;
      if (w && pf[i]) prefetched++;
    }
    if (need === 0) return;
    yield* makeRoom(h, need, aux, this.epoch);
    const base = vb * BLOCK_BYTES;
    let migrated = 0;
    for (let i = 0; i < BLOCK_PAGES; ) {
      if (!want[i]) {
        i++;
        continue;
      }
      let j = i + 1;
      while (j < BLOCK_PAGES && want[j]) j++;
      h.counters.migrateCalls++;
      try {
        const r: MigrateResult = yield* h.core.migrateToDeviceSteps(
          h.device(),
          mm,
          base + i * PAGE,
          base + j * PAGE,
        );
        migrated += r.migrated;
      } catch (e) {
        // A VMA that changed meanwhile (EINVAL): the fallback maps what did not migrate.
        if (cancelErrno(e) === null && (e instanceof DriverError || errnoOf(e) !== "EINVAL")) throw e;
      }
      if (h.device().state !== "active") return;
      i = j;
    }
    // Count the prefetched pages that made it to the device.
    if (prefetched > 0 && migrated > 0) {
      let n = 0;
      for (let i = 0; i < BLOCK_PAGES; i++)
        if (want[i] && pf[i] && (h.table.entryAt(mm.id, base + i * PAGE) & PTE_DEVICE) !== 0) n++;
      h.device().stats.prefetchedPages += n;
    }
  }

  /** Map the faulted pages (and their prefetch) remotely: one deviceFault per region and access kind. */
  private *mapRemote(mm: Mm, vb: number): Steps<void> {
    const h = this.h;
    const { present, faulted, writeMask, pf, want, ents, allowed } = this;
    for (let i = 0; i < BLOCK_PAGES; i++) {
      const e = ents[i];
      present[i] = e !== 0 && (!writeMask[i] || (e & PTE_WRITE) !== 0) ? 1 : 0;
    }
    this.prefetchInto();
    // want: 0 nothing, 1 read, 2 write (a region never mixes the two).
    let prefetched = 0;
    for (let i = 0; i < BLOCK_PAGES; i++) {
      if (!allowed[i] || present[i]) want[i] = 0;
      else if (faulted[i]) want[i] = writeMask[i] ? 2 : 1;
      else if (pf[i]) {
        want[i] = 1;
        prefetched++;
      } else want[i] = 0;
    }
    const base = vb * BLOCK_BYTES;
    let pfDone = 0;
    for (let i = 0; i < BLOCK_PAGES; ) {
      const kind = want[i];
      if (kind === 0) {
        i++;
        continue;
      }
      let j = i + 1;
      while (j < BLOCK_PAGES && want[j] === kind) j++;
      h.counters.remoteFaultCalls++;
      try {
        yield* h.core.deviceFaultSteps(h.device(), mm, base + i * PAGE, base + j * PAGE, kind === 2);
        if (prefetched > 0) for (let k = i; k < j; k++) if (pf[k] && !faulted[k]) pfDone++;
      } catch (e) {
        // The page at fault is cancelled by the fallback; the pages before it stay mapped.
        if (cancelErrno(e) === null) throw e;
      }
      if (h.device().state !== "active") return;
      i = j;
    }
    h.device().stats.prefetchedPages += pfDone;
  }

  /**
   * Every faulted page of u0..u1 that still has no translation for its access is faulted alone;
   * what the core refuses is cancelled. A write to this device's own read-only page (shared after
   * fork, or mprotect) is reported without WRITE (hmm_vma_handle_pte): the page is brought home
   * first, then faulted for write (the CPU breaks COW).
   */
  private *fallback(batch: DeviceFaultBatch, mm: Mm, u0: number, u1: number): Steps<void> {
    const h = this.h;
    for (let u = u0; u < u1; u++) {
      const va = this.uVpn[u] * PAGE;
      const write = this.uWrite[u] === 1;
      const e = h.table.entryAt(mm.id, va);
      if (e !== 0 && (!write || (e & PTE_WRITE) !== 0)) continue;
      h.counters.fallbackFaults++;
      try {
        const r = yield* h.core.deviceFaultSteps(h.device(), mm, va, va + PAGE, write);
        if (write && r.reportedReadOnly > 0) {
          yield* h.core.migrateToRamSteps(h.device(), mm, va, va + PAGE);
          yield* h.core.deviceFaultSteps(h.device(), mm, va, va + PAGE, true);
        }
      } catch (err) {
        const errno = cancelErrno(err);
        if (errno === null) throw err;
        this.cancelPage(batch, u, errno);
      }
      if (h.device().state !== "active") return;
    }
  }
}
