/**
 * Helpers for the iotlb driver's tests: a system with an iotlb device, mappings, and the coherence check (every translation the device holds matches the CPU
 * page table now).
 */
import {
  checkCoherence,
  createHmm,
  type Device,
  type HmmCore,
  type HmmPlugin,
  type HmmSystem,
} from "@hmmkit/core";
import {
  HPAGE_PMD_SIZE,
  MADV_HUGEPAGE,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  type MachineConfig,
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

/**
 * Every translation `dev` holds (core.translations) matches the CPU page table (the core's
 * checkCoherence: same frame, never writable where the CPU is not, device memory only for this
 * device's device-private entries). Returns the pages checked.
 */
export function expectCoherent(core: HmmCore, dev: Device): number {
  const r = checkCoherence(core, dev, 10);
  expect(r.problems).toEqual([]);
  return r.pages;
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
