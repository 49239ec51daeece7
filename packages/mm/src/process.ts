import { alignDown, hex, PAGE_SIZE } from "./constants.js";
import {
  ENTRY_DIRTY,
  ENTRY_KIND_MASK,
  ENTRY_NONE,
  ENTRY_PRESENT,
  ENTRY_YOUNG,
  entryReadable,
  entryWritable,
} from "./entry.js";
import { MmError, SegvError } from "./errors.js";
import { FAULT_FLAG_WRITE, handleMmFault, handlePteFault, VM_FAULT_OOM, VM_FAULT_RETRY } from "./fault.js";
import { dupMm } from "./fork.js";
import type { Mm } from "./mm.js";
import { checkFaultReentry, checkReentry, hasReentryGuard } from "./reentry.js";
import type { MachineState } from "./types.js";
import { badArgument, checkIntegerIn, checkUnsigned, isUserAddress } from "./validate.js";
import type { Vma } from "./vma.js";

/** What a process needs from the machine it runs on ({@link Machine} provides it). */
export interface ProcessHost extends MachineState {
  /** @internal A new process id. */
  newPid(): number;
  /** @internal A new empty address space. */
  newMm(): Mm;
}

/** Result codes of {@link Process.accessPage}. */
export const ACCESS_OK = 0;
/** No VMA at the address (SIGSEGV, SEGV_MAPERR). */
export const ACCESS_SEGV_MAPERR = 1;
/** The VMA forbids the access (SIGSEGV, SEGV_ACCERR). */
export const ACCESS_SEGV_ACCERR = 2;
/** The page is being migrated; the access must wait for the migration to finish and retry. */
export const ACCESS_WAIT_MIGRATION = 3;
/** The fault could not allocate memory. */
export const ACCESS_OOM = 4;
/** The fault failed (SIGBUS), e.g. device memory could not be migrated back. */
export const ACCESS_SIGBUS = 5;

/** Outcome of {@link Process.touch}. */
export interface TouchResult {
  /**
   * Page faults the touch took. The access that raises SIGSEGV is not one (the kernel refuses it
   * before handle_mm_fault); a real process may count one more, taken writing the signal frame.
   */
  faults: number;
  /** Address of the access that raised SIGSEGV, or -1. */
  segvAt: number;
}

// Module-local copies of the sizes the fast path divides by (folded into its loop as constants).
const PAGE_BYTES = 4096;
const PTES = 512;
const PMD_BYTES = PAGE_BYTES * PTES;

/** The most bytes one {@link Process.read} returns (the kernel's MAX_RW_COUNT: INT_MAX & PAGE_MASK). */
export const MAX_RW_COUNT = 0x7fff_f000;

/** Stamp a CPU write uses when the caller gives none: derived from the page's address. */
export function defaultStamp(pageVa: number): number {
  return (Math.floor(pageVa / PAGE_SIZE) * 0x9e3779b1) | 0;
}

/**
 * A simulated process: an address space plus a CPU thread that reads and writes it through the
 * page-fault handler. Every access goes page by page: if the CPU entry allows it, no fault;
 * otherwise one page fault (counted in `minorFaults`), handled as the kernel would.
 */
export class Process {
  /** Page faults handled for this process's CPU accesses (ru_minflt). */
  minorFaults = 0;
  /** Frame (or zero-page frame) the last successful accessPage resolved to. */
  lastPfn = -1;
  exited = false;

  constructor(
    readonly machine: ProcessHost,
    readonly pid: number,
    readonly mm: Mm,
    readonly parent: Process | null,
  ) {}

  /** fork(): a child process with a copy-on-write copy of this address space. */
  fork(): Process {
    if (this.exited) throw new MmError("EINVAL", `fork: process ${this.pid} has exited`);
    checkReentry(this.machine, "fork");
    const child = new Process(this.machine, this.machine.newPid(), this.machine.newMm(), this);
    try {
      dupMm(this.mm, child.mm);
    } finally {
      this.machine.runDeferred();
    }
    return child;
  }

  /** exit(): tear the address space down; its frames are freed unless another process maps them. */
  exit(): void {
    if (this.exited) return;
    this.mm.exit();
    this.exited = true;
  }

  /**
   * One CPU access to the page at `va`. Returns ACCESS_OK (and sets `lastPfn`) or one of the
   * ACCESS_* failure codes. Allocation-free: this is the CPU side of every workload.
   */
  accessPage(va: number, write: boolean): number {
    const mm = this.mm;
    const pt = mm.pt;
    // Outside user space nothing is mapped; the page table must not be indexed there (its top
    // index would wrap an address at or above 2^48 onto a user mapping).
    if (!isUserAddress(va)) {
      this.machine.stats.segv++;
      return ACCESS_SEGV_MAPERR;
    }
    for (let attempt = 0; attempt < 8; attempt++) {
      const slot = pt.pmdSlot(va);
      if (slot >= 0) {
        const leaf = pt.pmdChild[slot] - 1;
        const idx = Math.floor(va / PAGE_SIZE) & 511;
        if (leaf >= 0) {
          const pos = leaf * 512 + idx;
          const f = pt.pteFlags[pos];
          if (write ? entryWritable(f) : entryReadable(f)) {
            pt.pteFlags[pos] = f | ENTRY_YOUNG | (write ? ENTRY_DIRTY : 0);
            this.lastPfn = pt.ptePfn[pos];
            return ACCESS_OK;
          }
        } else {
          const f = pt.pmdFlags[slot];
          if ((f & ENTRY_KIND_MASK) !== ENTRY_NONE && (write ? entryWritable(f) : entryReadable(f))) {
            pt.pmdFlags[slot] = f | ENTRY_YOUNG | (write ? ENTRY_DIRTY : 0);
            this.lastPfn = pt.pmdPfn[slot] + idx;
            return ACCESS_OK;
          }
        }
      }
      const vma = mm.findVma(va);
      if (vma === null) {
        this.machine.stats.segv++;
        return ACCESS_SEGV_MAPERR;
      }
      if (write ? !vma.writable : !vma.readable) {
        this.machine.stats.segv++;
        return ACCESS_SEGV_ACCERR;
      }
      checkFaultReentry(this.machine, write, va);
      this.minorFaults++;
      const r = handleMmFault(mm, vma, va, write ? FAULT_FLAG_WRITE : 0);
      this.machine.runDeferred();
      if (r & VM_FAULT_RETRY) return ACCESS_WAIT_MIGRATION;
      if (r & VM_FAULT_OOM) return ACCESS_OOM;
      if (r !== 0) return ACCESS_SIGBUS;
    }
    throw new MmError("EFAULT", `page fault at ${hex(va)} did not resolve after 8 attempts`, "FAULT_LOOP");
  }

  /**
   * The arguments of a CPU access: non-negative integers (else EINVAL). An access at an address
   * outside user space is not refused here: the CPU raises SIGSEGV there as on an unmapped page.
   */
  private checkAccess(op: string, va: unknown, len: unknown): void {
    if (this.exited) throw new MmError("EINVAL", `${op}: process ${this.pid} has exited`, "MM_EXITED");
    checkUnsigned(op, "address", va);
    checkUnsigned(op, "length", len);
  }

  private fail(code: number, va: number, write: boolean): never {
    const access = write ? "write" : "read";
    switch (code) {
      case ACCESS_SEGV_MAPERR:
        throw new SegvError(va, "no-vma", access);
      case ACCESS_SEGV_ACCERR:
        throw new SegvError(va, "access", access);
      case ACCESS_WAIT_MIGRATION:
        throw new MmError(
          "EBUSY",
          `${access} at ${hex(va)} hit a migration entry; retry after the migration completes`,
          "MIGRATION_WAIT",
        );
      case ACCESS_OOM:
        throw new MmError(
          "ENOMEM",
          `out of memory handling a ${access} fault at ${hex(va)}`,
          "OUT_OF_MEMORY",
        );
      default:
        throw new MmError("EFAULT", `SIGBUS on ${access} at ${hex(va)}`, "SIGBUS");
    }
  }

  /**
   * One access (a read, or a stamped write) at `va`, `va + 4096`, ... while below `va + len`, like
   * the mmoracle `touch`. Stops at the first access that raises SIGSEGV and reports it; other
   * failures throw.
   */
  touch(va: number, len: number, write: boolean, stamp?: number): TouchResult {
    this.checkAccess("touch", va, len);
    if (stamp !== undefined) checkIntegerIn("touch", "stamp", stamp, -(2 ** 31), 2 ** 32 - 1);
    const before = this.minorFaults;
    const content = this.machine.pool.content;
    // The accesses are at va + k * 4096; page p + off is access q, page-aligned once up front.
    const first = alignDown(va, PAGE_SIZE);
    const off = va - first;
    const end = va + len - off;
    // The VMA the fast path may use for the pages below `vmaEnd`; null after anything that could
    // have called out of mm (a notifier, a device, reclaim) and so changed the address space.
    let vma: Vma | null = null;
    let vmaEnd = 0;
    let p = first;
    while (p < end) {
      if (vma === null || p >= vmaEnd) {
        vma = this.fastVma(p, write);
        vmaEnd = vma === null ? 0 : vma.end;
      }
      if (vma !== null) {
        const next = this.fastRun(vma, p, Math.min(end, vmaEnd), write, stamp);
        if (next !== p) {
          p = next;
          continue;
        }
      }
      vma = null;
      const r = this.accessPage(p, write);
      if (r !== ACCESS_OK) {
        if (r === ACCESS_SEGV_MAPERR || r === ACCESS_SEGV_ACCERR)
          return { faults: this.minorFaults - before, segvAt: p + off };
        this.fail(r, p, write);
      }
      if (write) content.stamp(this.lastPfn, stamp ?? defaultStamp(p));
      p += PAGE_SIZE;
    }
    return { faults: this.minorFaults - before, segvAt: -1 };
  }

  /**
   * The VMA at `va` if the fast path of {@link touch} may handle accesses in it: a private VMA
   * that permits the access, on a machine with no re-entry guard. Else null.
   */
  private fastVma(va: number, write: boolean): Vma | null {
    if (hasReentryGuard(this.machine)) return null;
    const vma = this.mm.findVma(va);
    if (vma === null || vma.shared || (write ? !vma.writable : !vma.readable)) return null;
    return vma;
  }

  /**
   * {@link touch}'s accesses from `va` on, in `vma` (from {@link fastVma}), while they stay below
   * `stop` and in one PTE table and need no call out of mm: the PTE allows the access, or its
   * fault is a first touch with a free frame at hand or a COW write that no notifier watches.
   * Those faults are handled exactly as accessPage would (counted, then handle_pte_fault on the
   * PTE, then the safe point) without its per-fault VMA lookup and page table walk. Returns the
   * first address it did not access (`va` itself when accessPage must take that page).
   */
  private fastRun(vma: Vma, va: number, stop: number, write: boolean, stamp: number | undefined): number {
    const mm = this.mm;
    const pt = mm.pt;
    const slot = pt.pmdSlot(va);
    if (slot < 0) return va;
    const leaf = pt.pmdChild[slot] - 1;
    if (leaf < 0) return va;
    const machine = this.machine;
    const content = machine.pool.content;
    const runEnd = Math.min(stop, Math.floor(va / PMD_BYTES) * PMD_BYTES + PMD_BYTES);
    let pos = leaf * PTES + (Math.floor(va / PAGE_BYTES) % PTES);
    let p = va;
    for (; p < runEnd; p += PAGE_BYTES, pos++) {
      let f = pt.pteFlags[pos];
      if (!(write ? entryWritable(f) : entryReadable(f))) {
        const kind = f & ENTRY_KIND_MASK;
        if (kind === ENTRY_NONE) {
          if (!machine.pool.hasFreePage()) return p;
        } else if (!(kind === ENTRY_PRESENT && write && mm.notifiers.size === 0)) return p;
        this.minorFaults++;
        machine.stats.faults++;
        const r = handlePteFault(mm, vma, p, pos, write);
        machine.runDeferred();
        if (r !== 0) this.fail(r & VM_FAULT_OOM ? ACCESS_OOM : ACCESS_SIGBUS, p, write);
        f = pt.pteFlags[pos];
        if (!(write ? entryWritable(f) : entryReadable(f))) return p;
      }
      pt.pteFlags[pos] = f | ENTRY_YOUNG | (write ? ENTRY_DIRTY : 0);
      const pfn = pt.ptePfn[pos];
      this.lastPfn = pfn;
      if (write) content.stamp(pfn, stamp ?? defaultStamp(p));
    }
    return p;
  }

  /** Stamp every page of [va, va + len) (a page-granular write of generated data; both content modes). */
  writeStamp(va: number, len: number, stamp: number): void {
    this.checkAccess("writeStamp", va, len);
    checkIntegerIn("writeStamp", "stamp", stamp, -(2 ** 31), 2 ** 32 - 1);
    const end = va + len;
    const content = this.machine.pool.content;
    for (let p = alignDown(va, PAGE_SIZE); p < end; p += PAGE_SIZE) {
      const r = this.accessPage(p, true);
      if (r !== ACCESS_OK) this.fail(r, p, true);
      content.stamp(this.lastPfn, stamp);
    }
  }

  /** Write `data` at `va` (bytes content mode). */
  write(va: number, data: Uint8Array): void {
    if (!(data instanceof Uint8Array)) throw badArgument("write", "data", data, "a Uint8Array");
    this.checkAccess("write", va, data.length);
    const content = this.machine.pool.content;
    let done = 0;
    while (done < data.length) {
      const a = va + done;
      const off = a % PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - off, data.length - done);
      const r = this.accessPage(a - off, true);
      if (r !== ACCESS_OK) this.fail(r, a, true);
      content.writeBytes(this.lastPfn, off, data, done, n);
      done += n;
    }
  }

  /** Read `len` bytes at `va` (bytes content mode). */
  read(va: number, len: number): Uint8Array {
    this.checkAccess("read", va, len);
    // read(2) never moves more than MAX_RW_COUNT bytes at once; here it bounds the buffer.
    if (len > MAX_RW_COUNT)
      throw new MmError(
        "EINVAL",
        `read: length ${hex(len)} is above MAX_RW_COUNT (${hex(MAX_RW_COUNT)})`,
        "TOO_LARGE",
      );
    const out = new Uint8Array(len);
    const content = this.machine.pool.content;
    let done = 0;
    while (done < len) {
      const a = va + done;
      const off = a % PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - off, len - done);
      const r = this.accessPage(a - off, false);
      if (r !== ACCESS_OK) this.fail(r, a, false);
      content.readBytes(this.lastPfn, off, out, done, n);
      done += n;
    }
    return out;
  }

  /** Content hash of the page at `va` as the CPU reads it (faulting it in for read). */
  readPageHash(va: number): number {
    this.checkAccess("readPageHash", va, 0);
    const r = this.accessPage(alignDown(va, PAGE_SIZE), false);
    if (r !== ACCESS_OK) this.fail(r, va, false);
    return this.machine.pool.content.hash(this.lastPfn);
  }
}
