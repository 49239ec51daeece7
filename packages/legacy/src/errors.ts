import { HmmError } from "@hmmkit/core";

/**
 * Errno values as HMM v12's functions return them (negated: `hmm_mirror_fault` returns 0 or
 * -EFAULT, -EACCES, ...). The legacy API keeps the kernel's int returns so a v12-era driver reads
 * like one; {@link errnoName} turns one into its name for messages and fault cancellation.
 */
export const EPERM = 1;
export const ENOENT = 2;
export const EIO = 5;
export const EAGAIN = 11;
export const ENOMEM = 12;
export const EACCES = 13;
export const EFAULT = 14;
export const EBUSY = 16;
export const ENODEV = 19;
export const EINVAL = 22;

const NAMES: Record<number, string> = {
  [EPERM]: "EPERM",
  [ENOENT]: "ENOENT",
  [EIO]: "EIO",
  [EAGAIN]: "EAGAIN",
  [ENOMEM]: "ENOMEM",
  [EACCES]: "EACCES",
  [EFAULT]: "EFAULT",
  [EBUSY]: "EBUSY",
  [ENODEV]: "ENODEV",
  [EINVAL]: "EINVAL",
};

/** The name of errno `e` (positive or negative): errnoName(-13) is "EACCES". */
export function errnoName(e: number): string {
  return NAMES[Math.abs(e)] ?? `errno ${e}`;
}

/** The errno number of an errno name (EFAULT -> 14), or EIO for names the legacy API does not use. */
export function errnoOf(name: string | undefined): number {
  for (const [k, v] of Object.entries(NAMES)) if (v === name) return Number(k);
  return EIO;
}

/**
 * A broken hmm_pt invariant: where v12 calls BUG() (a reference taken on a directory whose count
 * is zero, an entry unref that would free a directory a walker is inside, an entry whose pfn
 * disagrees with the CPU page table). Always a bug in the caller or in this package, never a
 * condition to handle: code HMM_PT_BUG.
 */
export class HmmPtAssertionError extends HmmError {
  override name = "HmmPtAssertionError";
  constructor(message: string) {
    super("EIO", message, "HMM_PT_BUG");
  }
}

/** `n` as 0x-prefixed hex, for addresses in messages. */
export function hex(n: number): string {
  return `0x${n.toString(16)}`;
}
