import {
  alignDown,
  ENTRY_DEVICE_PRIVATE,
  ENTRY_KIND_MASK,
  ENTRY_MIGRATION,
  ENTRY_OWNER_MASK,
  ENTRY_OWNER_SHIFT,
  ENTRY_PRESENT,
  ENTRY_PROTNONE,
  ENTRY_WRITE,
  FAULT_FLAG_REMOTE,
  FAULT_FLAG_WRITE,
  HPAGE_PMD_SIZE,
  handleMmFault,
  hex,
  type Mm,
  PAGE_SIZE,
  VM_FAULT_OOM,
  VM_FAULT_RETRY,
} from "@hmmkit/mm";
import type { Device } from "./device.js";
import { HmmError } from "./errors.js";
import { HMM_PFN_ORDER_SHIFT, hmmFlagsOfDevicePrivate, hmmFlagsOfPresent } from "./flags.js";
import type { PmdSet } from "./pmd-set.js";
import { checkRange } from "./range.js";
import type { Steps } from "./scheduler.js";

/** What a device fault did. */
export interface DeviceFaultResult {
  /** Pages reported to the driver (a huge PMD counts its 512 pages). */
  pages: number;
  /** CPU faults run on the device's behalf. */
  cpuFaults: number;
  /** Chunks walked again because an invalidation overlapped them. */
  retries: number;
  /**
   * Pages of a write fault reported without WRITE: this device's own device-private pages that
   * are not writable (shared after fork, or after mprotect of migrated pages). hmm_range_fault
   * reports such a page and never faults it (hmm_vma_handle_pte: the dev_private_owner matches,
   * "just report the PFN"); the driver decides (lib/test_hmm.c's dmirror_do_fault returns
   * EFAULT and the page stays on the device). Always 0 for a read fault.
   */
  reportedReadOnly: number;
}

// Module-local copies of the entry encoding (the one source of truth stays @hmmkit/mm's
// entry.ts). V8 folds a module's own `const` numbers into the optimized walk but loads an
// imported binding from its module cell at every use: a walk loop with imported constants ran
// 1.85-2.3x slower than with literals, with local copies 1.05x (node 20, bench notes in README).
const KIND_MASK = ENTRY_KIND_MASK;
const PRESENT = ENTRY_PRESENT;
const MIGRATION = ENTRY_MIGRATION;
const DEVICE_PRIVATE = ENTRY_DEVICE_PRIVATE;
const WRITE = ENTRY_WRITE;
const PROTNONE = ENTRY_PROTNONE;
const OWNER_SHIFT = ENTRY_OWNER_SHIFT;
const OWNER_MASK = ENTRY_OWNER_MASK;

const WALK_OK = 0;
const WALK_WAIT = 1;
const CHUNK_SEG_TABLE = 0;
const CHUNK_SEG_HUGE = 1;

/** Per-fault scratch: where the walked chunk lives and its translated flags. */
class FaultChunk {
  kind = CHUNK_SEG_TABLE;
  /** First PTE position of the chunk in mm.pt.ptePfn (SEG_TABLE). */
  pos = 0;
  count = 0;
  hugePfn = 0;
  hugeFlags = 0;
  /** Pages of the chunk reported without WRITE on a write fault (own read-only device pages). */
  readOnly = 0;
  readonly flags = new Int32Array(512);
}

/**
 * Walk [va, end) (inside one PMD) and make every page valid for the access, as hmm_range_fault
 * with HMM_PFN_REQ_FAULT (and REQ_WRITE) does: none entries, write-protected entries on a write
 * fault, other devices' private pages and device-exclusive entries are faulted through
 * handle_mm_fault; this device's private pages are reported as they are, never faulted, even
 * read-only ones on a write fault (hmm_vma_handle_pte with a matching dev_private_owner); a
 * migration entry makes the walk wait. Fills `out` with the chunk's location and HMM flags.
 *
 * Errors come as the walk reaches them, after the pages before them were faulted in (as
 * hmm_range_fault, which faults as it walks): a page with no VMA or in a PROT_NONE VMA is EFAULT
 * (hmm_vma_walk_test / hmm_vma_walk_hole), a write fault in a VMA without VM_WRITE is EPERM
 * (hmm_vma_fault).
 */
function walkChunk(
  dev: Device,
  mm: Mm,
  va: number,
  end: number,
  write: boolean,
  out: FaultChunk,
  faults: { n: number },
): number {
  const pt = mm.pt;
  const owner = dev.ownerId;
  const n = (end - va) / PAGE_SIZE;
  out.count = n;
  for (let pass = 0; pass < 8; pass++) {
    out.readOnly = 0;
    const slot = pt.pmdSlot(va);
    let need = 0; // index of the first page that needs a fault
    if (slot >= 0) {
      const leaf = pt.pmdChild[slot] - 1;
      if (leaf < 0) {
        const f = pt.pmdFlags[slot];
        const kind = f & KIND_MASK;
        if (kind === PRESENT && !(f & PROTNONE) && (!write || f & WRITE)) {
          out.kind = CHUNK_SEG_HUGE;
          out.hugePfn = pt.pmdPfn[slot];
          out.hugeFlags = hmmFlagsOfPresent(f) | (9 << HMM_PFN_ORDER_SHIFT);
          return WALK_OK;
        }
        if (kind === DEVICE_PRIVATE && ((f >>> OWNER_SHIFT) & OWNER_MASK) === owner) {
          // hmm_vma_handle_absent_pmd: this device's own device-private PMD is reported with the
          // PMD order and never faulted, even for a write to a read-only one (after fork).
          out.kind = CHUNK_SEG_HUGE;
          out.hugePfn = pt.pmdPfn[slot];
          out.hugeFlags = hmmFlagsOfDevicePrivate(f) | (9 << HMM_PFN_ORDER_SHIFT);
          if (write && !(f & WRITE)) out.readOnly = 512;
          return WALK_OK;
        }
        if (kind === MIGRATION) return WALK_WAIT;
      } else {
        const base = leaf * 512 + (Math.floor(va / PAGE_SIZE) & 511);
        const flagsArr = pt.pteFlags;
        const outFlags = out.flags;
        need = n;
        for (let i = 0; i < n; i++) {
          const f = flagsArr[base + i];
          const kind = f & KIND_MASK;
          if (kind === PRESENT) {
            if (f & PROTNONE || (write && !(f & WRITE))) {
              need = i;
              break;
            }
            outFlags[i] = hmmFlagsOfPresent(f);
          } else if (kind === DEVICE_PRIVATE && ((f >>> OWNER_SHIFT) & OWNER_MASK) === owner) {
            if (write && !(f & WRITE)) out.readOnly++;
            outFlags[i] = hmmFlagsOfDevicePrivate(f);
          } else if (kind === MIGRATION) {
            return WALK_WAIT;
          } else {
            need = i;
            break;
          }
        }
        if (need === n) {
          out.kind = CHUNK_SEG_TABLE;
          out.pos = base;
          return WALK_OK;
        }
      }
    }
    // Fault every page from the first that needs it to the end of the chunk (hmm_vma_fault does
    // the same), skipping pages an earlier fault already populated (a THP, fault-around); then
    // walk again.
    for (let i = need; i < n; i++) {
      const a = va + i * PAGE_SIZE;
      if (!needsFault(mm, a, write, owner)) continue;
      const vma = mm.findVma(a);
      const done = a > va ? `; [${hex(va)}, ${hex(a)}) stays faulted in, this chunk is not reported` : "";
      if (vma === null) throw new HmmError("EFAULT", `device fault: no mapping at ${hex(a)}${done}`);
      if (!vma.readable)
        throw new HmmError("EFAULT", `device fault: ${hex(a)} is in a PROT_NONE mapping ${vma}${done}`);
      if (write && !vma.writable)
        throw new HmmError(
          "EPERM",
          `device fault: write fault at ${hex(a)} in read-only mapping ${vma}${done}`,
        );
      faults.n++;
      dev.stats.cpuFaultsForDevice++;
      const r = handleMmFault(mm, vma, a, FAULT_FLAG_REMOTE | (write ? FAULT_FLAG_WRITE : 0));
      if (r & VM_FAULT_RETRY) return WALK_WAIT;
      if (r & VM_FAULT_OOM) throw new HmmError("ENOMEM", `device fault: out of memory faulting ${hex(a)}`);
      if (r !== 0)
        throw new HmmError("EFAULT", `device fault: CPU fault at ${hex(a)} failed (vm_fault ${r})`);
    }
  }
  throw new HmmError("EBUSY", `device fault: [${hex(va)}, ${hex(end)}) did not settle after 8 passes`);
}

/**
 * True if the entry at `va` must be faulted for the access by device `owner` (hmm_pte_need_fault);
 * the owner's own device-private pages never are.
 */
function needsFault(mm: Mm, va: number, write: boolean, owner: number): boolean {
  const pt = mm.pt;
  const slot = pt.pmdSlot(va);
  if (slot < 0) return true;
  const leaf = pt.pmdChild[slot] - 1;
  let f: number;
  if (leaf < 0) f = pt.pmdFlags[slot];
  else f = pt.pteFlags[leaf * 512 + (Math.floor(va / PAGE_SIZE) & 511)];
  const kind = f & KIND_MASK;
  if (kind === PRESENT) return (f & PROTNONE) !== 0 || (write && !(f & WRITE));
  if (kind === DEVICE_PRIVATE && ((f >>> OWNER_SHIFT) & OWNER_MASK) === owner) return false;
  return kind !== MIGRATION;
}

/** The interval notifier calls a fault needs. */
export interface FaultNotifier {
  readBegin(): number;
  readRetry(seq: number): boolean;
}

/** State of one device fault: the walk and commit of each PMD-sized chunk. */
export class DeviceFaultOp {
  readonly result: DeviceFaultResult = { pages: 0, cpuFaults: 0, retries: 0, reportedReadOnly: 0 };
  private readonly chunk = new FaultChunk();
  private readonly faults = { n: 0 };

  constructor(
    readonly dev: Device,
    readonly mm: Mm,
    readonly notifier: FaultNotifier,
    readonly start: number,
    readonly end: number,
    readonly write: boolean,
    /** PMD indices of the regions reported to the device in `mm` (DeviceBinding.reported). */
    private readonly reported: PmdSet | null = null,
  ) {
    checkRange("device fault", start, end);
    if (mm.exited) throw new HmmError("EFAULT", `device fault: address space ${mm.id} has exited`);
    dev.stats.deviceFaults++;
    if (dev.servicingBatch) dev.stats.batchedDeviceFaults++;
  }

  /** End of the chunk that starts at `va` (the next PMD boundary, or the end). */
  chunkEnd(va: number): number {
    return Math.min(alignDown(va, HPAGE_PMD_SIZE) + HPAGE_PMD_SIZE, this.end);
  }

  /** read_begin, then walk and fault [va, chunkEnd). Returns the sequence, or -1 to wait for a migration. */
  walk(va: number, chunkEnd: number): number {
    this.dev.stats.faultChunks++;
    const seq = this.notifier.readBegin();
    if (walkChunk(this.dev, this.mm, va, chunkEnd, this.write, this.chunk, this.faults) === WALK_WAIT) {
      this.retried();
      return -1;
    }
    return seq;
  }

  /** Count a retry of the current chunk. */
  retried(): void {
    this.result.retries++;
    this.dev.stats.retries++;
  }

  /**
   * Under the driver lock: if no invalidation ran since `seq`, report the walked chunk to the
   * driver and return true; otherwise return false (walk it again).
   */
  commit(va: number, seq: number): boolean {
    if (this.notifier.readRetry(seq)) {
      this.retried();
      return false;
    }
    const dev = this.dev;
    if (dev.state !== "active") throw dev.failure ?? new HmmError("ENODEV", `device ${dev.name} was removed`);
    const disp = dev.dispatcher;
    const chunk = this.chunk;
    let ok: boolean;
    let pages: number;
    const pmd = Math.floor(va / HPAGE_PMD_SIZE);
    if (chunk.kind === CHUNK_SEG_HUGE) {
      ok = disp.mirrorPmd(this.mm.id, pmd * HPAGE_PMD_SIZE, chunk.hugePfn, chunk.hugeFlags);
      pages = 512;
    } else {
      ok = disp.mirrorRange(this.mm.id, va, chunk.count, this.mm.pt.ptePfn, chunk.pos, chunk.flags, 0);
      pages = chunk.count;
    }
    if (!ok) throw disp.failure!;
    this.reported?.add(pmd);
    this.result.pages += pages;
    this.result.reportedReadOnly += chunk.readOnly;
    dev.stats.pagesMirrored += pages;
    return true;
  }

  /** The result, once every chunk committed. */
  finish(): DeviceFaultResult {
    this.result.cpuFaults = this.faults.n;
    return this.result;
  }
}

/**
 * A device fault on [start, end) run to completion on the calling thread: the same walk and
 * commit as {@link deviceFaultSteps} without preemption points. A migration in flight gives EBUSY.
 */
export function deviceFaultSync(op: DeviceFaultOp): DeviceFaultResult {
  let va = op.start;
  while (va < op.end) {
    const chunkEnd = op.chunkEnd(va);
    for (;;) {
      const seq = op.walk(va, chunkEnd);
      if (seq < 0)
        throw new HmmError(
          "EBUSY",
          `device fault: a migration is in flight in [${hex(va)}, ${hex(chunkEnd)})`,
        );
      if (op.commit(va, seq)) break;
    }
    va = chunkEnd;
  }
  return op.finish();
}

/**
 * A device fault on [start, end) of `mm` for read or write, as a step generator. For each
 * PMD-sized chunk: read_begin on the device's interval notifier, walk and fault (as
 * hmm_range_fault does under the mmap read lock), a preemption point, then under the driver lock
 * read_retry: if an invalidation ran meanwhile the chunk is walked again, otherwise its entries
 * go to the driver (per PTE, per huge PMD or as an array). Errors (EFAULT outside VMAs or on
 * PROT_NONE, EPERM for a write to a read-only VMA) come when the walk reaches them, as in
 * hmm_range_fault: pages before the error stay faulted in, and the chunks committed before the
 * error stay committed (what a kernel driver calling hmm_range_fault per chunk, as
 * lib/test_hmm.c's dmirror_fault does per 64 pages, would hold); the chunk holding the error is
 * not reported.
 */
export function* deviceFaultSteps(op: DeviceFaultOp): Steps<DeviceFaultResult> {
  let va = op.start;
  while (va < op.end) {
    const chunkEnd = op.chunkEnd(va);
    for (;;) {
      const seq = op.walk(va, chunkEnd);
      if (seq < 0) {
        yield "fault:wait-migration";
        continue;
      }
      yield "fault:walk→commit";
      if (op.commit(va, seq)) break;
    }
    va = chunkEnd;
    if (va < op.end) yield "fault:next-pmd";
  }
  return op.finish();
}
