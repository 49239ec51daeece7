import { hex } from "./constants.js";
import type { MachineState as Machine } from "./types.js";

/**
 * A check run at the entry of every memory syscall (mmap, munmap, mremap, mprotect, madvise,
 * fork, exit) and every CPU fault (Process.accessPage) on any address space of a machine. It throws to refuse the entry. The HMM
 * core installs one while a device driver callback runs: the kernel runs those callbacks under
 * the driver's lock with the mmap_lock or the notifier's locks held, so a syscall or a fault from
 * inside one would deadlock there. Nothing is installed otherwise.
 */
export type ReentryGuard = (op: string) => void;

const guards = new WeakMap<Machine, ReentryGuard>();

/** Install `guard` for `machine` (null removes it). */
export function setReentryGuard(machine: Machine, guard: ReentryGuard | null): void {
  if (guard === null) guards.delete(machine);
  else guards.set(machine, guard);
}

/** @internal Run the machine's guard for `op`, if one is installed. */
export function checkReentry(machine: Machine, op: string): void {
  const g = guards.get(machine);
  if (g !== undefined) g(op);
}

/**
 * @internal checkReentry for one CPU fault at `va`, run once per fault: the description is built
 * only when the machine has a guard, so a machine without one pays a map lookup and no string.
 */
export function checkFaultReentry(machine: Machine, write: boolean, va: number): void {
  const g = guards.get(machine);
  if (g !== undefined) g(`a CPU ${write ? "write" : "read"} fault at ${hex(va)}`);
}
