import {
  ENTRY_DEVICE_PRIVATE,
  ENTRY_KIND_MASK,
  entryOwner,
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
import type { DeviceTranslation, HmmPlugin } from "./contract.js";
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
import { type CallbackMode, DriverDispatcher } from "./dispatcher.js";
import { type DriverError, HmmError } from "./errors.js";
import { HMM_PFN_EXCLUSIVE, HMM_PFN_VALID, HMM_PFN_WRITE, hmmFlagsToProt } from "./flags.js";
import { countInvalidatedPages } from "./invalidate-count.js";
import {
  type MigrateResult,
  migrateBack,
  migrateOnCpuFault,
  migrateToDeviceSteps,
  migrateToRamSteps,
} from "./migration.js";
import { validatePlugin } from "./plugin.js";
import { checkRange, type MmLike, mmOf } from "./range.js";
import { runSteps, type Steps } from "./scheduler.js";
import { type RangeSnapshot, snapshotRange } from "./snapshot.js";
import type { HmmStats } from "./stats.js";
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
@injectable()
export class HmmCore {
  readonly devices = new Map<string, Device>();
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
   * config. Returns the device.
   */
  addDevice(plugin: HmmPlugin | unknown, config: DeviceConfig, source = "<inline>"): Device {
    const p = validatePlugin(plugin, source);
    if (p.design !== "per-pte") {
      throw new HmmError(
        "EINVAL",
        `plugin '${p.name}' (${source}) uses the ${p.design} design, which reads HMM's shared mirror: attach it through the legacy layer (@hmmkit/legacy), not HmmCore.addDevice`,
        "PLUGIN_INVALID",
      );
    }
    const name = config?.name;
    if (typeof name !== "string" || !/^[A-Za-z][\w.-]*$/.test(name)) {
      throw new HmmError(
        "EINVAL",
        `device config needs a 'name' (letters, digits, _ . -), got ${JSON.stringify(name)}`,
        "BAD_CONFIG",
      );
    }
    if (this.devices.has(name))
      throw new HmmError("EEXIST", `a device named '${name}' already exists`, "BAD_CONFIG");
    const want = config.callbackMode ?? "auto";
    if (want !== "auto" && want !== "per-pte" && want !== "array") {
      throw new HmmError(
        "EINVAL",
        `device ${name}: callbackMode must be "auto", "per-pte" or "array", got ${JSON.stringify(want)}`,
        "BAD_CONFIG",
      );
    }
    const npages = config.memoryPages ?? this.config.defaultDeviceMemoryPages;
    const memory = new DeviceMemory(npages, this.machine.config.contentMode);
    const stats = this.stats.device(name);
    const machine = this.machine;
    const dma: DeviceDma = {
      systemToDevice: (spfn, dpfn) => machine.pool.content.copyTo(spfn, memory.content, dpfn),
      deviceToSystem: (dpfn, spfn) => memory.content.copyTo(dpfn, machine.pool.content, spfn),
      zeroDevicePage: (dpfn) => memory.content.zero(dpfn),
    };
    let device: Device | undefined;
    const ownerId = machine.registerDevicePagemap({
      name,
      migrateToRam: (mm, _vma, va, dpfn) => migrateOnCpuFault(device!, mm, va, dpfn),
      pageGet: (dpfn) => memory.get(dpfn),
      pagePut: (dpfn) => memory.put(dpfn),
      pageHash: (dpfn) => memory.content.hash(dpfn),
    });
    const frozen = Object.freeze({ ...config });
    const context: DeviceContext = { name, ownerId, machine, memory, dma, stats, config: frozen };
    const child = this.container.createChildContainer();
    child.register(TOKENS.DeviceContext, { useValue: context });
    child.register(TOKENS.DeviceConfig, { useValue: frozen });
    let driver: ReturnType<typeof child.resolve>;
    try {
      driver = child.resolve(p.driver as never);
    } catch (e) {
      machine.unregisterDevicePagemap(ownerId);
      throw new HmmError(
        "EINVAL",
        `plugin '${p.name}': could not construct driver for ${name}: ${(e as Error).message}`,
        "PLUGIN_INVALID",
        {
          cause: e,
        },
      );
    }
    const d = driver as DeviceContext & Record<string, unknown>;
    const hasPte = typeof d.mirrorPte === "function";
    const hasArray = typeof d.mirrorPtes === "function";
    let mode: CallbackMode;
    if (want === "array" || (want === "auto" && !hasPte)) mode = "array";
    else mode = "per-pte";
    if ((mode === "array" && !hasArray) || (mode === "per-pte" && !hasPte)) {
      machine.unregisterDevicePagemap(ownerId);
      throw new HmmError(
        "EINVAL",
        `device ${name}: callbackMode '${want}' but plugin '${p.name}' does not implement it`,
        "BAD_CONFIG",
      );
    }
    const huge = config.pmdCallback !== false && typeof d.mirrorPmd === "function";
    const dispatcher = new DriverDispatcher(name, p.name, driver as never, mode, huge, stats, (err) =>
      this.deviceFailed(device!, err),
    );
    device = new Device(name, ownerId, p, frozen, memory, stats, context, dispatcher);
    this.devices.set(name, device);
    this.byOwner[ownerId] = device;
    return device;
  }

  /** The device called `name`. */
  device(name: string): Device {
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
   * notifiers, call `release`, and forget it (memunmap_pages after evicting every chunk, as the
   * kernel test driver's dmirror_device_remove_chunks does).
   *
   * If some of its pages cannot come home (system memory is full), nothing is removed: EBUSY
   * names how many, and the device stays attached with its pages (free memory and call again).
   * Frames still held by a migration in flight (paused at a preemption point; it rolls back when
   * it resumes) do not block removal: the result counts them in `framesInUse`, and the device's
   * pagemap stays registered until the last is freed (the core notices at its next operation).
   */
  removeDevice(dev: Device | string): RemoveDeviceResult {
    const d = typeof dev === "string" ? this.device(dev) : dev;
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
    if (d.state === "active") d.dispatcher.release();
    d.state = "removed";
    this.devices.delete(d.name);
    this.pendingUnregister.push(d);
    this.unregisterFreed();
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

  /** The live address space with id `id` (the `mmId` every callback gets), if any. */
  mmById(id: number): Mm | undefined {
    for (const mm of this.machine.mms) if (mm.id === id) return mm;
    return undefined;
  }

  // ---- bindings and notifiers ----------------------------------------------------------------

  /** The device's interval notifier on `mm` (created on first use, covering all of user space). */
  bind(dev: Device, mmLike: MmLike): DeviceBinding {
    const mm = mmOf(mmLike);
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
    this.reap();
    const mm = mmOf(mmLike);
    const b = dev.bindings.get(mm.id);
    if (b === undefined) return;
    b.notifier.remove();
    dev.bindings.delete(mm.id);
    if (dev.state === "active") dev.dispatcher.unbind(mm.id);
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
    return deviceFaultSync(this.faultOp(dev, mm, start, end, write));
  }

  /** Step form of {@link deviceFault}, for the scheduler. */
  deviceFaultSteps(
    dev: Device,
    mm: MmLike,
    start: number,
    end: number,
    write: boolean,
  ): Steps<DeviceFaultResult> {
    return deviceFaultSteps(this.faultOp(dev, mm, start, end, write));
  }

  private faultOp(dev: Device, mmLike: MmLike, start: number, end: number, write: boolean): DeviceFaultOp {
    this.reap();
    this.requireActive(dev);
    const mm = mmOf(mmLike);
    const b = this.bind(dev, mm);
    return new DeviceFaultOp(dev, mm, b.notifier, start, end, write, b.reported);
  }

  // ---- snapshot -------------------------------------------------------------------------------

  /** The CPU page table of [start, end) as `dev` sees it, without faulting (see snapshotRange). */
  snapshot(dev: Device, mm: MmLike, start: number, end: number): RangeSnapshot {
    this.reap();
    dev.stats.snapshots++;
    return snapshotRange(mmOf(mm), dev.ownerId, start, end);
  }

  /** The snapshot encoded as the kernel test driver's HMM_DMIRROR_PROT_* bytes. */
  snapshotProt(dev: Device, mm: MmLike, start: number, end: number): Uint8Array {
    const s = this.snapshot(dev, mm, start, end);
    const out = new Uint8Array(s.flags.length);
    for (let i = 0; i < out.length; i++) out[i] = hmmFlagsToProt(s.flags[i]);
    return out;
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
    this.reap();
    this.requireActive(dev);
    const mm = mmOf(mmLike);
    checkRange("make exclusive", start, end);
    if (mm.exited) throw new HmmError("EFAULT", `make exclusive: address space ${mm.id} has exited`);
    const reported = this.bind(dev, mm).reported;
    const pfn = new Int32Array(1);
    const flags = new Int32Array([HMM_PFN_VALID | HMM_PFN_WRITE | HMM_PFN_EXCLUSIVE]);
    let n = 0;
    for (let va = start; va < end; va += PAGE_SIZE) {
      pfn[0] = makeDeviceExclusive(mm, va, dev.ownerId);
      dev.stats.exclusivePages++;
      reported.add(Math.floor(va / HPAGE_PMD_SIZE));
      if (!dev.dispatcher.mirrorRange(mm.id, va, 1, pfn, 0, flags, 0)) throw dev.dispatcher.failure!;
      n++;
    }
    return n;
  }

  // ---- migration ------------------------------------------------------------------------------

  /** Migrate [start, end) to `dev`'s memory (see migrateToDeviceSteps). */
  migrateToDevice(dev: Device, mm: MmLike, start: number, end: number): MigrateResult {
    return runSteps(this.migrateToDeviceSteps(dev, mm, start, end));
  }

  /** Step form of {@link migrateToDevice}. */
  migrateToDeviceSteps(dev: Device, mmLike: MmLike, start: number, end: number): Steps<MigrateResult> {
    this.reap();
    this.requireActive(dev);
    const mm = mmOf(mmLike);
    this.bind(dev, mm);
    return migrateToDeviceSteps(
      { evictFor: (d) => this.evict(d, this.config.evictBatchPages) > 0 },
      dev,
      mm,
      start,
      end,
    );
  }

  /** Bring `dev`'s pages in [start, end) back to system memory. */
  migrateToRam(dev: Device, mm: MmLike, start: number, end: number): MigrateResult {
    return runSteps(this.migrateToRamSteps(dev, mm, start, end));
  }

  /** Step form of {@link migrateToRam}. */
  migrateToRamSteps(dev: Device, mmLike: MmLike, start: number, end: number): Steps<MigrateResult> {
    this.reap();
    return migrateToRamSteps(dev, mmOf(mmLike), start, end);
  }

  /** Evict up to `npages` of `dev`'s oldest pages to system memory; returns how many moved. */
  evict(dev: Device, npages: number): number {
    let moved = 0;
    for (const dpfn of dev.memory.oldestInUse(npages)) {
      const at = this.findInstalled(dev, dpfn);
      if (at === null) continue;
      const r = migrateBack(dev, at.mm, at.va, at.va + PAGE_SIZE);
      moved += r.migrated;
      dev.stats.evictions += r.migrated;
    }
    return moved;
  }

  /** Where device frame `dpfn` is mapped now: the recorded place, or any live mm mapping it there. */
  private findInstalled(dev: Device, dpfn: number): { mm: Mm; va: number } | null {
    const va = dev.memory.installedVa[dpfn];
    const want = dev.memory.installedMm[dpfn];
    let found: { mm: Mm; va: number } | null = null;
    for (const mm of this.machine.mms) {
      const pos = mm.pt.ptePos(va);
      if (pos < 0) continue;
      const f = mm.pt.pteFlags[pos];
      if (
        (f & ENTRY_KIND_MASK) !== ENTRY_DEVICE_PRIVATE ||
        entryOwner(f) !== dev.ownerId ||
        mm.pt.ptePfn[pos] !== dpfn
      )
        continue;
      if (mm.id === want) return { mm, va };
      found ??= { mm, va };
    }
    return found;
  }

  /** Bring every page of `dev` home (used on removal and failure). */
  private evacuate(dev: Device): void {
    for (let guard = 0; guard < 4 && dev.memory.used > 0; guard++) {
      for (const dpfn of dev.memory.oldestInUse(dev.memory.npages)) {
        const at = this.findInstalled(dev, dpfn);
        if (at !== null) migrateBack(dev, at.mm, at.va, at.va + PAGE_SIZE);
      }
    }
  }

  // ---- fault containment ----------------------------------------------------------------------

  private deviceFailed(dev: Device, err: DriverError): void {
    if (dev.state !== "active") return;
    dev.state = "failed";
    dev.failure = err;
    this.reapQueue.push(dev);
    // Inside an invalidation the page tables are mid-change: finish when the operation is done.
    if (this.notifierDepth === 0) this.reap();
    else this.machine.defer(() => this.reap());
  }

  /**
   * Finish detaching failed devices: bring their pages home with the core's own copy, drop their
   * notifiers. Runs as soon as the failure is seen, or, for a failure inside an invalidation, when
   * the memory operation that sent it has finished; every core operation also starts with it.
   */
  reap(): void {
    if (this.notifierDepth > 0 || this.reaping) return;
    if (this.pendingUnregister.length > 0) this.unregisterFreed();
    this.reaping = true;
    try {
      while (this.reapQueue.length > 0) {
        const dev = this.reapQueue.shift()!;
        this.evacuate(dev);
        for (const b of dev.bindings.values()) b.notifier.remove();
        dev.bindings.clear();
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

  /** The translations `dev`'s driver holds now. */
  translations(dev: Device): DeviceTranslation[] {
    return dev.dispatcher.translations();
  }
}
