import { madviseCollapse } from "./collapse.js";
import {
  alignDown,
  alignUp,
  HPAGE_PMD_SIZE,
  hex,
  MADV_COLD,
  MADV_COLLAPSE,
  MADV_DONTNEED,
  MADV_FREE,
  MADV_HUGEPAGE,
  MADV_NOHUGEPAGE,
  MADV_PAGEOUT,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_FIXED_NOREPLACE,
  MAP_NORESERVE,
  MAP_PRIVATE,
  MAP_SHARED,
  PAGE_SIZE,
  PROT_READ,
  PROT_WRITE,
  TASK_SIZE,
} from "./constants.js";
import { ENTRY_KIND_MASK, ENTRY_NONE } from "./entry.js";
import { MmError } from "./errors.js";
import { FRAME_SHMEM } from "./frame-pool.js";
import { madviseFree } from "./madvise-free.js";
import { madviseHoleError, madviseWalkVmas } from "./madvise-walk.js";
import {
  MAP_DROPPABLE,
  MAP_NOT_SIMULATED,
  MAP_NOT_SIMULATED_MASK,
  MAP_STACK,
  MAP_TYPE,
  PROT_EXEC,
  PROT_GROWSDOWN,
  PROT_GROWSUP,
  PROT_SEM,
} from "./mman.js";
import { changeProtection } from "./mprotect.js";
import { mremap } from "./mremap.js";
import { MmuNotifierSubscriptions, MmuNotifyEvent } from "./notifier.js";
import { PageTable } from "./page-table.js";
import { madviseColdOrPageout } from "./pageout.js";
import { checkReentry } from "./reentry.js";
import { ShmemObject } from "./shmem.js";
import { splitHugePmd } from "./thp.js";
import type { MachineState, MmStruct } from "./types.js";
import {
  badArgument,
  bitNames,
  checkAdvice,
  checkFlagWord,
  checkPageAligned,
  checkUnsigned,
  notSimulated,
} from "./validate.js";
import { THP_ADVICE_HUGEPAGE, THP_ADVICE_NOHUGEPAGE, THP_ADVICE_NONE, Vma, VmaList } from "./vma.js";
import { zapRange } from "./zap.js";

/** Arguments of {@link Mm.mmap}. */
export interface MmapOptions {
  /** Hint address, or the exact address with MAP_FIXED / MAP_FIXED_NOREPLACE. */
  addr?: number;
  /** Bytes; rounded up to whole pages. */
  length: number;
  /** PROT_READ | PROT_WRITE, or PROT_NONE. */
  prot: number;
  /** MAP_PRIVATE or MAP_SHARED, with MAP_ANONYMOUS; optionally MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_NORESERVE. */
  flags: number;
}

/** Protection bits a VMA can have in the simulator. */
const PROT_SIMULATED = PROT_READ | PROT_WRITE;

/**
 * `prot` of mmap or mprotect checked: a 32-bit integer without PROT_EXEC / PROT_SEM (not
 * simulated). mprotect also refuses bits Linux does not know (arch_validate_prot); mmap ignores
 * them, as do_mmap does (calc_vm_prot_bits keeps only the access bits).
 */
function checkProt(op: "mmap" | "mprotect", prot: unknown): number {
  const p = checkFlagWord(op, "prot", prot);
  if (p & (PROT_EXEC | PROT_SEM)) throw notSimulated(op, `prot ${hex(p)} (PROT_EXEC / PROT_SEM)`);
  if (op === "mmap") return p & PROT_SIMULATED;
  if (p & (PROT_GROWSDOWN | PROT_GROWSUP)) {
    if ((p & (PROT_GROWSDOWN | PROT_GROWSUP)) === (PROT_GROWSDOWN | PROT_GROWSUP))
      throw new MmError("EINVAL", "mprotect: PROT_GROWSDOWN and PROT_GROWSUP together", "BAD_ARGUMENT");
    throw notSimulated(op, "PROT_GROWSDOWN / PROT_GROWSUP");
  }
  if (p & ~PROT_SIMULATED)
    throw new MmError("EINVAL", `mprotect: unknown prot bits ${hex(p & ~PROT_SIMULATED)}`, "BAD_ARGUMENT");
  return p;
}

/** The madvise advices the simulator implements. */
const MADV_SIMULATED: ReadonlySet<number> = new Set([
  MADV_DONTNEED,
  MADV_FREE,
  MADV_COLD,
  MADV_PAGEOUT,
  MADV_HUGEPAGE,
  MADV_NOHUGEPAGE,
  MADV_COLLAPSE,
]);

/**
 * VM_ACCOUNT as mprotect_fixup changes it before `vma.prot` becomes `prot`: a private VMA that
 * was never writable nor accounted is charged when it becomes writable; one that becomes
 * read-only is uncharged if it has no anon_vma yet (nothing was faulted, so nothing needs the
 * commit). The flag decides later merges and anon_vma sharing (see Vma.account).
 */
function updateAccount(vma: Vma, prot: number): void {
  if (vma.shared || vma.noreserve) return;
  if (prot & PROT_WRITE) {
    if (!vma.account && !vma.writable) vma.account = true;
  } else if (vma.account && vma.anonVma === 0) {
    vma.account = false;
  }
}

/**
 * One simulated address space (the kernel's mm_struct): VMAs, the CPU page table, MMU notifier
 * subscriptions and RSS counters, with the memory syscalls. Errors are those Linux returns for
 * the same arguments, thrown as MmError with the errno name.
 */
export class Mm implements MmStruct {
  readonly pt = new PageTable();
  readonly vmas = new VmaList();
  readonly notifiers: MmuNotifierSubscriptions;
  /** Anonymous pages mapped (4 KiB units). */
  rssAnon = 0;
  /** Shared (shmem) pages mapped. */
  rssShmem = 0;
  /** Device-private entries (pages living in device memory). */
  rssDevice = 0;
  exited = false;

  constructor(
    readonly machine: MachineState,
    readonly id: number,
  ) {
    this.notifiers = new MmuNotifierSubscriptions(id, machine.stats.notifier);
  }

  /** @internal Drop `n` pages of RSS for the folio of `pfn`. */
  rssDrop(pfn: number, n: number): void {
    if (this.machine.pool.flags[pfn] & FRAME_SHMEM) this.rssShmem -= n;
    else this.rssAnon -= n;
  }

  /**
   * Run syscall `name`, then the machine's deferred work (the syscall's end is a safe point). A
   * re-entry guard (see setReentryGuard) may refuse it before anything runs.
   */
  private atSafePoint<T>(op: () => T, name = "a memory syscall"): T {
    checkReentry(this.machine, name);
    try {
      return op();
    } finally {
      this.machine.runDeferred();
    }
  }

  /** The VMA containing `va`, or null. */
  findVma(va: number): Vma | null {
    return this.vmas.find(va);
  }

  private checkAlive(op: string): void {
    if (this.exited) throw new MmError("EINVAL", `${op}: the address space has exited`, "MM_EXITED");
  }

  // ---- mmap / munmap ------------------------------------------------------------------------

  /** mmap(2) of anonymous memory; returns the start address. */
  mmap(opts: MmapOptions): number {
    return this.atSafePoint(() => this.mmapOp(opts), "mmap");
  }

  private mmapOp(opts: MmapOptions): number {
    this.checkAlive("mmap");
    if (typeof opts !== "object" || opts === null)
      throw badArgument("mmap", "options", opts, "an object { addr?, length, prot, flags }");
    const length = checkUnsigned("mmap", "length", opts.length);
    const prot = checkProt("mmap", opts.prot);
    const flags = checkFlagWord("mmap", "flags", opts.flags);
    // A hint outside user space (a negative one included) is ignored, as Linux ignores it.
    if (opts.addr !== undefined && !Number.isSafeInteger(opts.addr))
      throw badArgument("mmap", "addr", opts.addr, "an integer address");
    if (!(flags & MAP_ANONYMOUS)) throw notSimulated("mmap", "a file mapping (flags without MAP_ANONYMOUS)");
    const unmodelled = flags & MAP_NOT_SIMULATED_MASK;
    if (unmodelled) throw notSimulated("mmap", bitNames(unmodelled, MAP_NOT_SIMULATED));
    if (length === 0) throw new MmError("EINVAL", "mmap: length is 0", "BAD_ARGUMENT");
    const len = alignUp(length, PAGE_SIZE);
    // __get_unmapped_area: the length, then a fixed address, is checked against TASK_SIZE.
    if (len > TASK_SIZE) throw new MmError("ENOMEM", `mmap: length ${hex(len)} exceeds the address space`);
    // do_mmap (Linux 6.18) refuses a new mapping once map_count is above vm.max_map_count.
    if (this.vmas.size > this.machine.config.maxMapCount) throw this.mapCountError("mmap");
    const fixed = (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) !== 0;
    let addr: number;
    if (fixed) {
      if (opts.addr === undefined)
        throw new MmError("EINVAL", "mmap: MAP_FIXED needs an address (addr)", "BAD_ARGUMENT");
      addr = checkUnsigned("mmap", "addr", opts.addr);
      if (addr > TASK_SIZE - len)
        throw new MmError("ENOMEM", `mmap: [${hex(addr)}, +${hex(len)}) is beyond TASK_SIZE`, "BAD_ADDRESS");
      if (addr % PAGE_SIZE !== 0)
        throw new MmError(
          "EINVAL",
          `mmap: MAP_FIXED address ${hex(addr)} is not page aligned`,
          "BAD_ARGUMENT",
        );
      // security_mmap_addr (cap_mmap_addr): below vm.mmap_min_addr needs CAP_SYS_RAWIO.
      if (addr < this.machine.config.mmapMinAddr) {
        throw new MmError(
          "EPERM",
          `mmap: MAP_FIXED address ${hex(addr)} is below vm.mmap_min_addr (${hex(this.machine.config.mmapMinAddr)}; MachineConfig.mmapMinAddr)`,
          "BELOW_MMAP_MIN_ADDR",
        );
      }
    } else {
      addr = this.getUnmappedArea(opts.addr, len);
    }
    // do_mmap checks the mapping type only after placing it; nothing has changed yet.
    const type = flags & MAP_TYPE;
    if (type !== MAP_SHARED && type !== MAP_PRIVATE) {
      if (type === MAP_DROPPABLE) throw notSimulated("mmap", "MAP_DROPPABLE");
      throw new MmError(
        "EINVAL",
        `mmap: mapping type ${hex(type)} in flags ${hex(flags)} is neither MAP_SHARED nor MAP_PRIVATE`,
        "BAD_ARGUMENT",
      );
    }
    if (fixed && this.vmas.intersects(addr, addr + len)) {
      if (flags & MAP_FIXED_NOREPLACE) {
        throw new MmError(
          "EEXIST",
          `mmap: MAP_FIXED_NOREPLACE range [${hex(addr)}, ${hex(addr + len)}) is in use`,
        );
      }
      this.munmap(addr, len);
    }
    const shared = type === MAP_SHARED;
    const shmem = shared ? new ShmemObject(this.machine.newShmemId(), len / PAGE_SIZE) : null;
    if (shmem) shmem.users = 1;
    const vma = new Vma(
      addr,
      addr + len,
      prot,
      shared,
      THP_ADVICE_NONE,
      (flags & MAP_NORESERVE) !== 0,
      0,
      shmem,
      // vm_pgoff: a shared mapping's offset in its object; a private one's is its page number,
      // which mremap keeps, so a page's linear index stays what it was when it was faulted.
      shared ? 0 : addr / PAGE_SIZE,
    );
    // accountable_mapping: private writable memory is charged unless MAP_NORESERVE.
    vma.account = !shared && (flags & MAP_NORESERVE) === 0 && (prot & PROT_WRITE) !== 0;
    // calc_vm_flag_bits: since Linux 6.7 MAP_STACK implies VM_NOHUGEPAGE.
    if (flags & MAP_STACK) vma.thpAdvice = THP_ADVICE_NOHUGEPAGE;
    this.vmas.insert(vma);
    this.vmas.mergeAround(addr, addr + len);
    return addr;
  }

  /** @internal get_unmapped_area for an anonymous mapping of `len` bytes (top-down, THP-aligned). */
  getUnmappedArea(hint: number | undefined, len: number): number {
    // round_hint_to_min: the hint is rounded down to a page and, unless that leaves none, raised
    // to mmap_min_addr; a hint that does not fit in user space or overlaps a mapping is ignored
    // (arch_get_unmapped_area_topdown, mmap_address_hint_valid).
    const h0 = hint === undefined || hint < 0 ? 0 : alignDown(hint, PAGE_SIZE);
    if (h0 !== 0) {
      const h = Math.max(h0, this.machine.config.mmapMinAddr);
      if (h <= TASK_SIZE - len && !this.vmas.intersects(h, h + len)) return h;
    }
    // Anonymous mappings whose length is a multiple of 2 MiB are placed 2 MiB aligned when THP is
    // enabled (thp_get_unmapped_area): take len + 2 MiB from the highest gap, then align.
    const thpAlign = this.machine.config.thp !== "never" && len % HPAGE_PMD_SIZE === 0;
    const need = thpAlign ? len + HPAGE_PMD_SIZE : len;
    const top = this.vmas.topDownGap(this.machine.config.mmapMinAddr, this.machine.config.mmapBase, need);
    if (top >= 0) {
      const ret = top - need;
      if (!thpAlign) return ret;
      const off = ret % HPAGE_PMD_SIZE;
      return off === 0 ? ret + HPAGE_PMD_SIZE : ret + (HPAGE_PMD_SIZE - off);
    }
    throw new MmError(
      "ENOMEM",
      `mmap: no free range of ${len} bytes below ${hex(this.machine.config.mmapBase)}`,
    );
  }

  /** munmap(2). Holes in the range are ignored, as in Linux. */
  munmap(addr: number, length: number): void {
    this.atSafePoint(() => this.munmapOp(addr, length), "munmap");
  }

  /** @internal munmap without the safe point (for syscalls built on it). */
  munmapOp(addr: number, length: number): void {
    this.checkAlive("munmap");
    checkPageAligned("munmap", "address", addr);
    checkUnsigned("munmap", "length", length);
    // do_vmi_munmap: a range reaching past TASK_SIZE is EINVAL, as is an empty one.
    if (addr > TASK_SIZE || length > TASK_SIZE - addr) {
      throw new MmError(
        "EINVAL",
        `munmap: [${hex(addr)}, +${hex(length)}) is beyond TASK_SIZE`,
        "BAD_ADDRESS",
      );
    }
    if (length === 0) throw new MmError("EINVAL", "munmap: length is 0", "BAD_ARGUMENT");
    const len = alignUp(length, PAGE_SIZE);
    const end = addr + len;
    if (!this.vmas.intersects(addr, end)) return;
    // vms_gather_munmap_vmas: punching a hole into one VMA adds one; refused at vm.max_map_count.
    const first = this.vmas.find(addr);
    if (
      first !== null &&
      first.start < addr &&
      end < first.end &&
      this.vmas.size >= this.machine.config.maxMapCount
    )
      throw this.mapCountError("munmap");
    this.splitVmaAt(addr);
    this.splitVmaAt(end);
    const removed = this.vmas.removeRange(addr, end);
    // unmap_vmas notifies the whole requested range, holes included (vms->start, vms->end).
    this.notifiers.invalidate(addr, end, MmuNotifyEvent.UNMAP, null, () => {
      for (const v of removed) zapRange(this, v.start, v.end);
    });
    for (const v of removed) this.releaseVma(v);
  }

  private mapCountError(op: string): MmError {
    const max = this.machine.config.maxMapCount;
    return new MmError(
      "ENOMEM",
      `${op}: ${this.vmas.size} VMAs already mapped and vm.max_map_count is ${max} (MachineConfig.maxMapCount)`,
      "MAP_COUNT",
    );
  }

  /**
   * split_vma as vma_modify calls it for mprotect and madvise: refused with ENOMEM once the address
   * space has vm.max_map_count VMAs. The kernel first tries to merge the changed range into a
   * neighbour, which needs no split; at the limit such a change is refused here although Linux
   * would make it.
   */
  private splitForModify(op: string, addr: number): void {
    const v = this.vmas.find(addr);
    if (v === null || v.start === addr) return;
    if (this.vmas.size >= this.machine.config.maxMapCount) throw this.mapCountError(op);
    this.splitVmaAt(addr);
  }

  /**
   * Make `addr` a VMA boundary (split_vma). A huge PMD the new boundary would cut through is split
   * first (vma_adjust_trans_huge), so that no huge PMD ever straddles two VMAs.
   */
  /** @internal */
  splitVmaAt(addr: number): void {
    const v = this.vmas.find(addr);
    if (v === null || v.start === addr) return;
    if (addr % HPAGE_PMD_SIZE !== 0) {
      const pt = this.pt;
      const slot = pt.pmdSlot(addr);
      // Any huge entry: a THP, a PMD migration entry or a device-private PMD (split_huge_pmd_if_needed).
      if (slot >= 0 && pt.pmdChild[slot] === 0 && (pt.pmdFlags[slot] & ENTRY_KIND_MASK) !== ENTRY_NONE) {
        splitHugePmd(this, slot, alignDown(addr, HPAGE_PMD_SIZE));
      }
    }
    this.vmas.splitAt(addr);
  }

  /** @internal Drop a removed VMA's reference on its shared object. */
  releaseVma(v: Vma): void {
    if (!v.shmem) return;
    if (--v.shmem.users > 0) return;
    // Last user of the shared object: drop the page-cache references.
    const pool = this.machine.pool;
    const pages = v.shmem.pages;
    for (let i = 0; i < pages.length; i++) {
      if (pages[i] !== 0) {
        pool.put(pages[i] - 1);
        pages[i] = 0;
      }
    }
  }

  // ---- mprotect -----------------------------------------------------------------------------

  /**
   * mprotect(2). A hole in the range gives ENOMEM after the part before the hole was changed,
   * as in Linux. A zero length succeeds without doing anything.
   */
  mprotect(addr: number, length: number, prot: number): void {
    this.atSafePoint(() => this.mprotectOp(addr, length, prot), "mprotect");
  }

  private mprotectOp(addr: number, length: number, prot: number): void {
    this.checkAlive("mprotect");
    checkPageAligned("mprotect", "address", addr);
    checkUnsigned("mprotect", "length", length);
    checkFlagWord("mprotect", "prot", prot);
    // do_mprotect_pkey: a zero length succeeds before prot is looked at.
    if (length === 0) return;
    checkProt("mprotect", prot);
    const end = addr + alignUp(length, PAGE_SIZE);
    let v = this.vmas.findFrom(addr);
    if (v === null || v.start > addr) {
      throw new MmError("ENOMEM", `mprotect: ${hex(addr)} is not mapped`);
    }
    let cur = addr;
    try {
      while (cur < end) {
        v = this.vmas.findFrom(cur);
        if (v === null || v.start > cur) {
          throw new MmError(
            "ENOMEM",
            `mprotect: hole at ${hex(cur)} inside [${hex(addr)}, ${hex(end)}); the part before it was changed`,
          );
        }
        const segEnd = Math.min(end, v.end);
        // mprotect_fixup leaves a VMA that already has the protection alone: it is not split, so
        // a THP that the range cuts through keeps its PMD.
        if (v.prot !== prot) {
          this.applyToRange("mprotect", cur, segEnd, (vma) => {
            updateAccount(vma, prot);
            vma.prot = prot;
            changeProtection(this, vma, vma.start, vma.end);
          });
        }
        cur = segEnd;
      }
    } finally {
      // mprotect_fixup merges each changed VMA with its neighbours as it goes, so the part changed
      // before a hole is merged even though the call then fails with ENOMEM.
      this.vmas.mergeAround(addr, cur);
    }
  }

  /** Split VMAs so that [start, end) (inside one VMA) is its own VMA, then apply `fn` to it. */
  private applyToRange(op: string, start: number, end: number, fn: (vma: Vma) => void): void {
    this.splitForModify(op, start);
    this.splitForModify(op, end);
    fn(this.vmas.find(start)!);
  }

  // ---- madvise ------------------------------------------------------------------------------

  /**
   * madvise(2) with MADV_DONTNEED, MADV_FREE, MADV_COLD, MADV_PAGEOUT, MADV_HUGEPAGE,
   * MADV_NOHUGEPAGE or MADV_COLLAPSE. The advice is applied to every mapped part of the range in
   * turn; if the range had a hole the call then fails with ENOMEM, as in Linux. MADV_FREE stops
   * with EINVAL at the first shared VMA (after freeing the parts before it); MADV_COLLAPSE gives
   * the errors described at {@link madviseCollapse}.
   */
  madvise(addr: number, length: number, advice: number): void {
    this.atSafePoint(() => this.madviseOp(addr, length, advice), "madvise");
  }

  private madviseOp(addr: number, length: number, advice: number): void {
    this.checkAlive("madvise");
    // is_valid_madvise: the advice, then the alignment; a range past TASK_SIZE finds no VMA (ENOMEM).
    checkAdvice("madvise", advice, MADV_SIMULATED);
    checkPageAligned("madvise", "address", addr);
    checkUnsigned("madvise", "length", length);
    const end = addr + alignUp(length, PAGE_SIZE);
    if (end === addr) return;
    if (advice === MADV_COLLAPSE) {
      madviseCollapse(this, addr, end);
      return;
    }
    const hugeAdvice = advice === MADV_HUGEPAGE || advice === MADV_NOHUGEPAGE;
    const hole = madviseWalkVmas(this, addr, end, (v, cur, segEnd) => {
      if (advice === MADV_DONTNEED) {
        this.notifiers.invalidate(cur, segEnd, MmuNotifyEvent.CLEAR, null, () =>
          zapRange(this, cur, segEnd, true),
        );
      } else if (advice === MADV_FREE) {
        // madvise_free_single_vma: only anonymous VMAs (shared anonymous memory is shmem).
        if (v.shared) throw new MmError("EINVAL", `madvise: MADV_FREE of shared mapping ${v} at ${hex(cur)}`);
        madviseFree(this, cur, segEnd);
      } else if (advice === MADV_COLD || advice === MADV_PAGEOUT) {
        madviseColdOrPageout(this, v, cur, segEnd, advice === MADV_PAGEOUT);
      } else {
        const want = advice === MADV_HUGEPAGE ? THP_ADVICE_HUGEPAGE : THP_ADVICE_NOHUGEPAGE;
        if (v.thpAdvice !== want) this.applyToRange("madvise", cur, segEnd, (vma) => (vma.thpAdvice = want));
      }
    });
    if (hugeAdvice) this.vmas.mergeAround(addr, end);
    if (hole) throw madviseHoleError(addr, end);
  }

  // ---- mremap ------------------------------------------------------------------------------

  /**
   * mremap(2): resize [addr, addr + oldLen) to newLen, in place or (MREMAP_MAYMOVE) by moving it;
   * MREMAP_FIXED moves it to `newAddr`, replacing what is there; MREMAP_DONTUNMAP leaves the old
   * range mapped and empty. Returns the new address. Errors are those of Linux (EINVAL, EFAULT,
   * ENOMEM); see mremap.ts.
   */
  mremap(addr: number, oldLen: number, newLen: number, flags: number, newAddr = 0): number {
    return this.atSafePoint(() => {
      this.checkAlive("mremap");
      return mremap(this, addr, oldLen, newLen, flags, newAddr);
    }, "mremap");
  }

  // ---- exit ---------------------------------------------------------------------------------

  /**
   * Tear the address space down (exit_mmap): every interval notifier gets RELEASE over the whole
   * address space, then all mappings are unmapped and all page tables freed.
   */
  exit(): void {
    this.atSafePoint(() => this.exitOp(), "exit");
  }

  private exitOp(): void {
    if (this.exited) return;
    if (this.notifiers.size > 0)
      this.notifiers.invalidate(0, TASK_SIZE, MmuNotifyEvent.RELEASE, null, () => {});
    if (this.vmas.size > 0) {
      const removed = this.vmas.removeAll();
      // exit_mmap unmaps with one UNMAP over the whole address space, as for RELEASE above.
      this.notifiers.invalidate(0, TASK_SIZE, MmuNotifyEvent.UNMAP, null, () => {
        for (const v of removed) zapRange(this, v.start, v.end);
      });
      for (const v of removed) this.releaseVma(v);
    }
    this.exited = true;
    this.machine.mms.delete(this);
  }

  /** Total mapped pages of every kind (anon + shmem + device-private). */
  get rss(): number {
    return this.rssAnon + this.rssShmem + this.rssDevice;
  }
}
