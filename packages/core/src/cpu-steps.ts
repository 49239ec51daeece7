import {
  ACCESS_OK,
  ACCESS_SEGV_ACCERR,
  ACCESS_SEGV_MAPERR,
  ACCESS_WAIT_MIGRATION,
  alignDown,
  defaultStamp,
  hex,
  type Mm,
  MmError,
  PAGE_SIZE,
  Process,
  SegvError,
  TASK_SIZE,
} from "@hmmkit/mm";
import { badArgument, checkBoolean, checkInteger } from "./check-args.js";
import { mmapLock as mmapLockOf } from "./mmap-lock.js";
import type { Steps } from "./scheduler.js";

/**
 * A CPU thread touching [va, va + len) page by page, as a step generator for the scheduler: one
 * preemption point after each page. A page under migration makes the thread wait (it yields and
 * tries again, as a CPU fault on a migration entry sleeps until the migration ends). Writes stamp
 * the page (`stamp`, or one derived from the address). Returns the faults taken; throws SegvError
 * on an access the mapping forbids. Arguments are checked when it is called (HmmError EINVAL).
 */
export function cpuTouchSteps(
  proc: Process,
  va: number,
  len: number,
  write: boolean,
  stamp?: number,
): Steps<number> {
  const op = "cpuTouchSteps";
  if (!(proc instanceof Process)) throw badArgument(op, "proc", "a Process", proc);
  checkInteger(op, "va", va, 0, TASK_SIZE);
  checkInteger(op, "len", len, 0, TASK_SIZE - va);
  checkBoolean(op, "write", write);
  if (stamp !== undefined) checkInteger(op, "stamp", stamp, 0, 0xffff_ffff);
  return touch(proc, va, len, write, stamp);
}

function* touch(proc: Process, va: number, len: number, write: boolean, stamp?: number): Steps<number> {
  const before = proc.minorFaults;
  const content = proc.machine.pool.content;
  for (let p = alignDown(va, PAGE_SIZE); p < va + len; p += PAGE_SIZE) {
    for (;;) {
      const r = proc.accessPage(p, write);
      if (r === ACCESS_OK) break;
      if (r === ACCESS_WAIT_MIGRATION) {
        yield "cpu:wait-migration";
        continue;
      }
      if (r === ACCESS_SEGV_MAPERR || r === ACCESS_SEGV_ACCERR) {
        throw new SegvError(p, r === ACCESS_SEGV_MAPERR ? "no-vma" : "access", write ? "write" : "read");
      }
      throw new MmError("EFAULT", `CPU ${write ? "write" : "read"} at ${hex(p)} failed (access code ${r})`);
    }
    if (write) content.stamp(proc.lastPfn, stamp ?? defaultStamp(p));
    yield write ? "cpu:write" : "cpu:read";
  }
  return proc.minorFaults - before;
}

/**
 * One atomic CPU-side operation (an mmap, munmap, mprotect, madvise, fork...) as a single step.
 * With `mmapLock`, the operation first takes that address space's mmap_lock: "write" for the
 * operations that change VMAs (mmap, munmap, mprotect, MADV_HUGEPAGE, fork, exit), which then wait
 * for a migration in flight; "read" for MADV_DONTNEED. Without it, it runs whenever scheduled.
 */
export function cpuOpSteps<T>(
  label: string,
  op: () => T,
  mmapLock?: { mm: Mm; mode: "read" | "write" },
): Steps<T> {
  if (typeof label !== "string") throw badArgument("cpuOpSteps", "label", "a string", label);
  if (typeof op !== "function") throw badArgument("cpuOpSteps", "op", "a function", op);
  if (mmapLock !== undefined && mmapLock?.mode !== "read" && mmapLock?.mode !== "write")
    throw badArgument("cpuOpSteps", "mmapLock.mode", '"read" or "write"', mmapLock?.mode);
  return cpuOp(label, op, mmapLock);
}

function* cpuOp<T>(label: string, op: () => T, mmapLock?: { mm: Mm; mode: "read" | "write" }): Steps<T> {
  yield `cpu:${label}`;
  if (mmapLock === undefined) return op();
  const lock = mmapLockOf(mmapLock.mm);
  if (mmapLock.mode === "write") yield* lock.write();
  else yield* lock.read();
  try {
    return op();
  } finally {
    if (mmapLock.mode === "write") lock.writeUnlock();
    else lock.readUnlock();
  }
}
