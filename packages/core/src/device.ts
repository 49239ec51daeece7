import type { Machine, Mm, MmuIntervalNotifier } from "@hmmkit/mm";
import type { CallbackMode, HmmDriver, HmmPlugin } from "./contract.js";
import type { DeviceMemory } from "./device-memory.js";
import type { DriverDispatcher } from "./dispatcher.js";
import { type DriverError, HmmError } from "./errors.js";
import type { PmdSet } from "./pmd-set.js";
import type { DeviceStats } from "./stats.js";

/**
 * Configuration of one device, validated strictly at addDevice (code BAD_CONFIG). Keys other than
 * the core's own must be declared by the plugin (`HmmPlugin.configKeys`); they are passed to the
 * driver untouched. Any other key is refused, with a "did you mean" for a near miss.
 */
export interface DeviceConfig {
  /** Device name, unique per core (`gpu0`). */
  name: string;
  /** Device memory in 4 KiB pages (default 262,144 = 1 GiB). */
  memoryPages?: number;
  /** Which callback form to use: `auto` (per-PTE if the driver has it, else array), `per-pte` or `array`. */
  callbackMode?: "auto" | CallbackMode;
  /** Give whole PMDs to `mirrorPmd` when the driver has it (default true). */
  pmdCallback?: boolean;
  /** When device memory is full during a migration, evict the oldest pages to RAM (default true). */
  evictOnPressure?: boolean;
  /**
   * The device can hold order-9 (2 MiB) folios, as a driver passing MIGRATE_VMA_SELECT_COMPOUND
   * (default false). Migration to the device then moves a whole PMD-mapped THP, or a 2 MiB hole or
   * huge zero page of an anonymous VMA, as one device-private PMD backed by 512 contiguous,
   * 512-aligned device frames, falling back to base pages when no such block is free; such a PMD
   * comes home as a THP. Without it every THP is split and migrated page by page.
   */
  compoundMigration?: boolean;
  /**
   * Entries of the device's fault buffer: how many faults one batch hands to the driver's
   * `handleFaults` at most (default 256, UVM's uvm_perf_fault_batch_count).
   */
  faultBuffer?: number;
  /** Driver-specific settings. */
  [key: string]: unknown;
}

/** Lifecycle of a device. */
export type DeviceState = "active" | "failed" | "removed";

/**
 * Copy engine a driver uses in its copy callbacks: moves page contents between system frames and
 * this device's frames. It runs only inside copyToDevice / copyFromDevice and only on the frames
 * that callback was given (pfns are checked: integers, in range, those of the copy); anything
 * else throws and fails the device (DriverError, code DRIVER_DMA). See contract.ts.
 */
export interface DeviceDma {
  /** Copy system frame `spfn` into device frame `dpfn`. */
  systemToDevice(spfn: number, dpfn: number): void;
  /** Copy device frame `dpfn` into system frame `spfn`. */
  deviceToSystem(dpfn: number, spfn: number): void;
  /** Fill device frame `dpfn` with zeros. */
  zeroDevicePage(dpfn: number): void;
}

/** What a driver is given (inject it with `@inject(TOKENS.DeviceContext)`). */
export interface DeviceContext {
  /** The device's name. */
  readonly name: string;
  /** The device's owner id: device-private entries and MIGRATE/EXCLUSIVE events carry it. */
  readonly ownerId: number;
  /** The simulated machine. */
  readonly machine: Machine;
  /** The device's memory (frames, refcounts, contents). */
  readonly memory: DeviceMemory;
  /** The copy engine. */
  readonly dma: DeviceDma;
  /** This device's counters. */
  readonly stats: DeviceStats;
  /** The device's configuration. */
  readonly config: Readonly<DeviceConfig>;
}

/** A device's link to one address space: the interval notifier covering all of it. */
export interface DeviceBinding {
  readonly mm: Mm;
  readonly notifier: MmuIntervalNotifier;
  /**
   * PMD indices (va / 2 MiB) of the regions the core reported pages of to this device in `mm`:
   * what invalidation counts are bounded by (per region, never per page).
   */
  readonly reported: PmdSet;
}

/** A device attached to the HMM core. */
export class Device {
  state: DeviceState = "active";
  /** The error that failed the device, if it failed. */
  failure: DriverError | null = null;
  readonly bindings = new Map<number, DeviceBinding>();
  /** True while the device's fault handler services a batch of its access path (HmmCore.runDevice). */
  servicingBatch = false;
  private allocFailures = 0;

  constructor(
    readonly name: string,
    readonly ownerId: number,
    readonly plugin: HmmPlugin,
    readonly config: Readonly<DeviceConfig>,
    readonly memory: DeviceMemory,
    readonly stats: DeviceStats,
    readonly context: DeviceContext,
    readonly dispatcher: DriverDispatcher,
  ) {}

  /** The callback form the core uses for this device. */
  get callbackMode(): CallbackMode {
    return this.dispatcher.mode;
  }

  /** Whether whole PMDs are reported through `mirrorPmd`. */
  get usesPmdCallback(): boolean {
    return this.dispatcher.pmdCallback;
  }

  /** The driver instance the core built for this device (through DI). */
  get driver(): HmmDriver {
    return this.dispatcher.driver;
  }

  /**
   * Make the next `count` page allocations of this device's migrations fail (default 1), then
   * succeed again, as the kernel test driver's HMM_DMIRROR_FLAG_FAIL_ALLOC (a self-clearing
   * flag) does: a device frame in migrateToDevice, a system frame in migrateToRam. The page
   * stays where it is and counts in `MigrateResult.allocFailed`; no eviction is tried for it.
   */
  failNextAlloc(count = 1): void {
    if (!Number.isInteger(count) || count < 0)
      throw new HmmError(
        "EINVAL",
        `device ${this.name}: failNextAlloc count must be a non-negative integer, got ${count}`,
      );
    this.allocFailures = count;
  }

  /** Consume one injected allocation failure; true if there was one. */
  takeAllocFailure(): boolean {
    if (this.allocFailures === 0) return false;
    this.allocFailures--;
    return true;
  }

  toString(): string {
    return `${this.name} (${this.plugin.name})`;
  }
}
