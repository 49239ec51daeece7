import { HPAGE_PMD_SIZE, type Mm, makeDeviceExclusive, PAGE_SIZE } from "@hmmkit/mm";
import type { Device } from "./device.js";
import { HMM_PFN_EXCLUSIVE, HMM_PFN_VALID, HMM_PFN_WRITE } from "./flags.js";
import type { PmdSet } from "./pmd-set.js";

/**
 * make_device_exclusive on each page of [start, end) for `dev`, reporting each to its driver as
 * it goes (see HmmCore.makeExclusive); `reported` is the binding's set of reported PMD indices.
 * Returns the pages made exclusive; an error comes at the page that has it.
 */
export function makeExclusiveRange(
  dev: Device,
  mm: Mm,
  reported: PmdSet,
  start: number,
  end: number,
): number {
  const pfn = new Int32Array(1);
  const flags = new Int32Array([HMM_PFN_VALID | HMM_PFN_WRITE | HMM_PFN_EXCLUSIVE]);
  let n = 0;
  for (let va = start; va < end; va += PAGE_SIZE) {
    pfn[0] = makeDeviceExclusive(mm, va, dev.ownerId);
    dev.stats.exclusivePages++;
    reported.add(Math.floor(va / HPAGE_PMD_SIZE));
    if (!dev.dispatcher.mirrorRange(mm.id, va, 1, pfn, 0, flags, 0)) throw dev.dispatcher.failure!;
    n++;
  }
  return n;
}
