import type { Machine, Mm } from "@hmmkit/mm";
import { type DependencyContainer, inject, injectable } from "tsyringe";
import { constructDevice } from "./add-device.js";
import { bindMm, unbindMm } from "./bindings.js";
import { refuseInsideCallback } from "./callback-scope.js";
import { badArgument, checkBoolean, checkInteger, checkMm } from "./check-args.js";
import { Containment } from "./containment.js";
import type { DeviceTranslation, HmmPlugin } from "./contract.js";
import type { CostModel } from "./cost-model.js";
import { Device, type DeviceBinding, type DeviceConfig } from "./device.js";
import { DeviceAccesses } from "./device-access.js";
import { DeviceRun, type DeviceRunOptions, type DeviceRunResult } from "./device-exec.js";
import { DeviceFaultOp, type DeviceFaultResult, deviceFaultSteps, deviceFaultSync } from "./device-fault.js";
import { HmmError } from "./errors.js";
import { countInstalled, evacuate, evictOldest } from "./evacuation.js";
import { makeExclusiveRange } from "./exclusive-access.js";
import { hmmFlagsToProt } from "./flags.js";
import { migrateToRamSteps } from "./migrate-to-ram.js";
import { type MigrateResult, migrateToDeviceSteps } from "./migration.js";
import { checkRange, type MmLike } from "./range.js";
import { runSteps, type Steps } from "./scheduler.js";
import { checkSnapshotSize, type RangeSnapshot, snapshotRange } from "./snapshot.js";
import type { HmmStats } from "./stats.js";
import { TOKENS } from "./tokens.js";

export { TRANSLATIONS_MARGIN } from "./add-device.js";

/** Configuration of the HMM core. */
export interface HmmConfig {
  /** Device memory per device when its config does not say (pages; default 262,144 = 1 GiB). */
  defaultDeviceMemoryPages: number;
  /** Pages evicted at once when a device's memory is full (default 512, one 2 MiB block). */
  evictBatchPages: number;
}

/** What {@link HmmCore.removeDevice} left behind. */
export interface RemoveDeviceResult {
  /**
   * Device frames still held by migrations in flight when the device was removed (0 normally).
   * They are freed when those migrations resume and roll back; the pagemap stays registered
   * until then.
   */
  readonly framesInUse: number;
}

/** Defaults of {@link HmmConfig}. */
export const DEFAULT_HMM_CONFIG: Readonly<HmmConfig> = Object.freeze({
  defaultDeviceMemoryPages: 262_144,
  evictBatchPages: 512,
});

/**
 * The HMM core, in Aneesh Kumar's design: it keeps no mirror page table. It registers devices
 * and their drivers, walks the CPU page table on device faults and calls each driver per PTE
 * (or per huge PMD, or per leaf-table array), forwards MMU notifier invalidations, migrates pages
 * to and from device memory with the drivers' copy callbacks, and contains failing drivers.
 * Every operation has a synchronous form and a step-generator form (`...Steps`) for the
 * deterministic scheduler.
 */
@injectable()
export class HmmCore {
  readonly devices = new Map<string, Device>();
  /** Every device this core added (removed ones included), to refuse other cores' devices. */
  private readonly mine = new WeakSet<Device>();
  private readonly byOwner: (Device | undefined)[] = [];
  private readonly containment: Containment;

  constructor(
    @inject(TOKENS.Machine) readonly machine: Machine,
    @inject(TOKENS.Stats) readonly stats: HmmStats,
    @inject(TOKENS.CostModel) readonly cost: CostModel,
    @inject(TOKENS.Config) readonly config: HmmConfig,
    @inject(TOKENS.Container) private readonly container: DependencyContainer,
  ) {
    this.containment = new Containment(machine, (d) => {
      this.byOwner[d.ownerId] = undefined;
    });
  }

  // ---- registry -----------------------------------------------------------------------------

  /**
   * Attach a device driven by `plugin` (validated here; `source` names where it came from for
   * messages). The driver is constructed in a child container holding the device's context and
   * config. Returns the device. A call that fails leaves no trace: no stats entry, no pagemap
   * registration, no device.
   */
  addDevice(plugin: HmmPlugin | unknown, config: DeviceConfig, source = "<inline>"): Device {
    refuseInsideCallback(this.machine, "addDevice");
    const device = constructDevice(
      {
        machine: this.machine,
        stats: this.stats,
        container: this.container,
        defaultDeviceMemoryPages: this.config.defaultDeviceMemoryPages,
        has: (name) => this.devices.has(name),
        deviceFailed: (d, err) => this.containment.deviceFailed(d, err),
      },
      plugin,
      config,
      source,
    );
    this.devices.set(device.name, device);
    this.stats.devices.set(device.name, device.stats);
    this.byOwner[device.ownerId] = device;
    this.mine.add(device);
    return device;
  }

  /** The device called `name`. */
  device(name: string): Device {
    if (typeof name !== "string") throw badArgument("device", "name", "a device name (a string)", name);
    const d = this.devices.get(name);
    if (d === undefined)
      throw new HmmError(
        "ENODEV",
        `no device named '${name}' (have: ${[...this.devices.keys()].join(", ") || "none"})`,
      );
    return d;
  }

  /** The device with pagemap owner id `owner`, if any. */
  deviceByOwner(owner: number): Device | undefined {
    return this.byOwner[owner];
  }

  /**
   * Remove a device: bring every page it holds home (with its driver's copyFromDevice), drop its
   * notifiers, forget it (memunmap_pages after evicting every chunk, as the kernel test driver's
   * dmirror_device_remove_chunks does), then call `release` (with no lock held; the device is
   * already detached, so operations on it from `release` give ENODEV).
   *
   * If some of its pages cannot come home (system memory is full), nothing is removed: EBUSY
   * names how many, and the device stays attached with its pages (free memory and call again).
   * Frames still held by a migration in flight (paused at a preemption point; it rolls back when
   * it resumes) do not block removal: the result counts them in `framesInUse`, and the device's
   * pagemap stays registered until the last is freed (when that migration ends).
   */
  removeDevice(dev: Device | string): RemoveDeviceResult {
    refuseInsideCallback(this.machine, "removeDevice");
    const d = typeof dev === "string" ? this.device(dev) : this.own("removeDevice", dev);
    if (d.state === "removed") return { framesInUse: d.memory.used };
    evacuate(this.machine, d);
    const stuck = countInstalled(this.machine, d);
    if (stuck > 0) {
      throw new HmmError(
        "EBUSY",
        `removeDevice ${d.name}: ${stuck} of its pages could not be brought home (${this.machine.pool.freeFrames} system frames free); the device stays attached: free system memory and call removeDevice again`,
        "DEVICE_BUSY",
      );
    }
    for (const b of d.bindings.values()) b.notifier.remove();
    d.bindings.clear();
    const wasActive = d.state === "active";
    d.state = "removed";
    this.devices.delete(d.name);
    this.containment.removed(d);
    if (wasActive) d.dispatcher.release();
    return { framesInUse: d.memory.used };
  }

  /** `dev`, if it is a Device of this core (an HmmError EINVAL otherwise). */
  private own(op: string, dev: unknown): Device {
    if (dev instanceof Device && this.mine.has(dev)) return dev;
    if (dev instanceof Device)
      throw new HmmError(
        "EINVAL",
        `${op}: device ${dev.name} belongs to another HmmCore: a device works only with the core that added it`,
        "FOREIGN_OBJECT",
      );
    throw badArgument(op, "dev", "a Device returned by this core's addDevice", dev);
  }

  /** Checks common to the operations on a device and an address space: the core's own objects. */
  private enter(op: string, dev: unknown, mm: unknown): { dev: Device; mm: Mm } {
    refuseInsideCallback(this.machine, op);
    const d = this.own(op, dev);
    const m = checkMm(this.machine, op, mm);
    if (d.state === "removed") throw new HmmError("ENODEV", `${op}: device ${d.name} was removed`);
    return { dev: d, mm: m };
  }

  /** The live address space with id `id` (the `mmId` every callback gets), if any. */
  mmById(id: number): Mm | undefined {
    for (const mm of this.machine.mms) if (mm.id === id) return mm;
    return undefined;
  }

  // ---- bindings and notifiers ----------------------------------------------------------------

  /** The device's interval notifier on `mm` (created on first use, covering all of user space). */
  bind(dev: Device, mmLike: MmLike): DeviceBinding {
    const e = this.enter("bind", dev, mmLike);
    this.requireActive(e.dev);
    return bindMm(this.containment, e.dev, e.mm);
  }

  /**
   * Unbind `dev` from an address space, as the kernel test driver does when its file is closed
   * (mmu_interval_notifier_remove): the interval notifier goes, no invalidation of that mm reaches
   * the driver any more, and the driver's `unbind` is called so it drops its translations of it.
   * The device stays attached: its pages in that mm stay in device memory and still come home on
   * a CPU fault, migrateToRam, eviction or removal (through copyFromDevice). A later device fault,
   * migration or makeExclusive on that mm binds it again. Nothing happens if it is not bound.
   */
  unbind(dev: Device, mmLike: MmLike): void {
    const { dev: d, mm } = this.enter("unbind", dev, mmLike);
    this.reap();
    unbindMm(d, mm);
  }

  // ---- device faults --------------------------------------------------------------------------

  /** A device fault on [start, end) for read or write, run to completion (see deviceFaultSteps). */
  deviceFault(dev: Device, mm: MmLike, start: number, end: number, write: boolean): DeviceFaultResult {
    const op = this.faultOp("deviceFault", dev, mm, start, end, write);
    try {
      return deviceFaultSync(op);
    } finally {
      this.reap();
    }
  }

  /** Step form of {@link deviceFault}, for the scheduler. */
  deviceFaultSteps(
    dev: Device,
    mm: MmLike,
    start: number,
    end: number,
    write: boolean,
  ): Steps<DeviceFaultResult> {
    return this.reapAfter(deviceFaultSteps(this.faultOp("deviceFaultSteps", dev, mm, start, end, write)));
  }

  private faultOp(
    name: string,
    dev: Device,
    mmLike: MmLike,
    start: number,
    end: number,
    write: boolean,
  ): DeviceFaultOp {
    const e = this.enter(name, dev, mmLike);
    checkRange(name, start, end);
    checkBoolean(name, "write", write);
    this.reap();
    this.requireActive(e.dev);
    const b = bindMm(this.containment, e.dev, e.mm);
    return new DeviceFaultOp(e.dev, e.mm, b.notifier, start, end, write, b.reported);
  }

  // ---- the device access path ----------------------------------------------------------------

  /**
   * Run a stream of device accesses on `dev` in address space `mm`, to completion (see
   * runDeviceSteps). Returns what the run did; a device that fails meanwhile ends the run with
   * its remaining accesses cancelled (`deviceFailure`), it does not throw.
   */
  runDevice(
    dev: Device,
    mm: MmLike,
    accesses: DeviceAccesses,
    options: DeviceRunOptions = {},
  ): DeviceRunResult {
    return runSteps(this.runDeviceSteps(dev, mm, accesses, options));
  }

  /**
   * Step form of {@link runDevice}, for the scheduler: the device's hardware runs `accesses` in
   * waves through the driver's `translate`, its misses go through the fault buffer to
   * `handleFaults` in batches of the device's `faultBuffer` entries, and every access completes
   * against the frame it translates to (system memory remotely, or device memory). Preemption
   * points after each fault batch, before each replay and after each wave. Needs a driver with
   * `translate` (EOPNOTSUPP otherwise). The device is bound to `mm` first.
   */
  runDeviceSteps(
    dev: Device,
    mmLike: MmLike,
    accesses: DeviceAccesses,
    options: DeviceRunOptions = {},
  ): Steps<DeviceRunResult> {
    const op = "runDevice";
    const e = this.enter(op, dev, mmLike);
    if (!(accesses instanceof DeviceAccesses))
      throw badArgument(op, "accesses", "a DeviceAccesses stream", accesses);
    if (typeof options !== "object" || options === null)
      throw badArgument(op, "options", "an options object ({ wave, verifyTranslations })", options);
    for (const k of Object.keys(options))
      if (k !== "wave" && k !== "verifyTranslations")
        throw new HmmError(
          "EINVAL",
          `${op}: unknown option '${k}' (known: wave, verifyTranslations)`,
          "BAD_CONFIG",
        );
    if (options.wave !== undefined) checkInteger(op, "options.wave", options.wave, 1, 2 ** 31);
    if (options.verifyTranslations !== undefined)
      checkBoolean(op, "options.verifyTranslations", options.verifyTranslations);
    this.reap();
    this.requireActive(e.dev);
    if (typeof e.dev.driver.translate !== "function")
      throw new HmmError(
        "EOPNOTSUPP",
        `${op}: the driver of ${e.dev} has no translate callback, so its device cannot execute accesses (it only mirrors what deviceFault reports); implement HmmDriver.translate`,
        "NO_TRANSLATE",
      );
    bindMm(this.containment, e.dev, e.mm);
    const service = {
      deviceFaultSteps: (d: Device, m: Mm, s: number, en: number, w: boolean) =>
        this.deviceFaultSteps(d, m, s, en, w),
    };
    return this.reapAfter(new DeviceRun(e.dev, e.mm, accesses, service, options).steps());
  }

  // ---- snapshot -------------------------------------------------------------------------------

  /**
   * The CPU page table of [start, end) as `dev` sees it, without faulting (see snapshotRange). At
   * most SNAPSHOT_MAX_PAGES pages per call.
   */
  snapshot(dev: Device, mm: MmLike, start: number, end: number): RangeSnapshot {
    return this.snapshotOp("snapshot", dev, mm, start, end);
  }

  /** The snapshot encoded as the kernel test driver's HMM_DMIRROR_PROT_* bytes. */
  snapshotProt(dev: Device, mm: MmLike, start: number, end: number): Uint8Array {
    const s = this.snapshotOp("snapshotProt", dev, mm, start, end);
    const out = new Uint8Array(s.flags.length);
    for (let i = 0; i < out.length; i++) out[i] = hmmFlagsToProt(s.flags[i]);
    return out;
  }

  private snapshotOp(name: string, dev: Device, mmLike: MmLike, start: number, end: number): RangeSnapshot {
    const e = this.enter(name, dev, mmLike);
    checkRange(name, start, end);
    checkSnapshotSize(name, start, end);
    // dmirror_snapshot: mmget_not_zero fails on an address space that has exited.
    if (e.mm.exited) throw new HmmError("EFAULT", `${name}: address space ${e.mm.id} has exited`);
    this.reap();
    e.dev.stats.snapshots++;
    return snapshotRange(e.mm, e.dev.ownerId, start, end);
  }

  // ---- exclusive access ----------------------------------------------------------------------

  /**
   * Give `dev` exclusive access to every page of [start, end) (make_device_exclusive per page) and
   * report each to the driver with VALID|WRITE|EXCLUSIVE. The CPU's next access to a page
   * restores it and sends an EXCLUSIVE invalidation. Returns the pages made exclusive. Errors are
   * those of make_device_exclusive (EFAULT for no VMA, PROT_NONE or a read-only mapping;
   * EOPNOTSUPP for memory that is not private anonymous) and come at the page that has them: the
   * pages before it stay exclusive and reported, as lib/test_hmm.c's dmirror_exclusive maps each
   * page as it goes.
   */
  makeExclusive(dev: Device, mmLike: MmLike, start: number, end: number): number {
    const e = this.enter("makeExclusive", dev, mmLike);
    checkRange("makeExclusive", start, end);
    this.reap();
    this.requireActive(e.dev);
    const mm = e.mm;
    const d = e.dev;
    if (mm.exited) throw new HmmError("EFAULT", `make exclusive: address space ${mm.id} has exited`);
    const reported = bindMm(this.containment, d, mm).reported;
    try {
      return makeExclusiveRange(d, mm, reported, start, end);
    } finally {
      this.reap();
    }
  }

  // ---- migration ------------------------------------------------------------------------------

  /** Migrate [start, end) to `dev`'s memory (see migrateToDeviceSteps). */
  migrateToDevice(dev: Device, mm: MmLike, start: number, end: number): MigrateResult {
    return runSteps(this.migrateToDeviceOp("migrateToDevice", dev, mm, start, end));
  }

  /** Step form of {@link migrateToDevice}. */
  migrateToDeviceSteps(dev: Device, mmLike: MmLike, start: number, end: number): Steps<MigrateResult> {
    return this.migrateToDeviceOp("migrateToDeviceSteps", dev, mmLike, start, end);
  }

  private migrateToDeviceOp(
    name: string,
    dev: Device,
    mmLike: MmLike,
    start: number,
    end: number,
  ): Steps<MigrateResult> {
    const e = this.enter(name, dev, mmLike);
    checkRange(name, start, end);
    this.reap();
    this.requireActive(e.dev);
    bindMm(this.containment, e.dev, e.mm);
    return this.reapAfter(
      migrateToDeviceSteps(
        // A device smaller than one eviction batch evicts all it has (evict refuses more than npages).
        { evictFor: (d) => this.evict(d, Math.min(this.config.evictBatchPages, d.memory.npages)) > 0 },
        e.dev,
        e.mm,
        start,
        end,
      ),
    );
  }

  /** Bring `dev`'s pages in [start, end) back to system memory. */
  migrateToRam(dev: Device, mm: MmLike, start: number, end: number): MigrateResult {
    return runSteps(this.migrateToRamOp("migrateToRam", dev, mm, start, end));
  }

  /** Step form of {@link migrateToRam}. */
  migrateToRamSteps(dev: Device, mmLike: MmLike, start: number, end: number): Steps<MigrateResult> {
    return this.migrateToRamOp("migrateToRamSteps", dev, mmLike, start, end);
  }

  private migrateToRamOp(
    name: string,
    dev: Device,
    mmLike: MmLike,
    start: number,
    end: number,
  ): Steps<MigrateResult> {
    const e = this.enter(name, dev, mmLike);
    checkRange(name, start, end);
    this.reap();
    return this.reapAfter(migrateToRamSteps(e.dev, e.mm, start, end));
  }

  /**
   * Evict `dev`'s oldest folios to system memory until at least `npages` pages moved (an order-9
   * folio counts 512 and goes home whole, as a THP where one can be allocated); returns how many
   * moved.
   */
  evict(dev: Device, npages: number): number {
    refuseInsideCallback(this.machine, "evict");
    const d = this.own("evict", dev);
    if (d.state === "removed") throw new HmmError("ENODEV", `evict: device ${d.name} was removed`);
    checkInteger("evict", "npages", npages, 0, d.memory.npages);
    return evictOldest(this.machine, d, npages);
  }

  /** `steps`, with the failed devices reaped when it ends (returns or throws). */
  private *reapAfter<T>(steps: Steps<T>): Steps<T> {
    try {
      return yield* steps;
    } finally {
      this.reap();
    }
  }

  // ---- fault containment ----------------------------------------------------------------------

  /**
   * Finish detaching failed devices: bring their pages home with the core's own copy, drop their
   * notifiers. Runs as soon as the failure is seen, or, for a failure inside an invalidation, when
   * the memory operation that sent it has finished; every core operation also starts and ends
   * with it. A device leaves the queue only once it is fully detached.
   */
  reap(): void {
    this.containment.reap();
  }

  private requireActive(dev: Device): void {
    if (dev.state === "failed") throw dev.failure!;
    if (dev.state === "removed") throw new HmmError("ENODEV", `device ${dev.name} was removed`);
  }

  // ---- inspection -----------------------------------------------------------------------------

  /** The translations `dev`'s driver holds now (see translationLimit). */
  translations(dev: Device): DeviceTranslation[] {
    refuseInsideCallback(this.machine, "translations");
    return this.own("translations", dev).dispatcher.translations();
  }
}
