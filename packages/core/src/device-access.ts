import { alignDown, hex, PAGE_SIZE, TASK_SIZE } from "@hmmkit/mm";
import { HmmError } from "./errors.js";

/** A device access that reads its page. */
export const DEVICE_READ = 0;
/** A device access that writes its page (a page-granular stamp, see {@link DeviceAccesses.write}). */
export const DEVICE_WRITE = 1;
/**
 * A read-modify-write (an atomic): needs a writable translation like a write, returns the old
 * contents like a read, then stores its stamp.
 */
export const DEVICE_ATOMIC = 2;

/** `HmmDriver.translate` result: no translation allows the access (it stalls and faults). */
export const TRANSLATE_MISS = -1;

/*
 * translate returns one small integer, never an object: a system pfn as itself (>= 0), a frame of
 * the device's own memory as -2 - dpfn (<= -2), a miss as -1. All stay small integers (V8 Smis),
 * so the hot call allocates nothing.
 */

/** The `translate` result for device frame `dpfn` of this device's memory. */
export function deviceFrameResult(dpfn: number): number {
  return -2 - dpfn;
}

/** Whether a `translate` result names a device frame. */
export function isDeviceFrameResult(result: number): boolean {
  return result <= -2;
}

/** The device frame a `translate` result names (for a result <= -2). */
export function deviceFrameOf(result: number): number {
  return -2 - result;
}

const INITIAL_CAPACITY = 1024;

/**
 * A stream of device accesses: per access the page address, the kind (DEVICE_READ, DEVICE_WRITE,
 * DEVICE_ATOMIC) and, for writes and atomics, the stamp it stores. Kept in typed arrays that grow by
 * doubling; `push` allocates nothing per access. Reads and atomics record what they saw (the page
 * hash, see ContentStore.hash) in `seen` when the stream runs.
 */
export class DeviceAccesses {
  /** Page-aligned virtual address of each access. */
  va: Float64Array;
  /** DEVICE_READ, DEVICE_WRITE or DEVICE_ATOMIC. */
  kind: Uint8Array;
  /** What a write or atomic stores: the page becomes the pattern of this stamp. */
  stamp: Int32Array;
  /** After a run: the page hash each read or atomic saw (0 for writes and cancelled accesses). */
  seen: Uint32Array;
  /** Per access after a run: 1 if it completed, 2 if it was cancelled (fatal fault, device failure), 0 if it never ran. */
  done: Uint8Array;
  /** Accesses in the stream. */
  count = 0;

  constructor(capacity = INITIAL_CAPACITY) {
    const n = Math.max(1, capacity | 0);
    this.va = new Float64Array(n);
    this.kind = new Uint8Array(n);
    this.stamp = new Int32Array(n);
    this.seen = new Uint32Array(n);
    this.done = new Uint8Array(n);
  }

  private grow(): void {
    const n = this.va.length * 2;
    const va = new Float64Array(n);
    va.set(this.va);
    this.va = va;
    const kind = new Uint8Array(n);
    kind.set(this.kind);
    this.kind = kind;
    const stamp = new Int32Array(n);
    stamp.set(this.stamp);
    this.stamp = stamp;
    this.seen = new Uint32Array(n);
    this.done = new Uint8Array(n);
  }

  /** Append one access of `kind` to the page holding `va`, storing `stamp` if it writes. */
  push(va: number, kind: number, stamp = 0): void {
    if (!(va >= 0 && va < TASK_SIZE))
      throw new HmmError(
        "EINVAL",
        `DeviceAccesses.push: 'va' must be an address in [0, ${hex(TASK_SIZE)}), got ${String(va)}`,
        "BAD_ARGUMENT",
      );
    if (kind !== DEVICE_READ && kind !== DEVICE_WRITE && kind !== DEVICE_ATOMIC)
      throw new HmmError(
        "EINVAL",
        `DeviceAccesses.push: 'kind' must be DEVICE_READ (0), DEVICE_WRITE (1) or DEVICE_ATOMIC (2), got ${String(kind)}`,
        "BAD_ARGUMENT",
      );
    if (this.count === this.va.length) this.grow();
    const i = this.count++;
    this.va[i] = alignDown(va, PAGE_SIZE);
    this.kind[i] = kind;
    this.stamp[i] = stamp | 0;
  }

  /** Append a read of the page holding `va`. */
  read(va: number): void {
    this.push(va, DEVICE_READ, 0);
  }

  /** Append a write of the page holding `va`: its contents become the pattern of `stamp`. */
  write(va: number, stamp: number): void {
    this.push(va, DEVICE_WRITE, stamp);
  }

  /** Forget every access (keeps the arrays). */
  clear(): void {
    this.count = 0;
  }
}

/**
 * The faults one batch hands to the driver's `handleFaults`: entries 0..count-1 in the order the
 * hardware raised them, duplicates included (several stalled accesses to one page raise one entry
 * each, as a GPU's replayable fault buffer does). The arrays are the core's fault buffer: read them
 * during the call, never keep them.
 */
export class DeviceFaultBatch {
  /** Entries in this batch. */
  count = 0;
  /** Address space of each entry (mm id). */
  readonly mmId: Int32Array;
  /** Page-aligned virtual address of each entry. */
  readonly va: Float64Array;
  /** Access kind of each entry (DEVICE_READ, DEVICE_WRITE or DEVICE_ATOMIC). */
  readonly access: Uint8Array;
  /** Per entry: 0, or the errno name's index in CANCEL_ERRNOS once cancelled. */
  readonly cancelled: Uint8Array;
  /** Which access of the stream raised each entry (the core's bookkeeping). */
  readonly accessIndex: Int32Array;

  constructor(readonly capacity: number) {
    this.mmId = new Int32Array(capacity);
    this.va = new Float64Array(capacity);
    this.access = new Uint8Array(capacity);
    this.cancelled = new Uint8Array(capacity);
    this.accessIndex = new Int32Array(capacity);
  }

  /** True if entry `i` needs a writable translation (a write or an atomic). */
  isWrite(i: number): boolean {
    return this.access[i] !== DEVICE_READ;
  }

  /**
   * Entry `i` cannot be serviced (no VMA: EFAULT; a write to a read-only mapping: EPERM; a
   * PROT_NONE page: EFAULT): the access that raised it is cancelled instead of replayed, as a GPU
   * cancels a faulting access and reports it to the context, and it counts in `fatalFaults`.
   */
  cancel(i: number, errno: "EFAULT" | "EPERM" | "ENOMEM" | "EIO" = "EFAULT"): void {
    if (!Number.isInteger(i) || i < 0 || i >= this.count)
      throw new HmmError(
        "EINVAL",
        `DeviceFaultBatch.cancel: entry ${String(i)} is not in this batch (0..${this.count - 1})`,
        "BAD_ARGUMENT",
      );
    const code = CANCEL_ERRNOS.indexOf(errno);
    if (code < 1)
      throw new HmmError(
        "EINVAL",
        `DeviceFaultBatch.cancel: errno must be one of ${CANCEL_ERRNOS.slice(1).join(", ")}, got ${String(errno)}`,
        "BAD_ARGUMENT",
      );
    this.cancelled[i] = code;
  }
}

/** Errno names a cancelled fault may carry (index 0: not cancelled). */
export const CANCEL_ERRNOS = ["", "EFAULT", "EPERM", "ENOMEM", "EIO"] as const;
