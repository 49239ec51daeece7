import { hex, type Mm, PAGE_SIZE, type Process, TASK_SIZE } from "@hmmkit/mm";
import { HmmError } from "./errors.js";

/** An address space or the process that owns it. */
export type MmLike = Mm | Process;

/** The mm of `x`. */
export function mmOf(x: MmLike): Mm {
  return "mm" in x ? x.mm : x;
}

/** Check that [start, end) is a valid, page-aligned, non-empty user range (EINVAL otherwise). */
export function checkRange(op: string, start: number, end: number): void {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end)) {
    throw new HmmError("EINVAL", `${op}: range [${start}, ${end}) is not made of integers`);
  }
  if (start % PAGE_SIZE !== 0 || end % PAGE_SIZE !== 0) {
    throw new HmmError("EINVAL", `${op}: range [${hex(start)}, ${hex(end)}) is not page aligned`);
  }
  if (end <= start) throw new HmmError("EINVAL", `${op}: empty range [${hex(start)}, ${hex(end)})`);
  if (start < 0 || end > TASK_SIZE)
    throw new HmmError("EINVAL", `${op}: [${hex(start)}, ${hex(end)}) is outside user space`);
}
