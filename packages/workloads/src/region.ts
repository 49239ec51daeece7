import { hex, PAGE_SIZE, type Process } from "@hmmkit/mm";
import { PhaseRuleError } from "./errors.js";

/** Who touches a page in a phase (bits of Region.use). */
export const USE_CPU_READ = 1;
export const USE_CPU_WRITE = 2;
export const USE_DEVICE_READ = 4;
export const USE_DEVICE_WRITE = 8;
export const USE_DEVICE_ATOMIC = 16;

/*
 * The phase rule, per page: a page one agent writes is accessed by no other agent in that phase;
 * the device never reads a page it writes in the same phase (its accesses complete out of order
 * across faults and replays) and does at most one atomic per page and phase. The CPU thread runs
 * in program order, so it may read what it wrote. Each use lists the uses it cannot share a page with.
 */
const CONFLICTS = new Uint8Array(32);
CONFLICTS[USE_CPU_READ] = USE_DEVICE_WRITE | USE_DEVICE_ATOMIC;
CONFLICTS[USE_CPU_WRITE] = USE_DEVICE_READ | USE_DEVICE_WRITE | USE_DEVICE_ATOMIC;
CONFLICTS[USE_DEVICE_READ] = USE_CPU_WRITE | USE_DEVICE_WRITE | USE_DEVICE_ATOMIC;
CONFLICTS[USE_DEVICE_WRITE] = USE_CPU_READ | USE_CPU_WRITE | USE_DEVICE_READ | USE_DEVICE_ATOMIC;
CONFLICTS[USE_DEVICE_ATOMIC] = 31;

const USE_NAMES: Record<number, string> = {
  [USE_CPU_READ]: "CPU read",
  [USE_CPU_WRITE]: "CPU write",
  [USE_DEVICE_READ]: "device read",
  [USE_DEVICE_WRITE]: "device write",
  [USE_DEVICE_ATOMIC]: "device atomic",
};

function useList(bits: number): string {
  const out: string[] = [];
  for (let b = 1; b < 32; b <<= 1) if (bits & b) out.push(USE_NAMES[b]);
  return out.join(", ");
}

/**
 * One buffer of a workload in one address space, with its shadow: the expected page token
 * (stampToken of the last stamp written, 0 for never written or zeroed) of every page, and the
 * uses of each page in the current phase.
 */
export class Region {
  /** Expected token of each page. */
  readonly shadow: Uint32Array;
  /** Uses of each page in the current phase (USE_* bits). */
  readonly use: Uint8Array;

  constructor(
    /** Index in the run (part of every stamp written to it). */
    readonly id: number,
    readonly proc: Process,
    /** Address of page 0. */
    readonly base: number,
    readonly pages: number,
    shadow?: Uint32Array,
  ) {
    this.shadow = shadow ?? new Uint32Array(pages);
    this.use = new Uint8Array(pages);
  }

  /** Address of page `page`. */
  va(page: number): number {
    return this.base + page * PAGE_SIZE;
  }

  /** Record use `bit` of `page` in this phase; a use the phase rule forbids is a PhaseRuleError. */
  mark(page: number, bit: number, phase: string): void {
    const u = this.use[page];
    if (u & CONFLICTS[bit])
      throw new PhaseRuleError(
        `phase '${phase}': ${USE_NAMES[bit]} of page ${hex(this.va(page))} (region ${this.id}), which already has ${useList(u)}`,
      );
    this.use[page] = u | bit;
  }

  /** Record use `bit` of pages [first, first + count). */
  markRange(first: number, count: number, bit: number, phase: string): void {
    for (let p = first; p < first + count; p++) this.mark(p, bit, phase);
  }
}
