import type { Device, HmmCore } from "@hmmkit/core";
import {
  ENTRY_DEVICE_EXCLUSIVE,
  ENTRY_DEVICE_PRIVATE,
  ENTRY_KIND_MASK,
  ENTRY_NONE,
  ENTRY_PRESENT,
  ENTRY_PROTNONE,
  ENTRY_WRITE,
  entryOwner,
  hex,
  type Mm,
  PAGE_SIZE,
} from "@hmmkit/mm";
import { MAX_REPORTED } from "./oracle.js";

/** What one coherence check found. */
export interface CoherenceResult {
  /** Translated pages checked. */
  readonly pages: number;
  /** Pages whose translation the CPU page table contradicts. */
  readonly violations: number;
  /** The first of them, described. */
  readonly problems: readonly string[];
}

/**
 * The contract's coherence promise, checked from outside: every translation the driver reports
 * (`HmmCore.translations`) matches the CPU page table now. Same frame; never writable where the
 * CPU entry is not; device memory only for this device's device-private entries; a system frame
 * only for a present entry (not PROT_NONE) or this device's exclusive entry; no translation for
 * an address space that has exited.
 */
export function checkCoherence(core: HmmCore, dev: Device): CoherenceResult {
  const mms = new Map<number, Mm>();
  for (const mm of core.machine.mms) mms.set(mm.id, mm);
  const problems: string[] = [];
  let pages = 0;
  let violations = 0;
  const bad = (mmId: number, va: number, why: string) => {
    violations++;
    if (problems.length < MAX_REPORTED) problems.push(`${dev.name}: mm ${mmId} va ${hex(va)}: ${why}`);
  };
  for (const t of core.translations(dev)) {
    const mm = mms.get(t.mmId);
    if (mm === undefined) {
      bad(t.mmId, t.va, "a translation for an address space that has exited");
      continue;
    }
    const pt = mm.pt;
    const n = 2 ** t.order;
    for (let i = 0; i < n; i++) {
      const va = t.va + i * PAGE_SIZE;
      pages++;
      const slot = pt.pmdSlot(va);
      let flags = 0;
      let pfn = -1;
      if (slot >= 0) {
        const leaf = pt.leafAt(slot);
        const idx = Math.floor(va / PAGE_SIZE) & 511;
        if (leaf < 0) {
          flags = pt.pmdFlags[slot];
          pfn = pt.pmdPfn[slot] + idx;
        } else {
          flags = pt.pteFlags[leaf * 512 + idx];
          pfn = pt.ptePfn[leaf * 512 + idx];
        }
      }
      const kind = flags & ENTRY_KIND_MASK;
      if (kind === ENTRY_NONE) {
        bad(t.mmId, va, "translated, but the CPU entry is none");
        continue;
      }
      if (pfn !== t.pfn + i) bad(t.mmId, va, `frame ${t.pfn + i}, but the CPU entry holds ${pfn}`);
      else if (t.devicePrivate) {
        if (kind !== ENTRY_DEVICE_PRIVATE)
          bad(t.mmId, va, `a device-memory translation over a CPU entry of kind ${kind}`);
        else if (entryOwner(flags) !== dev.ownerId)
          bad(t.mmId, va, `a device-private page of owner ${entryOwner(flags)}, not this device`);
      } else if (kind === ENTRY_DEVICE_EXCLUSIVE) {
        if (entryOwner(flags) !== dev.ownerId) bad(t.mmId, va, `exclusive to owner ${entryOwner(flags)}`);
      } else if (kind !== ENTRY_PRESENT)
        bad(t.mmId, va, `a system-memory translation over a CPU entry of kind ${kind}`);
      else if (flags & ENTRY_PROTNONE) bad(t.mmId, va, "a translation of a PROT_NONE entry");
      if (t.writable && (flags & ENTRY_WRITE) === 0)
        bad(t.mmId, va, "writable on the device, read-only on the CPU");
    }
  }
  return { pages, violations, problems };
}
