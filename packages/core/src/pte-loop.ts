import { compilePerClass } from "./compile-per-class.js";
import type { HmmDriver } from "./contract.js";

/** Where the per-PTE loop stopped (one per dispatcher, reused by every call). */
export class PteLoopState {
  /** Pages reported. */
  i = 0;
  /** Address of the last page offered (the one that threw, if one did). */
  cur = 0;
  ret: unknown = undefined;
  threw = false;
  thrown: unknown = undefined;
}

/**
 * Report `count` pages from `va` to `d.mirrorPte` (page i: frame `pfns[pfnOff + i]`, flags
 * `flags[flagOff + i]`), stopping at a breach recorded meanwhile (`host.violation`) or a thenable
 * returned. It names nothing outside itself: `pteLoopFor` gives each driver class its own compiled
 * copy so the mirrorPte call stays monomorphic and inlined (see compilePerClass).
 */
function pteLoop(
  host: { readonly violation: unknown },
  isThenable: (x: unknown) => boolean,
  d: HmmDriver,
  mmId: number,
  va: number,
  count: number,
  pfns: Int32Array,
  pfnOff: number,
  flags: Int32Array,
  flagOff: number,
  out: PteLoopState,
): void {
  let i = 0;
  let cur = va;
  let ret: unknown;
  try {
    while (i < count) {
      cur = va + i * 4096;
      ret = d.mirrorPte!(mmId, cur, pfns[pfnOff + i], flags[flagOff + i]);
      i++;
      // A breach recorded, or a thenable returned, ends the run at this page.
      if (host.violation !== null || (ret !== undefined && isThenable(ret))) break;
    }
  } catch (e) {
    out.threw = true;
    out.thrown = e;
  }
  out.i = i;
  out.cur = cur;
  out.ret = ret;
}

/** The per-PTE loop's type. */
export type PteLoop = typeof pteLoop;

/** The copy of the per-PTE loop for `driver`'s class (compiled on first use). */
export const pteLoopFor: (driver: HmmDriver) => PteLoop = compilePerClass(pteLoop);
