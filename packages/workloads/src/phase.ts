import { DEVICE_ATOMIC, DEVICE_READ, DEVICE_WRITE } from "@hmmkit/core";
import type { Process } from "@hmmkit/mm";
import type { CpuScript } from "./cpu-script.js";
import type { DeviceStream } from "./device-stream.js";
import {
  type Region,
  USE_CPU_READ,
  USE_CPU_WRITE,
  USE_DEVICE_ATOMIC,
  USE_DEVICE_READ,
  USE_DEVICE_WRITE,
} from "./region.js";
import { stampFor } from "./seeded.js";

/** Agents, as stamps name them: the parent's CPU thread, the device, the child's CPU thread. */
export const AGENT_CPU = 0;
export const AGENT_DEVICE = 1;
export const AGENT_CHILD = 2;

/** Where a phase's work goes: one device stream and one CPU script per process. */
export interface PhaseSink {
  readonly seed: number;
  /** Index of `proc` in the run (0 the parent, 1 the child). */
  procIndex(proc: Process): number;
  stream(procIndex: number): DeviceStream;
  script(procIndex: number): CpuScript;
}

/**
 * What a workload generator describes one phase with: device accesses and CPU work on regions,
 * each checked against the phase rule as it is added (PhaseRuleError for a page one agent writes
 * and another touches). Stamps are derived from (seed, phase, region, page, agent), so the same
 * spec and seed write the same values whatever the interleaving.
 */
export class PhaseBuilder {
  constructor(
    private readonly sink: PhaseSink,
    /** The phase's name (in reports and rule errors). */
    readonly name: string,
    /** The phase's index in the run. */
    readonly index: number,
  ) {}

  /** The device reads page `page` of `r`; the oracle checks what it saw. */
  deviceRead(r: Region, page: number): void {
    r.mark(page, USE_DEVICE_READ, this.name);
    this.sink.stream(this.sink.procIndex(r.proc)).push(r, page, DEVICE_READ, 0);
  }

  /** The device writes page `page` of `r` with the phase's device stamp for it. */
  deviceWrite(r: Region, page: number): void {
    r.mark(page, USE_DEVICE_WRITE, this.name);
    const stamp = stampFor(this.sink.seed, this.index, r.id, page, AGENT_DEVICE);
    this.sink.stream(this.sink.procIndex(r.proc)).push(r, page, DEVICE_WRITE, stamp);
  }

  /** The device does an atomic on page `page` of `r`: checked like a read, stored like a write. */
  deviceAtomic(r: Region, page: number): void {
    r.mark(page, USE_DEVICE_ATOMIC, this.name);
    const stamp = stampFor(this.sink.seed, this.index, r.id, page, AGENT_DEVICE);
    this.sink.stream(this.sink.procIndex(r.proc)).push(r, page, DEVICE_ATOMIC, stamp);
  }

  /** The CPU thread of `r`'s process reads page `page` of `r`; the oracle checks it. */
  cpuRead(r: Region, page: number): void {
    r.mark(page, USE_CPU_READ, this.name);
    this.sink.script(this.sink.procIndex(r.proc)).read(r, page);
  }

  /** The CPU thread of `r`'s process writes page `page` of `r`. */
  cpuWrite(r: Region, page: number): void {
    r.mark(page, USE_CPU_WRITE, this.name);
    const k = this.sink.procIndex(r.proc);
    const stamp = stampFor(this.sink.seed, this.index, r.id, page, k === 0 ? AGENT_CPU : AGENT_CHILD);
    this.sink.script(k).write(r, page, stamp);
  }

  /**
   * A CPU operation of `proc`'s thread, taking its mmap_lock for `lock`. `run` does the syscall
   * and brings the shadow up to date. `changes` are the pages whose mapping it changes: marked as
   * CPU writes (no device access to them in this phase), or as CPU reads for a change that keeps
   * them readable (mprotect read-only: the device may still read them, never write).
   */
  cpuOp(
    proc: Process,
    label: string,
    lock: "read" | "write",
    run: () => void,
    changes?: { region: Region; first: number; count: number; keepsReadable?: boolean },
  ): void {
    if (changes !== undefined)
      changes.region.markRange(
        changes.first,
        changes.count,
        changes.keepsReadable ? USE_CPU_READ : USE_CPU_WRITE,
        this.name,
      );
    this.sink.script(this.sink.procIndex(proc)).op({ label, run, lock });
  }
}
