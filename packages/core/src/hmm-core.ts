import {
  HPAGE_PMD_SIZE,
  type Machine,
  type Mm,
  type MmuIntervalNotifier,
  type MmuNotifierRange,
  MmuNotifyEvent,
  makeDeviceExclusive,
  PAGE_SIZE,
  TASK_SIZE,
} from "@hmmkit/mm";
import { type DependencyContainer, inject, injectable } from "tsyringe";
import { badArgument, checkBoolean, checkInteger, checkMm } from "./check-args.js";
import type { DeviceTranslation, HmmDriver, HmmPlugin } from "./contract.js";
import type { CostModel } from "./cost-model.js";
import {
  Device,
  type DeviceBinding,
  type DeviceConfig,
  type DeviceContext,
  type DeviceDma,
} from "./device.js";
import { DeviceFaultOp, type DeviceFaultResult, deviceFaultSteps, deviceFaultSync } from "./device-fault.js";
import { DeviceMemory } from "./device-memory.js";
import { findDeviceFolio } from "./device-rmap.js";
import { type CallbackMode, DriverDispatcher, refuseInsideCallback } from "./dispatcher.js";
import { type DriverError, describeThrown, HmmError } from "./errors.js";
import { HMM_PFN_EXCLUSIVE, HMM_PFN_VALID, HMM_PFN_WRITE, hmmFlagsToProt } from "./flags.js";
import { countInvalidatedPages } from "./invalidate-count.js";
import {
  type MigrateResult,
  migrateBack,
  migrateOnCpuFault,
  migrateToDeviceSteps,
  migrateToRamSteps,
} from "./migration.js";
import { parseDeviceConfig } from "./options.js";
import { validatePlugin } from "./plugin.js";
import { checkRange, type MmLike } from "./range.js";
import { runSteps, type Steps } from "./scheduler.js";
import { checkSnapshotSize, type RangeSnapshot, snapshotRange } from "./snapshot.js";
import { DeviceStats, type HmmStats } from "./stats.js";
import { TOKENS } from "./tokens.js";

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
/** Translations a driver may report beyond one per mapped page (see HmmCore.translations). */
export const TRANSLATIONS_MARGIN = 1024;

@injectable()
export class HmmCore {
  readonly devices = new Map<string, Device>();
  /** Every device this core added (removed ones included), to refuse other cores' devices. */
  private readonly mine = new WeakSet<Device>();
  private readonly byOwner: (Device | undefined)[] = [];
  private readonly reapQueue: Device[] = [];
  private readonly pendingUnregister: Device[] = [];
  private notifierDepth = 0;
  private reaping = false;

  constructor(
    @inject(TOKENS.Machine) readonly machine: Machine,
    @inject(TOKENS.Stats) readonly stats: HmmStats,
    @inject(TOKENS.CostModel) readonly cost: CostModel,
    @inject(TOKENS.Config) readonly config: HmmConfig,
    @inject(TOKENS.Container) private readonly container: DependencyContainer,
  ) {}

  // ---- registry -----------------------------------------------------------------------------

  /**
   * Attach a device driven by `plugin` (validated here; `source` names where it came from for
   * messages). The driver is constructed in a child container holding the device's context and
   * config. Returns the device. A call that fails leaves no trace: no stats entry, no pagemap
   * registration, no device.
   */
  addDevice(plugin: HmmPlugin | unknown, config: DeviceConfig, source = "<inline>"): Device {
    refuseInsideCallback(this.machine, "addDevice");
    const p = validatePlugin(plugin, source);
    if (p.design !== "per-pte") {
      throw new HmmError(
        "EINVAL",
        `plugin '${p.name}' (${source}) uses the ${p.design} design, which reads HMM's shared mirror: attach it through the legacy layer (@hmmkit/legacy), not HmmCore.addDevice`,
        "PLUGIN_INVALID",
      );
    }
    const own = parseDeviceConfig(config, p);
    const name = own.name;
    if (this.devices.has(name))
      throw new HmmError("EEXIST", `a device named '${name}' already exists`, "BAD_CONFIG");
    const want = own.callbackMode ?? "auto";
    const proto = p.driver.prototype as unknown as Record<string, unknown>;
    const hasPte = typeof proto.mirrorPte === "function";
    const hasArray = typeof proto.mirrorPtes === "function";
    const mode: CallbackMode = want === "array" || (want === "auto" && !hasPte) ? "array" : "per-pte";
    if ((mode === "array" && !hasArray) || (mode === "per-pte" && !hasPte)) {
      throw new HmmError(
        "EINVAL",
        `device ${name}: callbackMode '${want}' but plugin '${p.name}' does not implement it`,
        "BAD_CONFIG",
      );
    }
    const npages = own.memoryPages ?? this.config.defaultDeviceMemoryPages;
    const memory = new DeviceMemory(npages, this.machine.config.contentMode);
    // Counters are cumulative per name: a device re-added under a removed one's name continues them.
    const stats = this.stats.devices.get(name) ?? new DeviceStats();
    const machine = this.machine;
    const frames = machine.pool.nframes;
    let device: Device | undefined;
    // Until the device exists no copy callback runs, so no DMA is allowed.
    const gate = (): DriverDispatcher => {
      if (device === undefined)
        throw new HmmError(
          "EIO",
          `device ${name}: DMA outside a copy callback (the device is not attached yet)`,
          "DRIVER_DMA",
        );
      return device.dispatcher;
    };
    const dma: DeviceDma = {
      systemToDevice: (spfn, dpfn) => {
        gate().checkDma("systemToDevice", spfn, dpfn, frames, npages);
        machine.pool.content.copyTo(spfn, memory.content, dpfn);
      },
      deviceToSystem: (dpfn, spfn) => {
        gate().checkDma("deviceToSystem", spfn, dpfn, frames, npages);
        memory.content.copyTo(dpfn, machine.pool.content, spfn);
      },
      zeroDevicePage: (dpfn) => {
        gate().checkDma("zeroDevicePage", -1, dpfn, frames, npages);
        memory.content.zero(dpfn);
      },
    };
    const ownerId = machine.registerDevicePagemap({
      name,
      migrateToRam: (mm, _vma, va, dpfn) => migrateOnCpuFault(device!, mm, va, dpfn),
      pageGet: (dpfn, nr) => memory.get(dpfn, nr),
      pagePut: (dpfn) => memory.put(dpfn),
      folioRefs: (dpfn) => memory.folioRefs(dpfn),
      folioSplit: (dpfn) => memory.splitFolio(dpfn),
      pageHash: (dpfn) => memory.content.hash(dpfn),
    });
    try {
      const frozen = Object.freeze({ ...config });
      const context: DeviceContext = { name, ownerId, machine, memory, dma, stats, config: frozen };
      const child = this.container.createChildContainer();
      child.register(TOKENS.DeviceContext, { useValue: context });
      child.register(TOKENS.DeviceConfig, { useValue: frozen });
      let driver: HmmDriver;
      try {
        driver = child.resolve(p.driver as never);
      } catch (e) {
        const missing = /TypeInfo not known/.test(describeThrown(e))
          ? ` (add @injectable() to class ${p.driver.name})`
          : "";
        throw new HmmError(
          "EINVAL",
          `plugin '${p.name}': could not construct driver for ${name}: ${describeThrown(e)}${missing}`,
          "PLUGIN_INVALID",
          { cause: e },
        );
      }
      if (typeof driver !== "object" || driver === null)
        throw new HmmError(
          "EINVAL",
          `plugin '${p.name}': the driver for ${name} is not an object`,
          "PLUGIN_INVALID",
        );
      const huge = own.pmdCallback !== false && typeof proto.mirrorPmd === "function";
      const dispatcher = new DriverDispatcher(
        name,
        p.name,
        driver,
        mode,
        huge,
        stats,
        (err) => this.deviceFailed(device!, err),
        machine,
        () => this.translationLimit(device!),
      );
      device = new Device(name, ownerId, p, frozen, memory, stats, context, dispatcher);
    } catch (e) {
      machine.unregisterDevicePagemap(ownerId);
      throw e;
    }
    this.devices.set(name, device);
    this.stats.devices.set(name, stats);
    this.byOwner[ownerId] = device;
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
    this.evacuate(d);
    let stuck = 0;
    for (const dpfn of d.memory.oldestInUse(d.memory.npages))
      if (this.findInstalled(d, dpfn) !== null) stuck++;
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
    this.pendingUnregister.push(d);
    this.unregisterFreed();
    if (wasActive) d.dispatcher.release();
    return { framesInUse: d.memory.used };
  }

  /** Unregister the pagemaps of removed devices whose last frame was freed. */
  private unregisterFreed(): void {
    for (let i = this.pendingUnregister.length - 1; i >= 0; i--) {
      const d = this.pendingUnregister[i];
      if (d.memory.used !== 0) continue;
      this.machine.unregisterDevicePagemap(d.ownerId);
      this.byOwner[d.ownerId] = undefined;
      this.pendingUnregister.splice(i, 1);
    }
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
    return this.bindMm(e.dev, e.mm);
  }

  private bindMm(dev: Device, mm: Mm): DeviceBinding {
    let b = dev.bindings.get(mm.id);
    if (b !== undefined && !mm.exited) return b;
    if (mm.exited) throw new HmmError("EFAULT", `device ${dev.name}: address space ${mm.id} has exited`);
    const notifier = mm.notifiers.insert(0, TASK_SIZE, {
      invalidate: (sub, range, curSeq) => this.onInvalidate(dev, mm, sub, range, curSeq),
    });
    b = { mm, notifier, reported: new Set() };
    dev.bindings.set(mm.id, b);
    return b;
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
    const b = d.bindings.get(mm.id);
    if (b === undefined) return;
    b.notifier.remove();
    d.bindings.delete(mm.id);
    if (d.state === "active") d.dispatcher.unbind(mm.id);
  }

  private onInvalidate(
    dev: Device,
    mm: Mm,
    sub: MmuIntervalNotifier,
    range: MmuNotifierRange,
    curSeq: number,
  ): boolean {
    // The driver's update lock is implied: nothing else runs while a callback runs.
    sub.setSeq(curSeq);
    this.notifierDepth++;
    try {
      if (dev.state === "active") {
        const b = dev.bindings.get(mm.id);
        if (b !== undefined)
          dev.stats.invalidatedPages += countInvalidatedPages(
            mm,
            dev.ownerId,
            b.reported,
            range.start,
            range.end,
          );
        dev.dispatcher.invalidate(mm.id, range.start, range.end, range.event, range.owner);
      }
    } finally {
      this.notifierDepth--;
    }
    if (range.event === MmuNotifyEvent.RELEASE) {
      dev.bindings.delete(mm.id);
      sub.remove();
    }
    return true;
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
    const b = this.bindMm(e.dev, e.mm);
    return new DeviceFaultOp(e.dev, e.mm, b.notifier, start, end, write, b.reported);
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
    const reported = this.bindMm(d, mm).reported;
    const pfn = new Int32Array(1);
    const flags = new Int32Array([HMM_PFN_VALID | HMM_PFN_WRITE | HMM_PFN_EXCLUSIVE]);
    let n = 0;
    try {
      for (let va = start; va < end; va += PAGE_SIZE) {
        pfn[0] = makeDeviceExclusive(mm, va, d.ownerId);
        d.stats.exclusivePages++;
        reported.add(Math.floor(va / HPAGE_PMD_SIZE));
        if (!d.dispatcher.mirrorRange(mm.id, va, 1, pfn, 0, flags, 0)) throw d.dispatcher.failure!;
        n++;
      }
    } finally {
      this.reap();
    }
    return n;
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
    this.bindMm(e.dev, e.mm);
    return this.reapAfter(
      migrateToDeviceSteps(
        { evictFor: (d) => this.evict(d, this.config.evictBatchPages) > 0 },
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
    let moved = 0;
    for (const dpfn of d.memory.oldestInUse(npages)) {
      if (moved >= npages) break;
      const r = this.migrateFolioHome(d, dpfn);
      moved += r;
      d.stats.evictions += r;
    }
    return moved;
  }

  /** `steps`, with the failed devices reaped when it ends (returns or throws). */
  private *reapAfter<T>(steps: Steps<T>): Steps<T> {
    try {
      return yield* steps;
    } finally {
      this.reap();
    }
  }

  /** Bring the folio headed by `dpfn` home from wherever it is mapped; returns the pages moved. */
  private migrateFolioHome(dev: Device, dpfn: number): number {
    const at = this.findInstalled(dev, dpfn);
    if (at === null) return 0;
    if (!dev.memory.isHuge(dpfn)) return migrateBack(dev, at.mm, at.va, at.va + PAGE_SIZE).migrated;
    // The whole 2 MiB, VMA by VMA (a partial munmap or mprotect may have cut it).
    let moved = 0;
    const end = at.va + HPAGE_PMD_SIZE;
    for (let a = at.va; a < end; ) {
      const vma = at.mm.vmas.findFrom(a);
      if (vma === null || vma.start >= end) break;
      const s = Math.max(a, vma.start);
      const b = Math.min(end, vma.end);
      moved += migrateBack(dev, at.mm, s, b).migrated;
      a = b;
    }
    return moved;
  }

  /** Where the folio headed by `dpfn` is mapped now (see findDeviceFolio). */
  private findInstalled(dev: Device, dpfn: number): { mm: Mm; va: number } | null {
    return findDeviceFolio(this.machine, dev, dpfn);
  }

  /** Bring every page of `dev` home (used on removal and failure). */
  private evacuate(dev: Device): void {
    for (let guard = 0; guard < 4 && dev.memory.used > 0; guard++) {
      for (const dpfn of dev.memory.oldestInUse(dev.memory.npages)) this.migrateFolioHome(dev, dpfn);
    }
  }

  // ---- fault containment ----------------------------------------------------------------------

  private deviceFailed(dev: Device, err: DriverError): void {
    // A failure in `release` (the device is already detached) is recorded, nothing more.
    if (dev.state === "removed") dev.failure ??= err;
    if (dev.state !== "active") return;
    dev.state = "failed";
    dev.failure = err;
    this.reapQueue.push(dev);
    // Inside an invalidation the page tables are mid-change: finish when the operation is done
    // (the machine's next safe point, or the end of the core operation in progress).
    if (this.notifierDepth > 0) {
      this.machine.defer(() => this.reap());
      return;
    }
    try {
      this.reap();
    } catch (e) {
      // Out of stack (a driver that failed deep in a recursion): finish at the next safe point.
      if (!(e instanceof RangeError)) throw e;
      this.machine.defer(() => this.reap());
    }
  }

  /**
   * Finish detaching failed devices: bring their pages home with the core's own copy, drop their
   * notifiers. Runs as soon as the failure is seen, or, for a failure inside an invalidation, when
   * the memory operation that sent it has finished; every core operation also starts and ends
   * with it. A device leaves the queue only once it is fully detached.
   */
  reap(): void {
    refuseInsideCallback(this.machine, "reap");
    if (this.notifierDepth > 0 || this.reaping) return;
    if (this.pendingUnregister.length > 0) this.unregisterFreed();
    this.reaping = true;
    try {
      while (this.reapQueue.length > 0) {
        const dev = this.reapQueue[0];
        this.evacuate(dev);
        for (const b of dev.bindings.values()) b.notifier.remove();
        dev.bindings.clear();
        this.reapQueue.shift();
      }
    } finally {
      this.reaping = false;
    }
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

  /**
   * The most translations `dev` can hold: one per page of every VMA of the address spaces it is
   * bound to, plus TRANSLATIONS_MARGIN. A driver reporting more has a runaway iterator.
   */
  private translationLimit(dev: Device): number {
    let pages = 0;
    for (const b of dev.bindings.values()) for (const v of b.mm.vmas) pages += v.pages;
    return pages + TRANSLATIONS_MARGIN;
  }
}
