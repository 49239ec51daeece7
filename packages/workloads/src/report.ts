import type { CostBreakdown } from "@hmmkit/core";
import type { ContentMode, MmStatsSnapshot } from "@hmmkit/mm";
import type { WorkloadKind } from "./kind-table.js";
import type { DataMismatch } from "./oracle.js";

/** An access the device cancelled (a fatal fault, or left over when the device failed). */
export interface CancelledAccess {
  readonly phase: number;
  readonly phaseName: string;
  readonly process: "parent" | "child";
  /** Index in the phase's stream. */
  readonly index: number;
  readonly va: number;
  readonly address: string;
  readonly kind: "read" | "write" | "atomic";
  /** EFAULT, EPERM, ENOMEM, EIO, or ENODEV when the device failed. */
  readonly errno: string;
}

/** Why a run stopped before its last phase. */
export interface RunFailure {
  /** `device`: the driver failed (the core detached it); `cpu`: a CPU thread's access or operation threw. */
  readonly source: "device" | "cpu";
  readonly message: string;
  /** The error's stable code (DRIVER_FAILED, DRIVER_STALE, DRIVER_STUCK, SEGV, ...). */
  readonly code: string;
  readonly errno: string;
  /** The phase it happened in. */
  readonly phase: number;
  readonly phaseName: string;
}

/** What {@link runWorkload} returns. */
export interface WorkloadReport {
  /** The normalized spec (every key, defaults included). */
  readonly spec: string;
  readonly kind: WorkloadKind;
  readonly seed: number;
  /** The plugin's name (`gpu`, `iotlb`) and the device's. */
  readonly driver: string;
  readonly device: string;
  /** The machine the run used. */
  readonly machine: { readonly memoryBytes: number; readonly contentMode: ContentMode };
  /** Phases run (all of them unless `failure`). */
  readonly phases: number;
  /** Pages of the workload's buffers (per process). */
  readonly pages: number;
  /** The device's counters (DeviceStats, same names for every driver) at the end of the last phase. */
  readonly deviceStats: Readonly<Record<string, number>>;
  /** The machine's counters (MmStats) and the CPU threads' page faults, at the same point. */
  readonly cpuStats: Readonly<MmStatsSnapshot & { minorFaults: number }>;
  /** Simulated time of the device's counted events (the core's CostModel), in ns, with its terms. */
  readonly simulatedNs: number;
  readonly simulatedTerms: CostBreakdown["terms"];
  /** Wall time of the phases, in ms (setup, the final checks and teardown excluded). */
  readonly wallMs: number;
  /**
   * contentDigest of the final memory, taken after the last phase, before any process exits;
   * for a fork the parent's and the child's joined with "+". The same spec and seed give the same
   * digest on every correct driver, in both content modes.
   */
  readonly digest: string;
  readonly checks: {
    /** Every device read, every CPU read, and the final sweep, compared with the shadow. */
    readonly data: {
      readonly checked: number;
      readonly mismatches: number;
      readonly first: readonly DataMismatch[];
    };
    /** Translations against the CPU page table at each phase end (or once, per `coherence`). */
    readonly coherence: {
      readonly checks: number;
      readonly pages: number;
      readonly violations: number;
      readonly first: readonly string[];
    };
    /** Frames in use after every process exited and the device was removed (both 0 when nothing leaked). */
    readonly leaks: { readonly frames: number; readonly deviceFrames: number };
  };
  /** Cancelled device accesses: how many, and the first ones. */
  readonly errors: { readonly cancelled: number; readonly first: readonly CancelledAccess[] };
  /** Set when the run stopped early (a device failure, or a CPU thread error). */
  readonly failure: RunFailure | null;
  /** No failure, no cancelled access, no mismatch, no coherence violation, no leak. */
  readonly ok: boolean;
}
