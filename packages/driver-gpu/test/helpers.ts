/**
 * Helpers for the gpu driver's tests: a machine with a core and one gpu device, mappings, a
 * shadow of the page stamps, and a coherence check of the driver's translations against the CPU
 * page table.
 */
import {
  checkCoherence,
  createHmm,
  type Device,
  type DeviceConfig,
  type HmmCore,
  type HmmSystem,
} from "@hmmkit/core";
import {
  HPAGE_PMD_SIZE,
  MADV_HUGEPAGE,
  MADV_NOHUGEPAGE,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  type MachineConfig,
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
 * Every translation the gpu holds matches the CPU page table (the core's checkCoherence: same
 * frame, never writable where the CPU entry is not, device memory only for this device's
 * device-private entries, exclusive only over its exclusive entries). Returns the pages checked.
 */
export function expectCoherent(core: HmmCore, dev: Device): number {
  const r = checkCoherence(core, dev, 8);
  expect(r.problems).toEqual([]);
  return r.pages;
}

export { MADV_HUGEPAGE };
