import { compilePerClass } from "./compile-per-class.js";
import type { HmmDriver } from "./contract.js";
import type { DeviceFaultBatch } from "./device-access.js";

/** Slots of the loop's counters (`LoopState.counts`). */
export const LOOP_HITS = 0;
export const LOOP_MISSES = 1;
export const LOOP_REMOTE = 2;
export const LOOP_LOCAL = 3;

/**
 * What the hot loop counted (typed-array slots: a store into one has the same feedback on every
 * call, where a named field stored after the loop deoptimized the loop's on-stack-replaced code
 * at every run) and what it threw (set in its catch only).
 */
export class LoopState {
  readonly counts = new Float64Array(4);
  threw = false;
  thrown: unknown = undefined;
}

/** What the hot loop calls back into (the DeviceRun). */
export interface LoopHost {
  /** Access `i` missed: stall it and raise its fault. */
  stall(i: number): void;
  /** `r` names no frame: record the breach. */
  frameBreach(va: number, r: number): void;
  /** True (with the breach recorded) if translation `r` of `va` contradicts the CPU page table. */
  stale(va: number, write: boolean, r: number): boolean;
}

/** A frame store as the loop uses it (ContentStore). */
interface FrameStore {
  hash(pfn: number): number;
  stamp(pfn: number, stamp: number): void;
}

/**
 * Issue accesses `i`..`end` through `drv.translate` until the end or a full fault buffer, and
 * return the next access to issue (counts in `out.counts`, LOOP_* slots): a hit
 * completes against its frame (reads record the page hash, writes stamp the page), a miss
 * stalls. One `translate` call per access, everything in locals, no allocation.
 *
 * It names nothing outside itself, only its parameters and literals (0 read, 1 write, 2 atomic,
 * -1 TRANSLATE_MISS, 1 done): `issueLoopFor` gives each driver class its own compiled copy, so
 * its `translate` call stays monomorphic and inlined (see compilePerClass).
 */
function issueLoop(
  host: LoopHost,
  drv: HmmDriver,
  mmId: number,
  i: number,
  end: number,
  va: Float64Array,
  kind: Uint8Array,
  stamp: Int32Array,
  seen: Uint32Array,
  done: Uint8Array,
  batch: DeviceFaultBatch,
  sys: FrameStore,
  nsys: number,
  local: FrameStore,
  nlocal: number,
  verify: boolean,
  out: LoopState,
): number {
  const cap = batch.capacity;
  let hits = 0;
  let misses = 0;
  let remote = 0;
  let localHits = 0;
  try {
    for (; i < end; i++) {
      const k = kind[i];
      const v = va[i];
      const r = drv.translate!(mmId, v, k !== 0);
      if (r === -1) {
        misses++;
        host.stall(i);
        if (batch.count === cap) {
          i++;
          break;
        }
        continue;
      }
      hits++;
      // A result is a small integer: (r | 0) === r rejects fractions, NaN and huge values at once.
      if ((r | 0) !== r || r >= nsys || -2 - r >= nlocal) {
        host.frameBreach(v, r);
        break;
      }
      if (verify && host.stale(v, k !== 0, r)) break;
      if (r >= 0) {
        remote++;
        if (k === 0) seen[i] = sys.hash(r);
        else {
          if (k === 2) seen[i] = sys.hash(r);
          sys.stamp(r, stamp[i]);
        }
      } else {
        localHits++;
        const pfn = -2 - r;
        if (k === 0) seen[i] = local.hash(pfn);
        else {
          if (k === 2) seen[i] = local.hash(pfn);
          local.stamp(pfn, stamp[i]);
        }
      }
      done[i] = 1;
    }
  } catch (e) {
    out.threw = true;
    out.thrown = e;
  }
  const counts = out.counts;
  counts[0] = hits;
  counts[1] = misses;
  counts[2] = remote;
  counts[3] = localHits;
  return i;
}

/** The issue loop's type. */
export type IssueLoop = typeof issueLoop;

/** The copy of the issue loop for `driver`'s class (compiled on first use, see compilePerClass). */
export const issueLoopFor: (driver: HmmDriver) => IssueLoop = compilePerClass(issueLoop);
