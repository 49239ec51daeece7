import {
  DriverError,
  HMM_PFN_VALID,
  HMM_PFN_WRITE,
  HmmError,
  hmmPfnToMapOrder,
  type Steps,
  snapshotRange,
} from "@hmmkit/core";
import { EACCES, EAGAIN, EBUSY, EFAULT, EINVAL, ENODEV, ENOENT, ENOMEM, errnoOf } from "./errors.js";
import { type FaultMirror, PAGE_SIZE, PMD_SIZE } from "./types.js";

/** Internal: the walk met entries that needed CPU faults (-ENOENT) and the core's walk ran them. */
const ENOENT_FAULTED = 1000;

/** Restarts (-EAGAIN) one fault may take before it gives up with -EBUSY (v12 loops without bound). */
export const MAX_FAULT_RETRIES = 64;

const TASK_SIZE = 2 ** 47 - PAGE_SIZE;

/** Outcome of one walk of hmm_mirror_handle_fault. */
interface Walk {
  ret: number;
  /** Where the walk stopped (mirror_fault->addr). */
  addr: number;
  /** The lowest address it filled (a huge PMD is filled from its start). */
  from: number;
  /** The end of what it filled (a huge PMD to its end). */
  to: number;
}

/**
 * hmm_mirror_fault (mm/hmm.c of v12, "HMM: add device page fault support v6"), as steps. For each
 * VMA of [start, end) in turn (v12 clips the event to the first VMA and the caller goes on; here
 * the fault goes on itself): refuse a write fault on a VMA without VM_WRITE (-EACCES,
 * hmm_mirror_handle_fault), walk the range PMD by PMD filling hmm_pt, then call the driver's
 * `update` with HMM_DEVICE_RFAULT / HMM_DEVICE_WFAULT for what was filled. A walk that meets a
 * missing or write-protected CPU entry (-ENOENT) runs the CPU fault from there to the end
 * (hmm_mm_fault) and restarts (-EAGAIN); so does a huge PMD that changed under the walk. The
 * mirror must still be attached (mirror->hmm, hmm_mirror_is_dead) at every restart.
 */
export function* hmmMirrorFaultSteps(
  mirror: FaultMirror,
  start: number,
  end: number,
  write: boolean,
): Steps<number> {
  const sm = mirror.device;
  sm.counters.mirrorFaults++;
  if (mirror.hmm === null) return -ENODEV;
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0) return -EINVAL;
  // hmm_event_init: start &= PAGE_MASK, end = PAGE_ALIGN(min(end, vm_end)); empty is -EINVAL.
  start -= start % PAGE_SIZE;
  const stop = Math.ceil(Math.min(end, TASK_SIZE) / PAGE_SIZE) * PAGE_SIZE;
  if (start >= stop) return -EINVAL;
  const it = mirror.iter();
  let addr = start;
  let retries = 0;
  try {
    while (addr < stop) {
      // retry: (hmm_mirror_fault's label)
      const hmm = mirror.hmm;
      if (hmm === null) return -ENODEV;
      const vma = hmm.mm.findVma(addr);
      if (vma === null) return -EFAULT;
      const evEnd = Math.min(stop, vma.end);
      if (write && !vma.writable) return -EACCES;
      // hmm_device_fault_start: the event is visible to invalidations from here on.
      mirror.faultStart = addr;
      mirror.faultEnd = evEnd;
      mirror.backoff = false;
      mirror.active = it;
      let w: Walk;
      try {
        w = yield* walkRange(mirror, addr, evEnd, write);
      } finally {
        mirror.active = null;
      }
      if (w.to > w.from) {
        const r = sm.update(mirror, w.from, w.to, write);
        if (r !== 0) return r;
      }
      if (w.ret === -ENOENT) {
        // hmm_mm_fault: handle_mm_fault from where the walk stopped to the end of the event, then
        // -EAGAIN so the walk starts again and finds the entries present.
        sm.counters.enoentFaults++;
        const r = yield* cpuFault(mirror, w.addr, evEnd, write);
        if (r !== 0) return r;
        w.ret = -EAGAIN;
      } else if (w.ret === -ENOENT_FAULTED) {
        // The same, with the CPU faults already run by the core's walk.
        sm.counters.enoentFaults++;
        w.ret = -EAGAIN;
      }
      if (w.ret === -EAGAIN) {
        sm.counters.eagainRetries++;
        if (++retries > MAX_FAULT_RETRIES) return -EBUSY;
        // hmm_mirror_fault's `goto retry`: the event starts again from its start (entries
        // already valid are found valid and skipped).
        yield "legacy:retry";
        continue;
      }
      if (w.ret !== 0) return w.ret;
      addr = evEnd;
    }
    return 0;
  } finally {
    it.fini();
  }
}

/**
 * One walk_page_range of hmm_mirror_handle_fault over [addr, end) (one VMA): per PMD,
 * hmm_mirror_fault_pmd / hmm_mirror_fault_hpmd. The PMD's state is looked at as v12's pmd_entry
 * does (no fault); the entries are filled into hmm_pt through the core's walk, whose mirror
 * callbacks write them under the leaf directory's lock.
 */
function* walkRange(mirror: FaultMirror, addr: number, end: number, write: boolean): Steps<Walk> {
  const sm = mirror.device;
  const mm = mirror.hmm!.mm;
  const owner = sm.ownerId;
  let a = addr;
  let from = addr;
  let to = addr;
  let enoent = false;
  while (a < end) {
    // hmm_mirror_fault_pmd: "if (event->backoff) return -EAGAIN;"
    if (mirror.backoff) return { ret: -EAGAIN, addr: a, from, to: Math.max(to, a) };
    const pmdStart = a - (a % PMD_SIZE);
    const chunkEnd = Math.min(end, pmdStart + PMD_SIZE);
    // The PMD as v12's pmd_entry sees it: one page's look tells a huge PMD (order 9).
    const f0 = snapshotRange(mm, owner, a, a + PAGE_SIZE).flags[0];
    if (f0 & HMM_PFN_VALID && hmmPfnToMapOrder(f0) === 9) {
      // hmm_mirror_fault_hpmd: pmd_lock, and the PMD must still be huge (else -EAGAIN).
      yield "legacy:pmd-lock";
      if (mirror.hmm === null) return { ret: -ENODEV, addr: a, from, to: Math.max(to, a) };
      const now = snapshotRange(mm, owner, a, a + PAGE_SIZE).flags[0];
      if (!(now & HMM_PFN_VALID) || hmmPfnToMapOrder(now) !== 9)
        return { ret: -EAGAIN, addr: a, from, to: Math.max(to, a) };
      // A write fault on a read-only huge PMD: -ENOENT (the CPU write fault comes next).
      if (write && !(now & HMM_PFN_WRITE)) return { ret: -ENOENT, addr: a, from, to: Math.max(to, a) };
      // "Just fault in the whole PMD": the core reports a huge PMD whole (mirrorPmd: all 512
      // entries from the PMD's start) even when the fault began mid-PMD. Only the requested part
      // is asked for, so that a PMD split meanwhile (v12 would see -EAGAIN) makes no CPU fault,
      // least of all a write fault, outside what the device asked for.
      const r = yield* fillThroughCore(mirror, a, chunkEnd, write);
      if (r !== 0) return { ret: r, addr: a, from, to: Math.max(to, a) };
      if (pmdStart < from) from = pmdStart;
      a = chunkEnd;
      to = pmdStart + PMD_SIZE;
    } else {
      // hmm_mirror_fault_pmd over page entries: the core's walk fills what is present and allows
      // the access. Where it found entries missing, not present, or (for a write) read-only, it
      // ran their CPU faults as it went (v12: -ENOENT, then hmm_mm_fault to the end of the event);
      // the walk goes on, and the event restarts once it is done (-EAGAIN below). PROT_NONE is
      // never populated: its fault is -EFAULT.
      const r = yield* fillThroughCore(mirror, a, chunkEnd, write);
      if (r < 0) return { ret: r, addr: a, from, to: Math.max(to, a) };
      if (r > 0) enoent = true;
      a = chunkEnd;
      to = a;
    }
    if (a < end) yield "legacy:next-pmd";
  }
  return { ret: enoent ? -ENOENT_FAULTED : 0, addr: a, from, to: Math.max(to, a) };
}

/**
 * The entries of [a, b) into hmm_pt: the core walks the CPU page table and reports them to this
 * device's per-PTE client, which writes them through `mirror.active`. An error of the core walk
 * becomes v12's return code.
 */
function* fillThroughCore(mirror: FaultMirror, a: number, b: number, write: boolean): Steps<number> {
  const sm = mirror.device;
  const mm = mirror.hmm!.mm;
  try {
    const r = yield* sm.core.deviceFaultSteps(sm.device, mm, a, b, write);
    // This device's own read-only device pages on a write (shared after fork): handle_mm_fault
    // with FAULT_FLAG_WRITE brings them home; the restart then breaks COW.
    if (write && r.reportedReadOnly > 0) {
      yield* sm.core.migrateToRamSteps(sm.device, mm, a, b);
      return 1;
    }
    return r.cpuFaults > 0 ? 1 : 0;
  } catch (e) {
    return faultErrno(e);
  }
}

/**
 * hmm_mm_fault: CPU faults over [a, b) (through the core, which reports nothing to hmm_pt here).
 * The core never faults this device's own device-private pages; a write fault that finds some
 * read-only (shared after fork) brings them home, as handle_mm_fault with FAULT_FLAG_WRITE on such
 * an entry does (migrate_to_ram, then the COW break on the retry).
 */
function* cpuFault(mirror: FaultMirror, a: number, b: number, write: boolean): Steps<number> {
  const sm = mirror.device;
  const mm = mirror.hmm!.mm;
  mirror.cpuFaultOnly = true;
  try {
    const r = yield* sm.core.deviceFaultSteps(sm.device, mm, a, b, write);
    if (write && r.reportedReadOnly > 0) yield* sm.core.migrateToRamSteps(sm.device, mm, a, b);
    return 0;
  } catch (e) {
    return faultErrno(e);
  } finally {
    mirror.cpuFaultOnly = false;
  }
}

/**
 * v12's return code for a failed CPU fault: VM_FAULT_OOM is -ENOMEM, a migration in flight
 * (VM_FAULT_RETRY) -EBUSY, every other fault error -EFAULT (hmm_mm_fault: "Same error code for
 * all other cases"). Driver failures and other errors are not fault results: rethrown.
 */
function faultErrno(e: unknown): number {
  if (!(e instanceof HmmError) || e instanceof DriverError) throw e;
  const n = errnoOf(e.errno);
  if (n === ENOMEM || n === EBUSY) return -n;
  if (e.errno === "EFAULT" || e.errno === "EPERM") return -EFAULT;
  throw e;
}
