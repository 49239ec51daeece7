import type { Mm } from "@hmmkit/mm";
import type { Steps } from "./scheduler.js";

/**
 * The mmap_lock of one address space, as the scheduler sees it (a read-write semaphore). The
 * simulator runs each memory operation atomically, so the lock only matters across preemption
 * points: a migration holds it for read from migrate_vma_setup to finalize, as the kernel's
 * callers of migrate_vma do, so an munmap, mprotect, fork or exit (which take it for write) waits
 * for the migration, while CPU faults, MADV_DONTNEED and device faults (readers) go on.
 */
export class MmapLock {
  readers = 0;
  writer = false;

  /** Wait (yielding) until no writer holds the lock, then hold it for read. */
  *read(): Steps<void> {
    while (this.writer) yield "wait:mmap_lock";
    this.readers++;
  }

  /** Wait (yielding) until nobody holds the lock, then hold it for write. */
  *write(): Steps<void> {
    while (this.writer || this.readers > 0) yield "wait:mmap_lock";
    this.writer = true;
  }

  readUnlock(): void {
    this.readers--;
  }

  writeUnlock(): void {
    this.writer = false;
  }
}

const locks = new WeakMap<Mm, MmapLock>();

/** The mmap_lock of `mm`. */
export function mmapLock(mm: Mm): MmapLock {
  let l = locks.get(mm);
  if (l === undefined) {
    l = new MmapLock();
    locks.set(mm, l);
  }
  return l;
}
