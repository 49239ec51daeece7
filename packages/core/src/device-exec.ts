import { hex, type Mm, MmError } from "@hmmkit/mm";
import {
  BIND_MIN_ACCESSES,
  boundIssueLoopFor,
  type IssueLoop,
  issueLoopFor,
  LOOP_HITS,
  LOOP_LOCAL,
  LOOP_REMOTE,
  LOOP_RESULT,
  LOOP_STOP,
  LOOP_STOP_FRAME,
  LOOP_STOP_MISS,
  type LoopHost,
  LoopState,
} from "./access-loop.js";
import type { Device } from "./device.js";
import {
  CANCEL_ERRNOS,
  DEVICE_ATOMIC,
  DEVICE_READ,
  type DeviceAccesses,
  DeviceFaultBatch,
} from "./device-access.js";
import type { DeviceFaultResult } from "./device-fault.js";
import type { Steps } from "./scheduler.js";
import { checkTranslation } from "./translation-check.js";

/** Rounds of fault and replay one access may take before its device is failed (DRIVER_STUCK). */
export const MAX_FAULT_ROUNDS = 32;
/** Fault buffer entries a device has unless its config says `faultBuffer` (UVM's batch count). */
export const DEFAULT_FAULT_BUFFER = 256;
/** Cancelled accesses a run describes in `errors` (the rest are only counted). */
const MAX_ERRORS = 16;
/**
 * Accesses one call of the issue loop takes at most. Short calls make a new loop copy hot as a
 * function, so V8 compiles it from entry with the feedback of many calls. With 4,096 it was
 * often still inside its first long call when V8 compiled it: that code lacked feedback and was
 * dropped, and the copy then ran on code replaced on the stack mid-loop (OSR) for good, at half
 * speed, in about one run of three (iotlb's hit path: 0.17-0.18x the access baseline instead of
 * 0.32x). With 1,024, none in fourteen runs; the extra calls cost about 1%.
 */
const ISSUE_CHUNK = 1024;

/** How a stream runs on a device. */
export interface DeviceRunOptions {
  /**
   * Accesses in flight together (a wave: the accesses of a warp, a thread block or a whole launch).
   * Their faults go into the fault buffer together; the wave completes before the next one is
   * issued. Default: the whole stream (one kernel launch).
   */
  wave?: number;
  /**
   * Check every translation against the CPU page table (the contract's coherence promise): a
   * translation to another frame, a writable one where the CPU entry is read-only, or device
   * memory where the CPU entry is not this device's device-private entry fails the device with
   * code DRIVER_STALE. Default true; benchmarks of the hit path turn it off.
   */
  verifyTranslations?: boolean;
}

/** A cancelled access. */
export interface DeviceAccessError {
  /** Index in the stream. */
  readonly index: number;
  readonly va: number;
  /** DEVICE_READ, DEVICE_WRITE or DEVICE_ATOMIC. */
  readonly kind: number;
  /** Why: the errno of the cancelled fault, or ENODEV when the device failed. */
  readonly errno: string;
}

/** What one run of a stream did (the device's cumulative counters are in `Device.stats`). */
export interface DeviceRunResult {
  /** Accesses in the stream. */
  readonly accesses: number;
  /** Accesses that completed. */
  readonly completed: number;
  /** Accesses cancelled (fatal faults, or left when the device failed). */
  readonly cancelled: number;
  /** Faults raised into the fault buffer (duplicates and later rounds included). */
  readonly faults: number;
  /** Fault batches serviced. */
  readonly batches: number;
  /** Stalled accesses replayed. */
  readonly replays: number;
  /** The first cancelled accesses (at most 16). */
  readonly errors: readonly DeviceAccessError[];
  /** Set when the device failed during the run (its error; the remaining accesses were cancelled). */
  readonly deviceFailure: Error | null;
}

/** The core operation the default fault handler uses. */
export interface DeviceFaultService {
  deviceFaultSteps(dev: Device, mm: Mm, start: number, end: number, write: boolean): Steps<DeviceFaultResult>;
}

const READ = DEVICE_READ;

/** An access cancelled, in `DeviceAccesses.done` (the loop sets 1 for done). */
const CANCELLED = 2;

/**
 * One stream running on one device: the device's hardware. Each wave's accesses ask the driver's
 * `translate`; a hit completes against the frame (reads record the page hash in `seen`, writes
 * stamp the page), a miss stalls and raises a fault into the fault buffer; a full buffer, and the
 * end of the wave, hand a batch to the driver's `handleFaults`; then the stalled accesses replay.
 * Preemption points: after each batch, before each replay round, after each wave.
 */
export class DeviceRun implements LoopHost {
  private readonly batch: DeviceFaultBatch;
  private readonly loop = new LoopState();
  private readonly issueLoop: IssueLoop;
  private readonly wave: number;
  private readonly verify: boolean;
  private pending: Int32Array;
  private next: Int32Array;
  private rounds: Uint8Array;
  private nextRounds: Uint8Array;
  private npending = 0;
  private completed = 0;
  private cancelled = 0;
  private faults = 0;
  private batches = 0;
  private replays = 0;
  private readonly errors: DeviceAccessError[] = [];
  /** A breach found in the hot loop, reported once the translate scope is left. */
  private bad: { code: string; va: number; why: string } | null = null;

  constructor(
    private readonly dev: Device,
    private readonly mm: Mm,
    private readonly acc: DeviceAccesses,
    private readonly service: DeviceFaultService,
    options: DeviceRunOptions,
  ) {
    const cap = (dev.config.faultBuffer as number | undefined) ?? DEFAULT_FAULT_BUFFER;
    this.batch = new DeviceFaultBatch(cap);
    this.wave = Math.max(1, Math.min(options.wave ?? acc.count, acc.count));
    this.verify = options.verifyTranslations !== false;
    const pool = mm.machine.pool;
    this.issueLoop =
      acc.count >= BIND_MIN_ACCESSES
        ? boundIssueLoopFor(
            dev.dispatcher.driver,
            acc,
            pool.content,
            pool.nframes,
            dev.memory.content,
            dev.memory.npages,
            this.verify,
          )
        : issueLoopFor(dev.dispatcher.driver, this.verify);
    // The stalled-access lists start small and grow by doubling (never past the wave): a run that
    // hits everywhere allocates nothing per access.
    const cap0 = Math.min(this.wave, 1024);
    this.pending = new Int32Array(cap0);
    this.next = new Int32Array(cap0);
    this.rounds = new Uint8Array(cap0);
    this.nextRounds = new Uint8Array(cap0);
  }

  /** The run, as a step generator. */
  *steps(): Steps<DeviceRunResult> {
    const acc = this.acc;
    acc.done.fill(0, 0, acc.count);
    acc.seen.fill(0, 0, acc.count);
    for (let w = 0; w < acc.count && this.active(); w += this.wave) {
      yield* this.runWave(w, Math.min(acc.count, w + this.wave));
      yield "device:wave";
    }
    if (!this.active()) this.cancelRest();
    return {
      accesses: acc.count,
      completed: this.completed,
      cancelled: this.cancelled,
      faults: this.faults,
      batches: this.batches,
      replays: this.replays,
      errors: this.errors,
      deviceFailure: this.dev.state === "active" ? null : this.dev.failure,
    };
  }

  private active(): boolean {
    return this.dev.state === "active" && this.dev.dispatcher.failure === null;
  }

  private *runWave(w0: number, w1: number): Steps<void> {
    this.npending = 0;
    let i = w0;
    while (i < w1) {
      i = this.issue(i, Math.min(w1, i + ISSUE_CHUNK));
      if (!this.active()) return;
      // A full buffer is serviced and its stalled accesses replayed before more are issued, as
      // UVM's default replay policy (UVM_PERF_FAULT_REPLAY_POLICY_BATCH) replays after every batch.
      while (this.batch.count === this.batch.capacity) {
        yield* this.serviceBatch();
        if (!this.active()) return;
        yield "device:replay";
        if (!this.active()) return;
        this.replay();
        if (!this.active()) return;
      }
    }
    while (this.npending > 0) {
      if (this.batch.count > 0) yield* this.serviceBatch();
      if (!this.active()) return;
      yield "device:replay";
      if (!this.active()) return;
      this.replay();
      if (!this.active()) return;
    }
  }

  /**
   * Issue accesses from `i` until `end` or until the fault buffer is full; returns the next index.
   * The hot loop runs hits (the common case) and stops at anything else: a miss is stalled here
   * and the loop goes on after it, a breach ends the issue.
   */
  private issue(i: number, end: number): number {
    const acc = this.acc;
    const d = this.dev.dispatcher;
    const c = this.loop.counts;
    const cap = this.batch.capacity;
    let threw = false;
    let thrown: unknown;
    const prev = d.beginTranslate();
    while (i < end) {
      const from = i;
      // The try is out here, not in the loop: a try around the loop keeps its counters in tagged
      // stack slots.
      try {
        i = this.runLoop(i, end);
      } catch (e) {
        threw = true;
        thrown = e;
        i = this.recount(from, end);
        break;
      }
      this.countHits(c[LOOP_HITS], c[LOOP_REMOTE], c[LOOP_LOCAL]);
      const stop = c[LOOP_STOP];
      if (stop === LOOP_STOP_MISS) {
        this.dev.stats.translationMisses++;
        this.stall(i);
        i++;
        if (this.batch.count === cap) break;
      } else {
        if (stop === LOOP_STOP_FRAME) this.frameBreach(acc.va[i], c[LOOP_RESULT]);
        // LOOP_STOP_STALE was recorded by `stale`; LOOP_STOP_END: i is end.
        break;
      }
    }
    if (d.endTranslate(prev, acc.va[Math.min(i, end - 1)], threw, thrown)) this.reportBreach();
    return i;
  }

  /** One call of the issue loop over accesses [i, end) (see issueLoop); returns where it stopped. */
  private runLoop(i: number, end: number): number {
    const acc = this.acc;
    const pool = this.mm.machine.pool;
    const memory = this.dev.memory;
    return this.issueLoop(
      this,
      this.dev.dispatcher.driver,
      this.mm.id,
      i,
      end,
      acc.va,
      acc.kind,
      acc.stamp,
      acc.seen,
      acc.done,
      pool.content,
      pool.content.tagTokens,
      pool.nframes,
      memory.content,
      memory.npages,
      this.verify,
      this.loop,
    );
  }

  private countHits(hits: number, remote: number, local: number): void {
    const stats = this.dev.stats;
    stats.translationHits += hits;
    stats.remoteAccesses += remote;
    stats.localAccesses += local;
    stats.accesses += hits;
    this.completed += hits;
  }

  /**
   * The loop threw at some access from `from` on, before writing its counts: the accesses before
   * it completed (the loop stops at anything else), so it is the first one not done. Counts them
   * (the loop kept its local-hit count in its slot) and returns its index.
   */
  private recount(from: number, end: number): number {
    const done = this.acc.done;
    let t = from;
    while (t < end && done[t] !== 0) t++;
    const local = this.loop.counts[LOOP_LOCAL];
    this.countHits(t - from, t - from - local, local);
    return t;
  }

  /** Access `i` missed: stall it and raise its fault (the caller checks there is room). */
  private stall(i: number): void {
    if (this.npending === this.pending.length) this.growPending();
    this.rounds[this.npending] = 0;
    this.pending[this.npending++] = i;
    this.raise(i);
  }

  /** Double the stalled-access lists (both generations: a replay moves entries from one to the other). */
  private growPending(): void {
    const n = Math.min(this.wave, this.pending.length * 2);
    const grow = <T extends Int32Array | Uint8Array>(a: T, make: (n: number) => T): T => {
      const b = make(n);
      b.set(a);
      return b;
    };
    this.pending = grow(this.pending, (k) => new Int32Array(k));
    this.next = grow(this.next, (k) => new Int32Array(k));
    this.rounds = grow(this.rounds, (k) => new Uint8Array(k));
    this.nextRounds = grow(this.nextRounds, (k) => new Uint8Array(k));
  }

  /** LoopHost: record a stale translation of `va`; true if it is one. */
  stale(va: number, write: boolean, r: number): boolean {
    const why = checkTranslation(this.mm, this.dev.ownerId, va, write, r);
    if (why === null) return false;
    this.bad = { code: "DRIVER_STALE", va, why };
    return true;
  }

  /** Raise a fault for access `i` into the buffer (the caller checks it has room). */
  private raise(i: number): void {
    const b = this.batch;
    const k = b.count++;
    b.mmId[k] = this.mm.id;
    b.va[k] = this.acc.va[i];
    b.access[k] = this.acc.kind[i];
    b.cancelled[k] = 0;
    b.accessIndex[k] = i;
    this.faults++;
    this.dev.stats.accessFaults++;
  }

  /** Record a translate result that names no frame. */
  private frameBreach(va: number, r: number): void {
    this.bad = {
      code: "DRIVER_FRAME",
      va,
      why: `translate(${hex(va)}) returned ${String(r)}, which names no frame (a system pfn 0..${this.mm.machine.pool.nframes - 1}, deviceFrameResult(dpfn) for dpfn 0..${this.dev.memory.npages - 1}, or TRANSLATE_MISS)`,
    };
  }

  private reportBreach(): void {
    const b = this.bad;
    if (b === null) return;
    this.bad = null;
    this.dev.dispatcher.breach("translate", b.va, { why: b.why, code: b.code });
  }

  /** Hand the buffer to the driver's handleFaults (or the default handler), then apply cancellations. */
  private *serviceBatch(): Steps<void> {
    const b = this.batch;
    this.batches++;
    const d = this.dev.dispatcher;
    this.dev.servicingBatch = true;
    try {
      if (typeof d.driver.handleFaults === "function") {
        const it = d.handleFaults(b);
        if (it !== null && it !== false) {
          for (;;) {
            const point = d.stepFaultHandler(it);
            if (point === false || point === "") break;
            yield point;
          }
        }
      } else {
        d.stats.faultBatches++;
        yield* this.defaultHandler();
      }
    } finally {
      this.dev.servicingBatch = false;
    }
    if (this.active()) {
      for (let k = 0; k < b.count; k++)
        if (b.cancelled[k] !== 0) this.cancel(b.accessIndex[k], CANCEL_ERRNOS[b.cancelled[k]]);
    }
    b.count = 0;
    yield "device:fault-batch";
  }

  /** Without handleFaults: one deviceFault per distinct page of the batch (in order), cancelling what fails. */
  private *defaultHandler(): Steps<void> {
    const b = this.batch;
    for (let k = 0; k < b.count; k++) {
      const va = b.va[k];
      const write = b.access[k] !== READ;
      let dup = false;
      for (let j = 0; j < k; j++) {
        if (b.va[j] === va && (b.access[j] !== READ || !write)) {
          dup = true;
          if (b.cancelled[j] !== 0) b.cancelled[k] = b.cancelled[j];
          break;
        }
      }
      if (dup) continue;
      try {
        yield* this.service.deviceFaultSteps(this.dev, this.mm, va, va + 4096, write);
      } catch (e) {
        if (!this.active()) return;
        const errno = e instanceof MmError ? e.errno : undefined;
        const code = CANCEL_ERRNOS.indexOf(errno as (typeof CANCEL_ERRNOS)[number]);
        if (code > 0) b.cancelled[k] = code;
        else throw e;
      }
      if (!this.active()) return;
    }
  }

  /**
   * Replay the stalled accesses; those that miss again fault again (until the buffer is full).
   * Each replay is one access through the issue loop, so an access completes the same way
   * whether it hit at once or after its fault.
   */
  private replay(): void {
    const acc = this.acc;
    const d = this.dev.dispatcher;
    const stats = this.dev.stats;
    const c = this.loop.counts;
    const batch = this.batch;
    const cap = batch.capacity;
    let nn = 0;
    let threw = false;
    let thrown: unknown;
    let j = 0;
    let stuck = -1;
    const prev = d.beginTranslate();
    try {
      for (; j < this.npending; j++) {
        const i = this.pending[j];
        if (acc.done[i] !== 0) continue;
        if (batch.count === cap) {
          // No room to fault again: replay it in the next round.
          this.nextRounds[nn] = this.rounds[j];
          this.next[nn++] = i;
          continue;
        }
        this.replays++;
        stats.replays++;
        if (this.runLoop(i, i + 1) > i) {
          this.countHits(c[LOOP_HITS], c[LOOP_REMOTE], c[LOOP_LOCAL]);
          continue;
        }
        const stop = c[LOOP_STOP];
        if (stop !== LOOP_STOP_MISS) {
          if (stop === LOOP_STOP_FRAME) this.frameBreach(acc.va[i], c[LOOP_RESULT]);
          break;
        }
        stats.translationMisses++;
        const round = this.rounds[j] + 1;
        if (round >= MAX_FAULT_ROUNDS) {
          stuck = i;
          break;
        }
        this.nextRounds[nn] = round;
        this.next[nn++] = i;
        this.raise(i);
      }
    } catch (e) {
      // The access that threw did not complete (a loop of one access has nothing to recount).
      threw = true;
      thrown = e;
    }
    const okScope = d.endTranslate(prev, acc.va[this.pending[Math.min(j, this.npending - 1)]], threw, thrown);
    if (okScope) this.reportBreach();
    if (stuck >= 0 && this.active()) {
      d.breach("handleFaults", acc.va[stuck], {
        why: `the access at ${hex(acc.va[stuck])} (${acc.kind[stuck] === READ ? "read" : acc.kind[stuck] === DEVICE_ATOMIC ? "atomic" : "write"}) still missed after ${MAX_FAULT_ROUNDS} rounds of fault and replay: the fault handler neither made it translatable nor cancelled it`,
        code: "DRIVER_STUCK",
      });
    }
    [this.pending, this.next] = [this.next, this.pending];
    [this.rounds, this.nextRounds] = [this.nextRounds, this.rounds];
    this.npending = nn;
  }

  private cancel(i: number, errno: string): void {
    const acc = this.acc;
    if (acc.done[i] !== 0) return;
    acc.done[i] = CANCELLED;
    this.cancelled++;
    this.dev.stats.fatalFaults++;
    if (this.errors.length < MAX_ERRORS)
      this.errors.push({ index: i, va: acc.va[i], kind: acc.kind[i], errno });
  }

  /** The device failed: every access not done is cancelled (ENODEV). */
  private cancelRest(): void {
    const acc = this.acc;
    for (let i = 0; i < acc.count; i++) if (acc.done[i] === 0) this.cancel(i, "ENODEV");
  }
}
