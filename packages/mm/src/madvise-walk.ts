import { hex } from "./constants.js";
import { MmError } from "./errors.js";
import type { MmStruct as Mm } from "./types.js";
import type { Vma } from "./vma.js";

/**
 * madvise_walk_vmas: call `visit` for each mapped part of [start, end), in address order, with the
 * VMA and the part's bounds; the VMA is looked up afresh after each visit, so a visit may split or
 * merge VMAs. A hole in the range does not stop the walk: the mapped parts are all advised and
 * the result is true; the caller then fails with {@link madviseHoleError}, as Linux does (ENOMEM
 * after advising the rest). An error thrown by `visit` stops the walk at once.
 */
export function madviseWalkVmas(
  mm: Mm,
  start: number,
  end: number,
  visit: (vma: Vma, start: number, end: number) => void,
): boolean {
  let hole = false;
  let cur = start;
  while (cur < end) {
    const v = mm.vmas.findFrom(cur);
    if (v === null || v.start >= end) {
      hole = true;
      break;
    }
    if (v.start > cur) {
      hole = true;
      cur = v.start;
    }
    const segEnd = Math.min(end, v.end);
    visit(v, cur, segEnd);
    cur = segEnd;
  }
  return hole;
}

/** The ENOMEM of a madvise whose range [start, end) had a hole (the mapped parts were advised). */
export function madviseHoleError(start: number, end: number): MmError {
  return new MmError(
    "ENOMEM",
    `madvise: [${hex(start)}, ${hex(end)}) includes unmapped memory; the mapped parts were advised`,
  );
}
