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
/** Machines with a guard: while 0, a fault path asks no map at all. */
let installed = 0;

/** Install `guard` for `machine` (null removes it). */
export function setReentryGuard(machine: Machine, guard: ReentryGuard | null): void {
  const had = guards.has(machine);
  if (guard === null) guards.delete(machine);
  else guards.set(machine, guard);
  installed += (guard !== null ? 1 : 0) - (had ? 1 : 0);
}

/** @internal True if `machine` has a guard installed. */
export function hasReentryGuard(machine: Machine): boolean {
  return installed !== 0 && guards.has(machine);
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
  if (installed === 0) return;
  const g = guards.get(machine);
  if (g !== undefined) g(`a CPU ${write ? "write" : "read"} fault at ${hex(va)}`);
}
