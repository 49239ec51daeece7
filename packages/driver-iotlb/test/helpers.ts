/**
 * Helpers for the iotlb driver's tests: a system with an iotlb device, mappings, the CPU entry
 * behind a page, and the coherence check (every translation the device holds matches the CPU
 * page table now).
 */
import { createHmm, type Device, type HmmCore, type HmmPlugin, type HmmSystem } from "@hmmkit/core";
import {
  ENTRY_DEVICE_EXCLUSIVE,
  ENTRY_DEVICE_PRIVATE,
  ENTRY_KIND_MASK,
  ENTRY_NONE,
  ENTRY_PRESENT,
  ENTRY_PROTNONE,
  ENTRY_WRITE,
  entryOwner,
  HPAGE_PMD_SIZE,
  MADV_HUGEPAGE,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  type MachineConfig,
  type Mm,
  PROT_READ,
  PROT_WRITE,
  type Process,
} from "@hmmkit/mm";
import { expect } from "vitest";
import { type IotlbDriver, plugin } from "../src/index.js";

export const PAGE = 4096;
export const MiB = 1024 * 1024;
export const RW = PROT_READ | PROT_WRITE;

/** A machine (64 MiB, bytes content, zero page on unless told) with an HMM core. */
export function makeSystem(machine: Partial<MachineConfig> = {}): HmmSystem {
  return createHmm({ machine: { memoryBytes: 64 * MiB, zeroPage: true, ...machine } });
}

/** Add an iotlb device (16 pages of device memory unless told); returns it and its driver. */
export function addIotlb(
  core: HmmCore,
  config: Record<string, unknown> = {},
  name = "iotlb0",
  p: HmmPlugin = plugin,
): { dev: Device; drv: IotlbDriver } {
  const dev = core.addDevice(p, { name, memoryPages: 16, ...config });
  return { dev, drv: dev.driver as IotlbDriver };
}

/** A private anonymous mapping. */
export function mmapPrivate(p: Process, length: number, prot = RW): number {
  return p.mm.mmap({ length, prot, flags: MAP_PRIVATE | MAP_ANONYMOUS });
}

/** A 2 MiB-aligned MADV_HUGEPAGE window of `pmds` PMDs inside a private RW mapping. */
export function mmapHuge(p: Process, pmds = 1): number {
  const len = pmds * HPAGE_PMD_SIZE;
  const raw = mmapPrivate(p, len + HPAGE_PMD_SIZE);
  const base = raw % HPAGE_PMD_SIZE === 0 ? raw : raw - (raw % HPAGE_PMD_SIZE) + HPAGE_PMD_SIZE;
  p.mm.madvise(base, len, MADV_HUGEPAGE);
  return base;
}

/** The CPU entry of `va` (kind, frame, flags), or null when none. */
export function cpuEntry(mm: Mm, va: number): { kind: number; pfn: number; flags: number } | null {
  const pt = mm.pt;
  const slot = pt.pmdSlot(va);
  if (slot < 0) return null;
  const leaf = pt.leafAt(slot);
  const idx = Math.floor(va / PAGE) & 511;
  const f = leaf < 0 ? pt.pmdFlags[slot] : pt.pteFlags[leaf * 512 + idx];
  if ((f & ENTRY_KIND_MASK) === ENTRY_NONE) return null;
  const pfn = leaf < 0 ? pt.pmdPfn[slot] + idx : pt.ptePfn[leaf * 512 + idx];
  return { kind: f & ENTRY_KIND_MASK, pfn, flags: f };
}

/**
 * Every translation `dev` holds (core.translations) matches the CPU page table: same frame, never
 * writable where the CPU is not, device memory only for this device's device-private entries.
 * Returns the pages checked.
 */
export function expectCoherent(core: HmmCore, dev: Device): number {
  const mms = new Map<number, Mm>();
  for (const mm of core.machine.mms) mms.set(mm.id, mm);
  const problems: string[] = [];
  let checked = 0;
  for (const t of core.translations(dev)) {
    const mm = mms.get(t.mmId);
    if (mm === undefined) {
      problems.push(`translation for mm ${t.mmId}, which has exited`);
      continue;
    }
    for (let i = 0; i < 2 ** t.order; i++) {
      const va = t.va + i * PAGE;
      const e = cpuEntry(mm, va);
      const bad = (why: string) => problems.push(`mm ${t.mmId} va 0x${va.toString(16)}: ${why}`);
      checked++;
      if (e === null) {
        bad("the CPU entry is none");
        continue;
      }
      if (e.pfn !== t.pfn + i) bad(`frame ${t.pfn + i} but the CPU maps ${e.pfn}`);
      if (t.devicePrivate) {
        if (e.kind !== ENTRY_DEVICE_PRIVATE || entryOwner(e.flags) !== dev.ownerId)
          bad(`device-private translation on a CPU entry of kind ${e.kind}`);
      } else if (e.kind === ENTRY_DEVICE_EXCLUSIVE) {
        if (entryOwner(e.flags) !== dev.ownerId) bad(`exclusive to owner ${entryOwner(e.flags)}`);
      } else if (e.kind !== ENTRY_PRESENT) bad(`system translation on a CPU entry of kind ${e.kind}`);
      else if (e.flags & ENTRY_PROTNONE) bad("PROT_NONE entry translated");
      if (t.writable && !(e.flags & ENTRY_WRITE)) bad("writable on the device but not on the CPU");
    }
  }
  expect(problems.slice(0, 10)).toEqual([]);
  return checked;
}

/** mulberry32 from a fixed seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
