import { hex } from "./constants.js";
import { MmError } from "./errors.js";
import { badArgument, checkFunction, checkUnsigned } from "./validate.js";

/**
 * Why a range is being invalidated (enum mmu_notifier_event, same numeric values as Linux).
 */
export const MmuNotifyEvent = {
  /** munmap() of the range, or process exit tearing the mappings down. */
  UNMAP: 0,
  /** Entries cleared for other reasons: MADV_DONTNEED, a COW break replacing the page, a THP split. */
  CLEAR: 1,
  /** mprotect() changed the protection of the VMA. */
  PROTECTION_VMA: 2,
  /** Per-page write protection: fork() write-protects the parent's COW pages. */
  PROTECTION_PAGE: 3,
  /** Soft-dirty tracking reset (not produced by the simulator). */
  SOFT_DIRTY: 4,
  /** The address space is going away (exit); sent once per interval notifier over the whole space. */
  RELEASE: 5,
  /** migrate_vma is replacing entries with migration entries; `owner` is the migrating device. */
  MIGRATE: 6,
  /** An entry became, or stopped being, exclusive to a device (make_device_exclusive). */
  EXCLUSIVE: 7,
} as const;

/** One of the {@link MmuNotifyEvent} values. */
export type MmuNotifyEvent = (typeof MmuNotifyEvent)[keyof typeof MmuNotifyEvent];

/** Event names by value, for messages and stats. */
export const MMU_NOTIFY_EVENT_NAMES: Record<MmuNotifyEvent, string> = {
  0: "UNMAP",
  1: "CLEAR",
  2: "PROTECTION_VMA",
  3: "PROTECTION_PAGE",
  4: "SOFT_DIRTY",
  5: "RELEASE",
  6: "MIGRATE",
  7: "EXCLUSIVE",
};

/** MMU_NOTIFIER_RANGE_BLOCKABLE: the callback may sleep. Every range the simulator sends is blockable. */
export const MMU_NOTIFIER_RANGE_BLOCKABLE = 1;

/** struct mmu_notifier_range: what is being invalidated and why. `end` is exclusive. */
export interface MmuNotifierRange {
  readonly mmId: number;
  readonly start: number;
  readonly end: number;
  readonly event: MmuNotifyEvent;
  /** The device that caused a MIGRATE or EXCLUSIVE event (its owner id), else null. */
  readonly owner: number | null;
  readonly flags: number;
}

/** struct mmu_interval_notifier_ops. */
export interface MmuIntervalNotifierOps {
  /**
   * Called before any entry in the overlap of `range` and the interval changes. The callback must
   * take its own lock, call `sub.setSeq(curSeq)` unconditionally, drop every device mapping in the
   * range, and return true. After it returns the caller changes the CPU entries.
   */
  invalidate(sub: MmuIntervalNotifier, range: MmuNotifierRange, curSeq: number): boolean;
}

/**
 * struct mmu_interval_notifier: a subscription to invalidations of [start, end) of one mm, with
 * the sequence count of the kernel's collision-retry protocol.
 */
export class MmuIntervalNotifier {
  /** @internal */
  invalidateSeq: number;
  /** @internal */
  removed = false;
  constructor(
    readonly subscriptions: MmuNotifierSubscriptions,
    readonly start: number,
    readonly end: number,
    readonly ops: MmuIntervalNotifierOps,
    initialSeq: number,
  ) {
    this.invalidateSeq = initialSeq;
  }

  /** mmu_interval_set_seq: called by invalidate() with the `curSeq` it was given. */
  setSeq(curSeq: number): void {
    this.invalidateSeq = curSeq;
  }

  /**
   * mmu_interval_read_begin: returns the sequence to pass to readRetry. In the kernel it sleeps
   * while an invalidation of this interval runs; the simulator runs each invalidation to the end
   * before any other thread resumes, so being called during one is a bug in the caller.
   */
  readBegin(): number {
    const seq = this.invalidateSeq;
    if (seq === this.subscriptions.invalidateSeq && (seq & 1) === 1) {
      throw new MmError(
        "EDEADLK",
        `mmu_interval_read_begin on [${hex(this.start)}, ${hex(this.end)}) from inside its own invalidation`,
        "NOTIFIER_DEADLOCK",
      );
    }
    return seq;
  }

  /** mmu_interval_read_retry: true if an invalidation ran since readBegin returned `seq`. */
  readRetry(seq: number): boolean {
    return this.invalidateSeq !== seq;
  }

  /** mmu_interval_check_retry: lock-free hint, same answer in the simulator. */
  checkRetry(seq: number): boolean {
    return this.invalidateSeq !== seq;
  }

  /** mmu_interval_notifier_remove. */
  remove(): void {
    this.subscriptions.remove(this);
  }
}

/** Counters of notifier traffic. */
export interface NotifierCounters {
  /** invalidate_range_start calls that reached at least one notifier. */
  ranges: number;
  /** invalidate() callbacks made. */
  calls: number;
  /** Pages covered by the callbacks (overlap of range and interval, summed). */
  pages: number;
}

/**
 * The per-mm notifier state (struct mmu_notifier_subscriptions): the interval notifiers and the
 * mm-wide invalidate sequence, even when idle, odd while an invalidation is active.
 */
export class MmuNotifierSubscriptions {
  /** @internal */
  invalidateSeq = 2;
  private active = 0;
  private notifiers: MmuIntervalNotifier[] = [];
  private deferred: (() => void)[] = [];

  /** Called when a callback throws; the invalidation still completes. */
  /**
   * Errors thrown by invalidate callbacks, oldest first. Linux callbacks cannot fail, so the
   * invalidation and the change it announces complete regardless; the default handler records the
   * error here for the notifier's owner to inspect.
   */
  readonly callbackErrors: { range: MmuNotifierRange; error: unknown }[] = [];
  /** Called when a callback throws; the default records the error in `callbackErrors`. */
  onCallbackError: (sub: MmuIntervalNotifier, range: MmuNotifierRange, err: unknown) => void = (
    _sub,
    range,
    error,
  ) => {
    this.callbackErrors.push({ range, error });
  };

  constructor(
    readonly mmId: number,
    /** Counters to add this mm's traffic to (shared machine-wide). */
    readonly counters: NotifierCounters = { ranges: 0, calls: 0, pages: 0 },
  ) {}

  /** Number of registered interval notifiers. */
  get size(): number {
    return this.notifiers.length;
  }

  /** mmu_interval_notifier_insert over [start, start + length). */
  insert(start: number, length: number, ops: MmuIntervalNotifierOps): MmuIntervalNotifier {
    checkUnsigned("mmu_interval_notifier_insert", "start", start);
    checkUnsigned("mmu_interval_notifier_insert", "length", length);
    if (typeof ops !== "object" || ops === null)
      throw badArgument("mmu_interval_notifier_insert", "ops", ops, "an MmuIntervalNotifierOps object");
    checkFunction("mmu_interval_notifier_insert", "ops.invalidate", ops.invalidate);
    // __mmu_interval_notifier_insert refuses only an empty or overflowing interval; one beyond
    // TASK_SIZE is accepted and simply never invalidated.
    if (length === 0 || !Number.isSafeInteger(start + length)) {
      throw new MmError(
        "EOVERFLOW",
        `mmu_interval_notifier_insert: bad interval [${hex(start)}, +${hex(length)})`,
      );
    }
    // A new notifier starts odd (never equal to an idle mm seq). Inserted while an invalidation
    // of some notifier runs (mm seq odd), it takes that odd value so readBegin cannot succeed
    // until the invalidation ends, and it joins the list only then, missing that invalidation.
    const invalidating = (this.invalidateSeq & 1) === 1;
    const seq = invalidating ? this.invalidateSeq : this.invalidateSeq - 1;
    const sub = new MmuIntervalNotifier(this, start, start + length, ops, seq);
    if (invalidating) this.deferred.push(() => this.notifiers.push(sub));
    else this.notifiers.push(sub);
    return sub;
  }

  /** @internal */
  remove(sub: MmuIntervalNotifier): void {
    if (sub.removed) return;
    sub.removed = true;
    const drop = () => {
      const i = this.notifiers.indexOf(sub);
      if (i >= 0) this.notifiers.splice(i, 1);
    };
    if (this.active > 0) this.deferred.push(drop);
    else drop();
  }

  /** True if any notifier overlaps [start, end). */
  overlaps(start: number, end: number): boolean {
    for (const n of this.notifiers) if (n.start < end && start < n.end && !n.removed) return true;
    return false;
  }

  /**
   * mmu_notifier_invalidate_range_start: call every overlapping notifier before the change.
   * Must be paired with {@link invalidateRangeEnd}.
   */
  invalidateRangeStart(range: MmuNotifierRange): void {
    this.startRange(range.start, range.end, range.event, range.owner, range);
  }

  /**
   * invalidateRangeStart for [start, end) without a range object from the caller: one is made
   * only if some notifier overlaps the range, so the per-page paths (a COW break) allocate
   * nothing when no mirror watches them. Must be paired with {@link invalidateRangeEnd}.
   */
  invalidateStart(start: number, end: number, event: MmuNotifyEvent, owner: number | null): void {
    this.startRange(start, end, event, owner, null);
  }

  private startRange(
    start: number,
    end: number,
    event: MmuNotifyEvent,
    owner: number | null,
    given: MmuNotifierRange | null,
  ): void {
    // Active before the first callback (mn_itree_inv_start_range), so that a callback removing
    // or inserting a notifier is deferred instead of changing the list being walked.
    this.active++;
    const list = this.notifiers;
    if (list.length === 0) return;
    let range = given;
    let hit = false;
    try {
      for (let i = 0; i < list.length; i++) {
        const sub = list[i];
        if (sub.removed || sub.end <= start || end <= sub.start) continue;
        if (!hit) {
          hit = true;
          range ??= this.range(start, end, event, owner);
          this.counters.ranges++;
          this.invalidateSeq |= 1;
        }
        this.counters.calls++;
        this.counters.pages += (Math.min(end, sub.end) - Math.max(start, sub.start)) / 4096;
        try {
          sub.ops.invalidate(sub, range!, this.invalidateSeq);
        } catch (err) {
          // The CPU-side change must still happen; the owner of the notifier is told.
          sub.setSeq(this.invalidateSeq);
          this.onCallbackError(sub, range!, err);
        }
      }
    } catch (err) {
      // onCallbackError rethrew: the operation is abandoned; leave the sequence idle again.
      this.invalidateRangeEnd();
      throw err;
    }
  }

  /** mmu_notifier_invalidate_range_end: the last end makes the sequence even again. */
  invalidateRangeEnd(): void {
    if (--this.active > 0) return;
    if (this.invalidateSeq & 1) this.invalidateSeq++;
    if (this.deferred.length === 0) return;
    const work = this.deferred;
    this.deferred = [];
    for (const w of work) w();
  }

  /** Invalidate [start, end) with `event` around `change` (start, change, end). */
  invalidate(
    start: number,
    end: number,
    event: MmuNotifyEvent,
    owner: number | null,
    change: () => void,
  ): void {
    this.startRange(start, end, event, owner, null);
    try {
      change();
    } finally {
      this.invalidateRangeEnd();
    }
  }

  /** Make a range object for callers that split start and end. */
  range(start: number, end: number, event: MmuNotifyEvent, owner: number | null = null): MmuNotifierRange {
    return { mmId: this.mmId, start, end, event, owner, flags: MMU_NOTIFIER_RANGE_BLOCKABLE };
  }

  /** All live notifiers (for RELEASE at exit). */
  list(): readonly MmuIntervalNotifier[] {
    return this.notifiers.filter((n) => !n.removed);
  }
}
