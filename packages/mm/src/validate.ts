import { hex, PAGE_SIZE, TASK_SIZE } from "./constants.js";
import { type ErrnoName, MmError } from "./errors.js";
import { LINUX_MADVISE_ADVICE } from "./mman.js";

/**
 * Argument checks for the public entry points of the memory manager. Each public call validates
 * its arguments once, here, before it changes anything, so a rejected call leaves the machine as
 * it was; the per-page paths behind the entry points take the values as checked.
 *
 * The rules: addresses and lengths are non-negative safe integers (anything else, a string, NaN, a
 * fraction, a negative number, is EINVAL with code BAD_ARGUMENT); user space is [0, TASK_SIZE)
 * (the page table's top index would alias an address at or above 2^48 onto a real mapping, so no
 * address outside user space may reach it); range errors on well-formed integers get the errno
 * the kernel gives for that call.
 */

/** A value as a message shows it: integers in hex (addresses), strings quoted, others by type. */
export function describeValue(v: unknown): string {
  if (typeof v === "number") {
    if (Number.isSafeInteger(v) && v >= 0) return v < 4096 ? String(v) : hex(v);
    return String(v);
  }
  if (typeof v === "string") return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v);
  if (typeof v === "bigint") return `${v}n`;
  if (typeof v === "boolean") return String(v);
  if (v === null || v === undefined) return String(v);
  if (Array.isArray(v)) return "an array";
  if (typeof v === "function") return "a function";
  const name = (v as object).constructor?.name;
  return name && name !== "Object" ? `a ${name}` : "an object";
}

/** The error a malformed argument gets: EINVAL, code BAD_ARGUMENT, naming op, argument and value. */
export function badArgument(op: string, arg: string, value: unknown, expected: string): MmError {
  return new MmError("EINVAL", `${op}: ${arg} ${describeValue(value)} is not ${expected}`, "BAD_ARGUMENT");
}

/** True if `v` is a non-negative safe integer (an address or a length the simulator can hold). */
export function isUnsigned(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/** `v` as a non-negative safe integer, else EINVAL BAD_ARGUMENT. */
export function checkUnsigned(op: string, arg: string, v: unknown): number {
  if (!isUnsigned(v)) throw badArgument(op, arg, v, "a non-negative integer");
  return v;
}

/** `v` as an integer in [min, max], else EINVAL BAD_ARGUMENT. */
export function checkIntegerIn(op: string, arg: string, v: unknown, min: number, max: number): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw badArgument(op, arg, v, `an integer from ${min} to ${max}`);
  }
  return v;
}

/** `v` as a 32-bit flag word (a C int of flags), else EINVAL BAD_ARGUMENT. */
export function checkFlagWord(op: string, arg: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xffff_ffff) {
    throw badArgument(op, arg, v, "a non-negative 32-bit integer of flag bits");
  }
  return v;
}

/** True if `va` is a user address: an integer in [0, TASK_SIZE). Cheap enough for per-call use. */
export function isUserAddress(va: number): boolean {
  return va >= 0 && va < TASK_SIZE && Number.isInteger(va);
}

/** True if [start, end) is a range of user space: integers with 0 <= start <= end <= TASK_SIZE. */
export function isUserRange(start: number, end: number): boolean {
  return start >= 0 && start <= end && end <= TASK_SIZE && Number.isInteger(start) && Number.isInteger(end);
}

/** The user range [start, start + len) as its end, else `errno` (EFAULT for accesses) naming it. */
export function checkUserRange(
  op: string,
  start: unknown,
  len: unknown,
  errno: ErrnoName = "EFAULT",
): number {
  const s = checkUnsigned(op, "address", start);
  const n = checkUnsigned(op, "length", len);
  if (s + n > TASK_SIZE) {
    throw new MmError(
      errno,
      `${op}: [${hex(s)}, +${hex(n)}) is outside user space [0, ${hex(TASK_SIZE)})`,
      "BAD_ADDRESS",
    );
  }
  return s + n;
}

/** `v` as a page-aligned non-negative integer, else EINVAL naming the argument. */
export function checkPageAligned(op: string, arg: string, v: unknown): number {
  const x = checkUnsigned(op, arg, v);
  if (x % PAGE_SIZE !== 0) {
    throw new MmError("EINVAL", `${op}: ${arg} ${hex(x)} is not page aligned`, "BAD_ARGUMENT");
  }
  return x;
}

/** `fn` if it is a function, else EINVAL BAD_ARGUMENT (for callback objects handed to the mm). */
export function checkFunction(op: string, arg: string, fn: unknown): void {
  if (typeof fn !== "function") throw badArgument(op, arg, fn, "a function");
}

/** A value Linux accepts that the simulator does not model: EINVAL, code NOT_SIMULATED. */
export function notSimulated(op: string, what: string): MmError {
  return new MmError("EINVAL", `${op}: ${what} is not simulated`, "NOT_SIMULATED");
}

/** Names of the set bits of `v` found in `names` (bit value -> name), for messages. */
export function bitNames(v: number, names: Readonly<Record<number, string>>): string {
  const out: string[] = [];
  for (const k of Object.keys(names)) if (v & Number(k)) out.push(names[Number(k)]);
  return out.join(" | ");
}

/**
 * `advice` checked as madvise(2) does (madvise_behavior_valid): a value that is no Linux advice is
 * EINVAL (BAD_ARGUMENT); a Linux advice outside `simulated` is EINVAL (NOT_SIMULATED).
 */
export function checkAdvice(op: string, advice: unknown, simulated: ReadonlySet<number>): number {
  if (typeof advice !== "number" || !Number.isInteger(advice))
    throw badArgument(op, "advice", advice, "an integer");
  if (simulated.has(advice)) return advice;
  const name = LINUX_MADVISE_ADVICE[advice];
  if (name === undefined) throw badArgument(op, "advice", advice, "a madvise advice");
  throw notSimulated(op, `advice ${name} (${advice})`);
}
