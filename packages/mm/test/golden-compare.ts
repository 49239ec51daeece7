import type { MachineConfig } from "../src/index.js";

/**
 * Kernel settings a set of golden outputs was made with (test/golden/kernel.json), written by
 * test/golden/regen.sh from the machine that ran mmoracle.
 */
export interface KernelSettings {
  /** `uname -r`. */
  uname: string;
  /** The selected mode of /sys/kernel/mm/transparent_hugepage/enabled. */
  thp: "always" | "madvise" | "never";
  /** /sys/kernel/mm/transparent_hugepage/use_zero_page (0 or 1). */
  use_zero_page: number;
  /** Whether read faults in private anonymous memory map the zero page on that kernel. */
  zero_page: boolean;
  /** /sys/kernel/mm/fault_around_bytes. */
  fault_around_bytes: number;
}

/** The simulated machine settings that reproduce `k`'s memory-manager behaviour. */
export function kernelMachineConfig(k: KernelSettings): Partial<MachineConfig> {
  return {
    thp: k.thp,
    zeroPage: k.zero_page,
    hugeZeroPage: k.use_zero_page === 1,
    faultAroundBytes: k.fault_around_bytes,
  };
}

const TOUCH = /^(c )?touch (\S+): (ok|segv at page \d+) faults (\d+)$/;

/**
 * Compare the simulator's output with a golden (mmoracle) output, line by line. Lines must be
 * equal, except that a `touch` line's fault count may be higher in the golden by:
 *  - one, for the child's first `c touch` after each `fork` (the oracle's child takes a COW fault
 *    of its own stack there), and
 *  - one, for a touch that ends in `segv` (the kernel writes the signal frame on the stack).
 * Returns null when the outputs match, else a message naming the first difference.
 */
export function compareWithGolden(golden: readonly string[], actual: readonly string[]): string | null {
  let childFirstTouch = false;
  const n = Math.max(golden.length, actual.length);
  for (let i = 0; i < n; i++) {
    const g = golden[i];
    const a = actual[i];
    if (g === undefined || a === undefined) {
      return `line ${i + 1}: ${g === undefined ? "golden ended" : `golden '${g}'`}, ${a === undefined ? "output ended" : `output '${a}'`}`;
    }
    if (g === "fork: ok") childFirstTouch = true;
    const mg = TOUCH.exec(g);
    const ma = TOUCH.exec(a);
    if (mg !== null && ma !== null && mg[1] === ma[1] && mg[2] === ma[2] && mg[3] === ma[3]) {
      let slack = 0;
      if (mg[1] !== undefined && childFirstTouch) {
        slack++;
        childFirstTouch = false;
      }
      if (mg[3] !== "ok") slack++;
      const extra = Number(mg[4]) - Number(ma[4]);
      if (extra >= 0 && extra <= slack) continue;
    } else if (g === a) continue;
    return `line ${i + 1}: golden '${g}', output '${a}'`;
  }
  return null;
}

/** The scenario's title: its first comment line, which states the behaviour it shows. */
export function scenarioTitle(text: string): string {
  const m = /^#\s*(.+)$/m.exec(text);
  return m === null ? "" : m[1].trim();
}
