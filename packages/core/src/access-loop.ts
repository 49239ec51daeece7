import { compileBound, compilePerClass } from "./compile-per-class.js";
import type { HmmDriver } from "./contract.js";
import type { DeviceAccesses } from "./device-access.js";

/** Slots of the loop's counters and stop (`LoopState.counts`). */
export const LOOP_HITS = 0;
export const LOOP_REMOTE = 1;
export const LOOP_LOCAL = 2;
/** Why the loop stopped (LOOP_STOP_*). */
export const LOOP_STOP = 3;
/** The result that named no frame (LOOP_STOP_FRAME). */
export const LOOP_RESULT = 4;

/** The loop reached its end. */
export const LOOP_STOP_END = 0;
/** The access at the returned index missed: the caller stalls it and goes on after it. */
export const LOOP_STOP_MISS = 1;
/** The access at the returned index got a result naming no frame (in LOOP_RESULT). */
export const LOOP_STOP_FRAME = 2;
/** The access at the returned index got a stale translation (recorded by `host.stale`). */
export const LOOP_STOP_STALE = 3;

/**
 * What the hot loop counted and why it stopped, in typed-array slots (a store into one has the
 * same feedback on every call, where a named field stored after the loop deoptimized the loop's
 * on-stack-replaced code at every run).
 */
export class LoopState {
  readonly counts = new Float64Array(5);
}

/** What the hot loop calls back into (the DeviceRun), in verifying runs only. */
export interface LoopHost {
  /** True (with the breach recorded) if translation `r` of `va` contradicts the CPU page table. */
  stale(va: number, write: boolean, r: number): boolean;
}

/** A frame store as the loop uses it (ContentStore). */
export interface FrameStore {
  hash(pfn: number): number;
  stamp(pfn: number, stamp: number): void;
  readonly tagTokens: Uint32Array | null;
}

/**
 * Issue accesses `i`..`end` through `drv.translate` until the end, a miss or a breach, and
 * return where it stopped (counts and the reason in `out.counts`, LOOP_* slots): a hit completes
 * against its frame (reads record the page hash in `seen`, writes stamp the page, `done` is set).
 * One `translate` call per access, everything in locals, no allocation, and no call of the
 * core's: a miss or a breach leaves the loop, so their handling (stalling, raising the fault,
 * the error text) is never inlined into it, however often a first, faulting run took it. Tag
 * mode reads hashes from `systok`, the system store's token array (null in bytes mode).
 *
 * It names nothing outside itself, only its parameters and literals (0 read, 1 write, 2 atomic,
 * -1 TRANSLATE_MISS, 1 done, the LOOP_* values): its copies are compiled from its source, one per
 * driver class (compilePerClass) or one per long stream (compileBound), so the `translate` call
 * stays monomorphic and inlined.
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
  sys: FrameStore,
  systok: Uint32Array | null,
  nsys: number,
  local: FrameStore,
  nlocal: number,
  verify: boolean,
  out: LoopState,
): number {
  // Locals, read once: in a copy bound to a stream (compileBound) these are closure variables,
  // which the compiled loop would otherwise load and check again on every iteration.
  const driver = drv;
  const addrs = va;
  const kinds = kind;
  const stamps = stamp;
  const seenHash = seen;
  const doneFlag = done;
  const sysStore = sys;
  const sysTokens = systok;
  const localStore = local;
  // Small integers once, not tagged values checked on every iteration.
  const mm = mmId | 0;
  const last = end | 0;
  const ns = nsys | 0;
  const nl = nlocal | 0;
  const check = verify === true;
  const counts = out.counts;
  let stop = 0;
  let remote = 0;
  let localHits = 0;
  // Kept in its slot as it goes: a throw leaves the loop with no chance to write it.
  counts[2] = 0;
  for (i |= 0; i < last; i++) {
    const k = kinds[i];
    const v = addrs[i];
    const r = driver.translate!(mm, v, k !== 0);
    // The remote and local branches are written out alike on purpose: each is straight-line code
    // on its own store (tag mode's reads of system frames need no call at all).
    if (r >= 0) {
      // (r | 0) === r rejects fractions and huge values (free when r is known to be an int).
      if (r >= ns || (r | 0) !== r) {
        stop = 2;
        counts[4] = r;
        break;
      }
      if (check && host.stale(v, k !== 0, r)) {
        stop = 3;
        break;
      }
      remote++;
      if (k === 0) seenHash[i] = sysTokens !== null ? sysTokens[r] : sysStore.hash(r);
      else {
        seenHash[i] = k === 2 ? sysStore.hash(r) : 0;
        sysStore.stamp(r, stamps[i]);
      }
    } else if (r === -1) {
      stop = 1;
      break;
    } else {
      const pfn = -2 - r;
      // NaN and fractions fail the second test.
      if (pfn >= nl || (pfn | 0) !== pfn) {
        stop = 2;
        counts[4] = r;
        break;
      }
      if (check && host.stale(v, k !== 0, r)) {
        stop = 3;
        break;
      }
      counts[2] = ++localHits;
      if (k === 0) seenHash[i] = localStore.hash(pfn);
      else {
        seenHash[i] = k === 2 ? localStore.hash(pfn) : 0;
        localStore.stamp(pfn, stamps[i]);
      }
    }
    doneFlag[i] = 1;
  }
  counts[0] = remote + localHits;
  counts[1] = remote;
  counts[3] = stop;
  return i;
}

/** The issue loop's type. */
export type IssueLoop = typeof issueLoop;

const plainLoops = compilePerClass(issueLoop);
const verifiedLoops = compilePerClass(issueLoop);

/**
 * The copy of the issue loop for `driver`'s class (compiled on first use, see compilePerClass),
 * one for runs that verify translations and one for runs that do not: a copy's feedback then
 * never holds the other kind of run, so the unverified copy inlines no translation check (whose
 * size would use up the inlining budget the driver's `translate` needs).
 */
export function issueLoopFor(driver: HmmDriver, verify: boolean): IssueLoop {
  return verify ? verifiedLoops(driver) : plainLoops(driver);
}

/** Streams at least this long run on a copy of the issue loop bound to them (see boundIssueLoopFor). */
export const BIND_MIN_ACCESSES = 16_384;
/** Bound copies kept per stream (one per driver, content stores and verify setting it ran with). */
const MAX_BOUND_PER_STREAM = 4;

const BOUND_NAMES = [
  "drv",
  "va",
  "kind",
  "stamp",
  "seen",
  "done",
  "sys",
  "systok",
  "nsys",
  "local",
  "nlocal",
  "verify",
];
const bindIssueLoop = compileBound(issueLoop, BOUND_NAMES);

interface BoundLoop {
  readonly values: readonly unknown[];
  readonly loop: IssueLoop;
}
const boundLoops = new WeakMap<DeviceAccesses, BoundLoop[]>();

/**
 * The issue loop for a long stream: a copy compiled for it (see compileBound), with the driver,
 * the stream's arrays, both content stores and the verify setting as its closure variables, so
 * its feedback sees only them, kept with the stream so its next runs (a workload's next phase, a
 * benchmark's next round) reuse it warm. Measured on a 1 GiB streaming read: 1.3-1.6x the
 * accesses per second of the class's shared copy, which several devices and streams feed. A
 * stream whose arrays were replaced (it grew) gets a new copy.
 */
export function boundIssueLoopFor(
  driver: HmmDriver,
  acc: DeviceAccesses,
  sys: FrameStore,
  nsys: number,
  local: FrameStore,
  nlocal: number,
  verify: boolean,
): IssueLoop {
  const values = [
    driver,
    acc.va,
    acc.kind,
    acc.stamp,
    acc.seen,
    acc.done,
    sys,
    sys.tagTokens,
    nsys,
    local,
    nlocal,
    verify,
  ];
  let list = boundLoops.get(acc);
  if (list === undefined) {
    list = [];
    boundLoops.set(acc, list);
  }
  for (const b of list) if (b.values.every((v, k) => v === values[k])) return b.loop;
  const loop = bindIssueLoop(values);
  list.push({ values, loop });
  if (list.length > MAX_BOUND_PER_STREAM) list.shift();
  return loop;
}
