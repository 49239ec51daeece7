/**
 * Helpers for the gpu driver's tests: a machine with a core and one gpu device, mappings, a
 * shadow of the page stamps, and a coherence check of the driver's translations against the CPU
 * page table.
 */
import { createHmm, type Device, type DeviceConfig, type HmmCore, type HmmSystem } from "@hmmkit/core";
import {
  ENTRY_DEVICE_EXCLUSIVE,
  ENTRY_DEVICE_PRIVATE,
  ENTRY_KIND_MASK,
  ENTRY_PRESENT,
  ENTRY_PROTNONE,
  ENTRY_WRITE,
  entryOwner,
  HPAGE_PMD_SIZE,
  MADV_HUGEPAGE,
  MADV_NOHUGEPAGE,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  type MachineConfig,
  type Mm,
  PROT_READ,
  PROT_WRITE,
  type Process,
  stampToken,
} from "@hmmkit/mm";
import { expect } from "vitest";
import { type GpuDriver, plugin } from "../src/index.js";

export const PAGE = 4096;
export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;
export const BLOCK = HPAGE_PMD_SIZE;

/** A system with one gpu device `gpu0` and one process. */
export interface GpuSystem extends HmmSystem {
  readonly p: Process;
  readonly dev: Device;
  readonly drv: GpuDriver;
}

/** A machine (64 MiB, tag content unless told) with a gpu device configured by `config`. */
export function makeGpu(
  config: Partial<DeviceConfig> = {},
  machine: Partial<MachineConfig> = {},
  driverPlugin = plugin,
): GpuSystem {
  const sys = createHmm({ machine: { memoryBytes: 64 * MiB, contentMode: "tag", ...machine } });
  const dev = sys.core.addDevice(driverPlugin, { name: "gpu0", memoryPages: 4096, ...config });
  const p = sys.machine.createProcess();
  return { ...sys, p, dev, drv: dev.driver as GpuDriver };
}

/** A private anonymous mapping of `length` bytes, 2 MiB aligned, with THP off (4 KiB pages). */
export function mmapSmall(p: Process, length: number): number {
  const raw = p.mm.mmap({
    length: length + BLOCK,
    prot: PROT_READ | PROT_WRITE,
    flags: MAP_PRIVATE | MAP_ANONYMOUS,
  });
  const base = raw % BLOCK === 0 ? raw : raw - (raw % BLOCK) + BLOCK;
  p.mm.madvise(base, length, MADV_NOHUGEPAGE);
  return base;
}

/** A 2 MiB-aligned MADV_HUGEPAGE mapping of `length` bytes. */
export function mmapHuge(p: Process, length: number): number {
  const raw = p.mm.mmap({
    length: length + BLOCK,
    prot: PROT_READ | PROT_WRITE,
    flags: MAP_PRIVATE | MAP_ANONYMOUS,
  });
  const base = raw % BLOCK === 0 ? raw : raw - (raw % BLOCK) + BLOCK;
  p.mm.madvise(base, length, MADV_HUGEPAGE);
  return base;
}

/** mulberry32: a seeded generator of floats in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The expected hash of a page last stamped with `stamp`. */
export const hashOfStamp = stampToken;

/**
 * Every translation the driver reports agrees with the CPU page table now: the same frame, never
 * writable where the CPU entry is not, device memory only for this device's device-private
 * entries. Returns how many pages were checked.
 */
export function expectCoherent(core: HmmCore, dev: Device, mms: readonly Mm[]): number {
  let pages = 0;
  const problems: string[] = [];
  for (const t of core.translations(dev)) {
    const mm = mms.find((m) => m.id === t.mmId);
    if (mm === undefined) {
      problems.push(`translation of unknown mm ${t.mmId}`);
      continue;
    }
    const n = 2 ** t.order;
    for (let i = 0; i < n && problems.length < 8; i++) {
      const va = t.va + i * PAGE;
      const { flags, pfn } = cpuEntry(mm, va);
      const kind = flags & ENTRY_KIND_MASK;
      const where = `${dev.name} @ 0x${va.toString(16)}`;
      if (t.devicePrivate) {
        if (kind !== ENTRY_DEVICE_PRIVATE || entryOwner(flags) !== dev.ownerId)
          problems.push(`${where}: device-private translation over CPU entry kind ${kind}`);
      } else if (t.exclusive) {
        if (kind !== ENTRY_DEVICE_EXCLUSIVE)
          problems.push(`${where}: exclusive translation over kind ${kind}`);
      } else if (kind !== ENTRY_PRESENT || (flags & ENTRY_PROTNONE) !== 0)
        problems.push(`${where}: translation over CPU entry kind ${kind} (flags ${flags})`);
      if (pfn !== t.pfn + i) problems.push(`${where}: frame ${t.pfn + i}, CPU maps ${pfn}`);
      if (t.writable && (flags & ENTRY_WRITE) === 0)
        problems.push(`${where}: writable over a read-only entry`);
      pages++;
    }
  }
  expect(problems).toEqual([]);
  return pages;
}

/** The CPU entry (flags word and frame) mapping `va`, from the page table. */
export function cpuEntry(mm: Mm, va: number): { flags: number; pfn: number } {
  const pt = mm.pt;
  const slot = pt.pmdSlot(va);
  if (slot < 0) return { flags: 0, pfn: -1 };
  const leaf = pt.leafAt(slot);
  const i = Math.floor(va / PAGE) & 511;
  if (leaf < 0) return { flags: pt.pmdFlags[slot], pfn: pt.pmdPfn[slot] + i };
  return { flags: pt.pteFlags[leaf * 512 + i], pfn: pt.ptePfn[leaf * 512 + i] };
}

export { MADV_HUGEPAGE };
