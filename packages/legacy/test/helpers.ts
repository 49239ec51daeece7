import { createHmm, type Device, type HmmSystem } from "@hmmkit/core";
import {
  HPAGE_PMD_SIZE,
  MADV_HUGEPAGE,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  PROT_READ,
  PROT_WRITE,
  type Process,
} from "@hmmkit/mm";
import { attachSharedMirror, type HmmMirror, type LegacyOptions, type SharedMirror } from "../src/index.js";
import { fakeLegacyPlugin, HmmPtReadingFakeDriver } from "./fakes.js";

export const MiB = 1024 * 1024;
export const PAGE = 4096;
export const PMD = HPAGE_PMD_SIZE;
export const RW = PROT_READ | PROT_WRITE;
export const PRIVATE = MAP_PRIVATE | MAP_ANONYMOUS;

/** A machine (64 MiB, bytes content, zero page) with an HMM core and one process. */
export function makeSystem(memoryBytes = 64 * MiB): HmmSystem & { proc: Process } {
  const sys = createHmm({ machine: { memoryBytes, zeroPage: true } });
  return { ...sys, proc: sys.machine.createProcess() };
}

/** Attach a fake shared-mirror device; returns it, its SharedMirror, its driver and the mirror of `proc`. */
export function attachFake(
  sys: HmmSystem,
  proc: Process,
  name = "legacy0",
  options?: Partial<LegacyOptions>,
): { dev: Device; sm: SharedMirror; drv: HmmPtReadingFakeDriver; mirror: HmmMirror } {
  const { device, mirror: sm } = attachSharedMirror(
    sys.core,
    fakeLegacyPlugin(HmmPtReadingFakeDriver),
    { name, memoryPages: 4096 },
    options,
  );
  return { dev: device, sm, drv: sm.driver as HmmPtReadingFakeDriver, mirror: sm.register(proc.mm) };
}

/** A private anonymous RW mapping. */
export function mmapPrivate(p: Process, length: number, prot = RW): number {
  return p.mm.mmap({ length, prot, flags: PRIVATE });
}

/** A 2 MiB-aligned MADV_HUGEPAGE window of `pmds` PMDs. */
export function mmapHuge(p: Process, pmds = 1): number {
  const len = pmds * PMD;
  const raw = p.mm.mmap({ length: len + PMD, prot: RW, flags: PRIVATE });
  const base = raw % PMD === 0 ? raw : raw - (raw % PMD) + PMD;
  p.mm.madvise(base, len, MADV_HUGEPAGE);
  return base;
}

/** The hmm_pt entry words of `va` in `m` ([lo, hi]), or null when its leaf does not exist. */
export function entryOf(m: HmmMirror, va: number): { lo: number; hi: number } | null {
  const pos = m.pt.entryPos(va);
  return pos < 0 ? null : { lo: m.pt.lo[pos], hi: m.pt.hi[pos] };
}
