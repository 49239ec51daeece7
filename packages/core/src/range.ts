import { hex, type Mm, PAGE_SIZE, type Process, TASK_SIZE } from "@hmmkit/mm";
import { badArgument } from "./check-args.js";
import { HmmError } from "./errors.js";

/** An address space or the process that owns it. */
export type MmLike = Mm | Process;

/** The mm of `x`. */
export function mmOf(x: MmLike): Mm {
  return "mm" in x ? x.mm : x;
}

/**
 * Check that [start, end) is a valid, page-aligned, non-empty range of user addresses: integers
 * (not NaN, not strings), below TASK_SIZE (2^47 - 4 KiB; higher addresses are not canonical user
 * addresses). EINVAL otherwise, naming the argument and its value in hex.
 */
export function checkRange(op: string, start: number, end: number): void {
  checkUserAddress(op, "start", start);
  checkUserAddress(op, "end", end);
  if (end <= start)
    throw new HmmError("EINVAL", `${op}: empty range [${hex(start)}, ${hex(end)})`, "BAD_ARGUMENT");
}

function checkUserAddress(op: string, arg: string, v: unknown): void {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0)
    throw badArgument(op, arg, "a non-negative integer address", v, true);
  if (v > TASK_SIZE)
    throw new HmmError(
      "EINVAL",
      `${op}: '${arg}' ${hex(v)} is outside user space (it ends at ${hex(TASK_SIZE)})`,
      "BAD_ARGUMENT",
    );
  if (v % PAGE_SIZE !== 0)
    throw new HmmError("EINVAL", `${op}: '${arg}' ${hex(v)} is not page aligned`, "BAD_ARGUMENT");
}
