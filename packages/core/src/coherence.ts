import { hex, PAGE_SIZE } from "@hmmkit/mm";
import type { Device } from "./device.js";
import type { HmmCore } from "./hmm-core.js";
import { checkTranslation, isOwnExclusive } from "./translation-check.js";

/** What one coherence check found. */
export interface CoherenceResult {
  /** Translated pages checked. */
  readonly pages: number;
  /** Pages whose translation the CPU page table contradicts. */
  readonly violations: number;
  /** The first of them (at most `maxProblems`), described with device, address space and address. */
  readonly problems: readonly string[];
}

/**
 * The contract's coherence promise, checked from outside the hot path: every translation the
 * driver reports (`HmmCore.translations`) matches the CPU page table now, page by page, with the
 * same rule `runDevice` applies to each access under `verifyTranslations`: the same frame; never
 * writable where the CPU entry is not; device memory only for this device's device-private
 * entries; a system frame only for a present entry (not PROT_NONE) or this device's exclusive
 * entry; a translation reported `exclusive` only over this device's exclusive entry; no
 * translation for an address space that has exited.
 */
export function checkCoherence(core: HmmCore, dev: Device, maxProblems = 16): CoherenceResult {
  const problems: string[] = [];
  let pages = 0;
  let violations = 0;
  const bad = (mmId: number, va: number, why: string) => {
    violations++;
    if (problems.length < maxProblems) problems.push(`${dev.name}: mm ${mmId} va ${hex(va)}: ${why}`);
  };
  for (const t of core.translations(dev)) {
    const mm = core.mmById(t.mmId);
    if (mm === undefined || mm.exited) {
      bad(t.mmId, t.va, "a translation for an address space that has exited");
      continue;
    }
    const n = 2 ** t.order;
    for (let i = 0; i < n; i++) {
      const va = t.va + i * PAGE_SIZE;
      pages++;
      // A translation as the access path would return it: a system pfn, or -2 - dpfn.
      const r = t.devicePrivate ? -2 - (t.pfn + i) : t.pfn + i;
      const why = checkTranslation(mm, dev.ownerId, va, t.writable, r);
      if (why !== null) bad(t.mmId, va, why);
      else if (t.exclusive === true && !isOwnExclusive(mm, dev.ownerId, va))
        bad(t.mmId, va, "reported exclusive, but the CPU entry is not this device's device-exclusive entry");
    }
  }
  return { pages, violations, problems };
}
