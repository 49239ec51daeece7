import { compilePerClass } from "./compile-per-class.js";
import type { HmmDriver } from "./contract.js";
import type { DeviceFaultBatch } from "./device-access.js";

/** Where the hot loop stopped and what it counted (one per run, reused by every call). */
export class LoopState {
  /** The next access to issue. */
  i = 0;
  hits = 0;
  misses = 0;
  remote = 0;
  local = 0;
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
 * Issue accesses `i`..`end` through `drv.translate` until the end or a full fault buffer: a hit
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
): void {
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
  out.i = i;
  out.hits = hits;
  out.misses = misses;
  out.remote = remote;
  out.local = localHits;
}

/** The issue loop's type. */
export type IssueLoop = typeof issueLoop;

/** The copy of the issue loop for `driver`'s class (compiled on first use, see compilePerClass). */
export const issueLoopFor: (driver: HmmDriver) => IssueLoop = compilePerClass(issueLoop);
