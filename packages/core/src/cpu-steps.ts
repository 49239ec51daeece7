import {
  ACCESS_OK,
  ACCESS_SEGV_ACCERR,
  ACCESS_SEGV_MAPERR,
  ACCESS_WAIT_MIGRATION,
  alignDown,
  defaultStamp,
  hex,
  MmError,
  PAGE_SIZE,
  type Process,
  SegvError,
} from "@hmmkit/mm";
import type { Steps } from "./scheduler.js";

/**
 * A CPU thread touching [va, va + len) page by page, as a step generator for the scheduler: one
 * preemption point after each page. A page under migration makes the thread wait (it yields and
 * tries again, as a CPU fault on a migration entry sleeps until the migration ends). Writes stamp
 * the page (`stamp`, or one derived from the address). Returns the faults taken; throws SegvError
 * on an access the mapping forbids.
 */
export function* cpuTouchSteps(
  proc: Process,
  va: number,
  len: number,
  write: boolean,
  stamp?: number,
): Steps<number> {
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

/** One atomic CPU-side operation (an mmap, munmap, mprotect, madvise, fork...) as a single step. */
export function* cpuOpSteps<T>(label: string, op: () => T): Steps<T> {
  yield `cpu:${label}`;
  return op();
}
