import { hex } from "./constants.js";
import type { MachineState as Machine } from "./types.js";

/**
 * A check run at the entry of every memory syscall (mmap, munmap, mremap, mprotect, madvise,
 * fork, exit) and every CPU fault (Process.accessPage) on any address space of a machine. It throws to refuse the entry. The HMM
 * core installs one while a device driver callback runs: the kernel runs those callbacks under
 * the driver's lock with the mmap_lock or the notifier's locks held, so a syscall or a fault from
 * inside one would deadlock there. Nothing is installed otherwise. For a CPU fault `op` names the
 * fault and `va` its address; a guard that refuses says `${op} at ${hex(va)}`, a guard that lets
 * it pass builds no string.
 */
export type ReentryGuard = (op: string, va?: number) => void;

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
 * @internal checkReentry for one CPU fault at `va`, run once per fault: a machine without a guard
 * pays one comparison, one with a guard a map lookup and a call; no string is built unless the
 * guard refuses.
 */
export function checkFaultReentry(machine: Machine, write: boolean, va: number): void {
  if (installed === 0) return;
  const g = guards.get(machine);
  if (g !== undefined) g(write ? "a CPU write fault" : "a CPU read fault", va);
}

/** The operation a guard refuses, with the fault's address when it has one. */
export function describeReentry(op: string, va?: number): string {
  return va === undefined ? op : `${op} at ${hex(va)}`;
}
