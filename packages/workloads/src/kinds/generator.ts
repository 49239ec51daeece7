import type { Region } from "../region.js";
import { unit5 } from "../seeded.js";
import type { WorkloadRun } from "../workload-run.js";

/** A kind's parameters: every key of its table entry (sizes in bytes). */
export type Params = Readonly<Record<string, number>>;

/** How one kind runs. */
export interface WorkloadGenerator {
  /** Pages of its buffers (per process), given the device's memory in pages. */
  pages(params: Params, devicePages: number): number;
  /** System frames it may need at most (what the default machine size is made from). */
  footprintPages(params: Params, devicePages: number): number;
  /** Allocate its buffers and run its phases on `w` (stop when `w.phase` returns false). */
  run(w: WorkloadRun, params: Params): void;
}

/** Salts of the seeded coins, so each decision draws its own. */
export const SALT_CPU = 0x43505521;
export const SALT_CPU_WRITE = 0x43505557;
export const SALT_WRITE = 0x57524954;
export const SALT_RANDOM = 0x52414e44;
export const SALT_VICTIM = 0x56494354;

/** A phase of its own in which the CPU writes every page of `regions` (so later reads see data). */
export function initPhase(w: WorkloadRun, regions: readonly Region[]): boolean {
  return w.phase("init", (p) => {
    for (const r of regions) for (let i = 0; i < r.pages; i++) p.cpuWrite(r, i);
  });
}

/**
 * `passes` phases over `r`: each page goes, by seeded coins of (seed, phase, region, page), to
 * the CPU thread with probability `cpu` (it reads the page, then writes it with probability
 * `write`), else to the device, which writes it with probability `write` and reads it otherwise,
 * in address order.
 */
export function streamPasses(
  w: WorkloadRun,
  r: Region,
  passes: number,
  write: number,
  cpu: number,
  label: string,
): boolean {
  for (let pass = 0; pass < passes; pass++) {
    const ok = w.phase(`${label} ${pass}`, (p) => {
      const seed = w.seed;
      for (let i = 0; i < r.pages; i++) {
        if (cpu > 0 && unit5(seed, p.index, r.id, i, SALT_CPU) < cpu) {
          p.cpuRead(r, i);
          if (unit5(seed, p.index, r.id, i, SALT_CPU_WRITE) < write) p.cpuWrite(r, i);
        } else if (write > 0 && unit5(seed, p.index, r.id, i, SALT_WRITE) < write) p.deviceWrite(r, i);
        else p.deviceRead(r, i);
      }
    });
    if (!ok) return false;
  }
  return true;
}
