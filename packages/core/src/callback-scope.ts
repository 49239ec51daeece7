import { describeReentry, type Machine, setReentryGuard } from "@hmmkit/mm";

/**
 * What the kernel holds while each callback runs, for the message that refuses a re-entry (see
 * the table in contract.ts). `release` is absent: it runs with nothing held.
 */
export const HELD: Readonly<Record<string, string>> = {
  mirrorPte: "the driver's update lock and the mmap_lock",
  mirrorPmd: "the driver's update lock and the mmap_lock",
  mirrorPtes: "the driver's update lock and the mmap_lock",
  invalidate: "the MMU notifier's locks (inside the memory operation that is changing the page table)",
  copyToDevice: "migrate_vma with the pages locked and the mmap_lock held",
  copyFromDevice: "migrate_vma with the pages locked (inside a CPU fault, eviction or removal)",
  translations: "the driver's update lock (an inspection must not change anything)",
  unbind: "the core's unbind of that address space (the notifier is being removed)",
  translate: "the device's translation hardware (a TLB or page-table lookup cannot wait for the kernel)",
};

/** Whoever runs a guarded driver callback now: it refuses (and records) a re-entry. */
export interface CallbackHolder {
  refuse(op: string): never;
}

/** The driver callback running now on one machine (one simulated thread runs at a time). */
export class CallbackScope {
  running: CallbackHolder | null = null;
}

const scopes = new WeakMap<Machine, CallbackScope>();

/** The callback scope of `machine` (created, with mm's re-entry guard, on first use). */
export function scopeOf(machine: Machine): CallbackScope {
  let s = scopes.get(machine);
  if (s === undefined) {
    const scope = new CallbackScope();
    s = scope;
    scopes.set(machine, scope);
    setReentryGuard(machine, (op, va) => {
      if (scope.running !== null) scope.running.refuse(describeReentry(op, va));
    });
  }
  return s;
}

/**
 * Refuse `op` (a core operation) if a driver callback is running on `machine`: the kernel would
 * deadlock on the locks the callback runs under. The running driver's device fails with an
 * EDEADLK DriverError and `op` throws an HmmError EDEADLK.
 */
export function refuseInsideCallback(machine: Machine, op: string): void {
  scopes.get(machine)?.running?.refuse(op);
}
