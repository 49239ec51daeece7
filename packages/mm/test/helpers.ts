import { expect } from "vitest";
import {
  ENTRY_KIND_MASK,
  ENTRY_NONE,
  FRAME_RESERVED,
  HPAGE_PMD_SIZE,
  MADV_HUGEPAGE,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  MAP_SHARED,
  type Machine,
  type Mm,
  type MmError,
  type MmuIntervalNotifier,
  type MmuIntervalNotifierOps,
  type MmuNotifierRange,
  type MmuNotifyEvent,
  PROT_READ,
  PROT_WRITE,
  type Process,
} from "../src/index.js";

export const KiB = 1024;
export const MiB = 1024 * 1024;
export const PAGE = 4096;
export const RW = PROT_READ | PROT_WRITE;
export const PRIVATE = MAP_PRIVATE | MAP_ANONYMOUS;
export const SHARED = MAP_SHARED | MAP_ANONYMOUS;

/** One CPU entry as the page table holds it, or null when nothing is mapped at that level. */
export interface EntryView {
  pfn: number;
  flags: number;
}

/** The PTE mapping `va`, or null when no leaf table covers it or the PTE is none. */
export function pteAt(mm: Mm, va: number): EntryView | null {
  const pos = mm.pt.ptePos(va);
  if (pos < 0) return null;
  const flags = mm.pt.pteFlags[pos];
  if ((flags & ENTRY_KIND_MASK) === ENTRY_NONE) return null;
  return { pfn: mm.pt.ptePfn[pos], flags };
}

/** The huge PMD entry covering `va`, or null when the PMD slot holds a leaf table or nothing. */
export function hugePmdAt(mm: Mm, va: number): EntryView | null {
  const slot = mm.pt.pmdSlot(va);
  if (slot < 0 || mm.pt.leafAt(slot) >= 0) return null;
  const flags = mm.pt.pmdFlags[slot];
  if ((flags & ENTRY_KIND_MASK) === ENTRY_NONE) return null;
  return { pfn: mm.pt.pmdPfn[slot], flags };
}

/** A private anonymous rw mapping of `length` bytes. */
export function mmapPrivate(p: Process, length: number, prot = RW): number {
  return p.mm.mmap({ length, prot, flags: PRIVATE });
}

/** A shared anonymous rw mapping of `length` bytes. */
export function mmapShared(p: Process, length: number, prot = RW): number {
  return p.mm.mmap({ length, prot, flags: SHARED });
}

/** A 2 MiB-aligned private mapping of `length` (a multiple of 2 MiB) with MADV_HUGEPAGE. */
export function mmapHuge(p: Process, length = HPAGE_PMD_SIZE, prot = RW): number {
  const a = p.mm.mmap({ length, prot, flags: PRIVATE });
  expect(a % HPAGE_PMD_SIZE).toBe(0);
  p.mm.madvise(a, length, MADV_HUGEPAGE);
  return a;
}

/** Run `fn` and return the MmError it throws (failing the test when it throws nothing). */
export function thrown(fn: () => unknown): MmError {
  try {
    fn();
  } catch (e) {
    return e as MmError;
  }
  throw new Error("expected the call to throw");
}

/** Every frame of the machine that is not free or reserved has a zero refcount and mapcount. */
export function expectNoFrameReferenced(machine: Machine): void {
  const pool = machine.pool;
  let referenced = 0;
  for (let pfn = 0; pfn < pool.nframes; pfn++) {
    if (pool.flags[pfn] & FRAME_RESERVED) continue;
    if (pool.refcount[pfn] !== 0 || pool.mapcount[pfn] !== 0) referenced++;
  }
  expect(referenced).toBe(0);
  expect(machine.usedFrames).toBe(0);
}

/** One invalidation seen by a {@link RecordingFakeNotifier}. */
export interface RecordedInvalidation {
  start: number;
  end: number;
  event: MmuNotifyEvent;
  seq: number;
}

/**
 * A fake mirror: an interval notifier's ops that follow the kernel contract (set the sequence,
 * return true) and record every invalidation. `onInvalidate` lets a test look at the CPU page
 * table from inside the callback, i.e. before the change is made.
 */
export class RecordingFakeNotifier implements MmuIntervalNotifierOps {
  readonly seen: RecordedInvalidation[] = [];
  onInvalidate: ((sub: MmuIntervalNotifier, range: MmuNotifierRange) => void) | null = null;

  invalidate(sub: MmuIntervalNotifier, range: MmuNotifierRange, curSeq: number): boolean {
    sub.setSeq(curSeq);
    this.seen.push({ start: range.start, end: range.end, event: range.event, seq: curSeq });
    this.onInvalidate?.(sub, range);
    return true;
  }

  /** The recorded invalidations as [event, start, end] triples. */
  get events(): [MmuNotifyEvent, number, number][] {
    return this.seen.map((s) => [s.event, s.start, s.end]);
  }

  clear(): void {
    this.seen.length = 0;
  }
}
