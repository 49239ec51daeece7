/**
 * The contract of a `shared-mirror` driver: HMM v12's `struct hmm_device_ops` plus the device
 * hardware hooks every hmmkit driver has (translate, handleFaults, translations). HMM keeps the
 * mirror page table (`hmm_pt`, one per mirror: per device and address space); the driver asks
 * HMM to fault ranges (`HmmMirror.fault`, hmm_mirror_fault), reads hmm_pt entries through an
 * iterator (`HmmMirror.iter()`), and programs its own device page table from them. It never
 * receives per-PTE callbacks.
 *
 * Calls and locks, as in the core's contract (packages/core/src/contract.ts): `update` for an
 * invalidation runs inside the memory operation (no mm syscalls, no core operations, no
 * `HmmMirror.fault`); `update` for a device fault event runs inside `HmmMirror.fault`; copies run
 * inside migrations; `handleFaults` runs with nothing held (it calls `HmmMirror.fault` and core
 * operations on its own device); `translate` is the hardware (pure table lookup).
 */
import type { DeviceFaultBatch, DeviceTranslation } from "@hmmkit/core";
import type { HmmEtype } from "./etype.js";
import type { HmmMirror } from "./mirror.js";

/** The version of this contract (semver); plugins declare the version they target. */
export const LEGACY_API_VERSION = "12.0.0";

/**
 * struct hmm_event: what `update` is told. For an invalidation, the range of the change and the
 * v12 event type; for a device fault (HMM_DEVICE_RFAULT / HMM_DEVICE_WFAULT), the range whose
 * hmm_pt entries the fault just filled, to program into the device.
 */
export interface HmmEvent {
  /** First address (inclusive, page aligned). */
  readonly start: number;
  /** Last address (exclusive). */
  readonly end: number;
  /** Why. */
  readonly etype: HmmEtype;
}

/** A shared-mirror driver (v12's hmm_device_ops and the device's hardware). */
export interface SharedMirrorDriver {
  /**
   * hmm_device_ops.update: the range of `mirror` changes (an invalidation: drop or write-protect
   * what the device maps there before returning; HMM clears its hmm_pt entries after the call, so
   * they can still be read here, and the dirty bit may be set on them), or a device fault filled
   * hmm_pt entries (program them into the device). Return 0, or -ENOMEM / -EIO: a failed
   * invalidation update kills the mirror (hmm_mirror_kill: everything unmapped, later faults
   * -ENODEV); a failed fault update is returned by the fault. The range may be huge (exit
   * invalidates all of user space): clip it to what the device maps.
   */
  update(mirror: HmmMirror, event: HmmEvent): number;

  /**
   * Migration to device memory (v12's copy_to_device): copy system frame `spfn` (or zero-fill
   * when -1) into device frame `dpfn` with `DeviceContext.dma`, for page `va` of address space
   * `mmId`. HMM records the device address in hmm_pt when the migration reports the page.
   */
  copyToDevice(mmId: number, va: number, spfn: number, dpfn: number): void;

  /**
   * Migration back to system memory (v12's copy_from_device): HMM looked the page's device
   * address up in hmm_pt; copy device frame `dpfn` into system frame `spfn`.
   */
  copyFromDevice(mmId: number, va: number, dpfn: number, spfn: number): void;

  /**
   * The device hardware translating page `va` of `mmId` (see HmmDriver.translate): a system pfn,
   * deviceFrameResult(dpfn), or TRANSLATE_MISS. No allocation, no core calls.
   */
  translate(mmId: number, va: number, write: boolean): number;

  /**
   * The device's fault handler (see HmmDriver.handleFaults): fault ranges with
   * `HmmMirror.fault` / `faultSteps` (the mirror of `batch.mmId[i]`: `SharedMirror.mirror(mmId)`),
   * cancel what fails. Optional: without it each distinct page is faulted on its own.
   */
  handleFaults?(batch: DeviceFaultBatch): void | Generator<string, void, void>;

  /** Every translation the device holds now (coherence checks). */
  translations(): Iterable<DeviceTranslation>;

  /** hmm_device_ops.release: the device is going away. Optional. */
  release?(): void;
}

/** A driver class, built through dependency injection (see LEGACY_TOKENS). */
export type SharedMirrorDriverClass = new (...args: never[]) => SharedMirrorDriver;

/** What a shared-mirror driver package exports (as `default` or `plugin`). */
export interface SharedMirrorPlugin {
  /** Short name (`legacy`). */
  readonly name: string;
  /** The contract version it targets (semver range of LEGACY_API_VERSION, e.g. "^12.0.0"). */
  readonly apiVersion: string;
  /** Always "shared-mirror". */
  readonly design: "shared-mirror";
  /** The driver class; constructor parameters need `@inject(TOKEN)`. */
  readonly driver: SharedMirrorDriverClass;
  /** One-line description. */
  readonly description?: string;
  /** Device config keys the driver reads besides the core's own. */
  readonly configKeys?: readonly string[];
}
