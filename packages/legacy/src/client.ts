import {
  type DeviceConfig,
  type DeviceContext,
  type DeviceFaultBatch,
  type DeviceTranslation,
  describeThrown,
  type HmmDriver,
  HmmError,
  MmuNotifyEvent,
  TOKENS,
} from "@hmmkit/core";
import { type DependencyContainer, inject, injectable } from "tsyringe";
import type { SharedMirrorDriver } from "./contract.js";
import { EACCES, EFAULT, ENOMEM, HmmPtAssertionError, hex } from "./errors.js";
import { hmmEtypeOf } from "./etype.js";
import { deviceAddress } from "./hmm-pte.js";
import type { SharedMirror } from "./shared-mirror.js";
import { LEGACY_TOKENS } from "./tokens.js";
import { PAGE_SIZE } from "./types.js";

/** The device config key carrying the SharedMirror to the client the core builds (reserved). */
export const SHARED_MIRROR_CONFIG_KEY = "sharedMirror";

/**
 * The per-PTE client the legacy layer registers with the core for each shared-mirror device
 * (HmmCore.addDevice): the core's mirror callbacks (array form and mirrorPmd) fill hmm_pt, its
 * invalidations become v12 events for the driver's `update` and clear hmm_pt, its copies go to
 * the driver's copy callbacks (the device address of a page coming home looked up in hmm_pt), and
 * the device access path (translate, handleFaults) goes to the driver. It builds the
 * shared-mirror driver in its own child container, with LEGACY_TOKENS.SharedMirror.
 */
@injectable()
export class SharedMirrorClient implements HmmDriver {
  readonly sm: SharedMirror;
  private readonly drv: SharedMirrorDriver;
  private readonly oneFlag = new Int32Array(1);

  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
    @inject(TOKENS.Container) root: DependencyContainer,
  ) {
    const sm = config[SHARED_MIRROR_CONFIG_KEY] as SharedMirror | undefined;
    if (sm === undefined || typeof sm !== "object")
      throw new HmmError(
        "EINVAL",
        `device ${ctx.name}: the shared-mirror client is built only by attachSharedMirror (@hmmkit/legacy)`,
        "PLUGIN_INVALID",
      );
    this.sm = sm;
    const own: Record<string, unknown> = { ...config };
    delete own[SHARED_MIRROR_CONFIG_KEY];
    const driverConfig = Object.freeze(own) as DeviceConfig;
    const context: DeviceContext = Object.freeze({ ...ctx, config: driverConfig });
    sm.context = context;
    const child = root.createChildContainer();
    child.register(TOKENS.DeviceContext, { useValue: context });
    child.register(TOKENS.DeviceConfig, { useValue: driverConfig });
    child.register(LEGACY_TOKENS.SharedMirror, { useValue: sm });
    let drv: SharedMirrorDriver;
    try {
      drv = child.resolve(sm.plugin.driver as never);
    } catch (e) {
      const missing = /TypeInfo not known/.test(describeThrown(e))
        ? ` (add @injectable() to class ${sm.plugin.driver.name})`
        : "";
      throw new HmmError(
        "EINVAL",
        `shared-mirror plugin '${sm.plugin.name}': could not construct driver class ${sm.plugin.driver.name}: ${describeThrown(e)}${missing}`,
        "PLUGIN_INVALID",
        { cause: e },
      );
    }
    this.drv = drv;
    sm.driver = drv;
  }

  /** The core's array callback: a run of pages of one leaf table, into hmm_pt. */
  mirrorPtes(mmId: number, va: number, count: number, pfns: Int32Array, flags: Int32Array): void {
    const m = this.sm.mirror(mmId);
    m.fill(va, count, pfns, 0, flags, 0, -1);
  }

  /** A whole huge PMD: 512 page entries (hmm_pt has no huge entries). */
  mirrorPmd(mmId: number, va: number, pfn: number, flags: number): void {
    const m = this.sm.mirror(mmId);
    this.oneFlag[0] = flags;
    m.fill(va, 512, null, 0, this.oneFlag, 0, pfn);
  }

  /**
   * hmm_notifier_invalidate_range_start -> hmm_update -> hmm_mirror_update: the driver's update
   * with the v12 event first, then hmm_mirror_update_pt on hmm_pt. A failed update kills the
   * mirror; RELEASE (the address space exits) kills it after clearing.
   */
  invalidate(mmId: number, start: number, end: number, event: MmuNotifyEvent, owner: number | null): void {
    const sm = this.sm;
    const m = sm.mirrors.get(mmId);
    if (m === undefined || m.hmm === null) return;
    let prot = 3;
    if (event === MmuNotifyEvent.PROTECTION_VMA) {
      const vma = m.hmm.mm.findVma(start);
      prot = vma === null ? 0 : (vma.readable ? 1 : 0) | (vma.writable ? 2 : 0);
    }
    const etype = hmmEtypeOf(event, prot);
    // hmm_wait_device_fault: a device fault in progress over this range must back off (it
    // restarts with -EAGAIN at its next PMD; the simulation cannot wait for it, the entries it
    // filled are cleared below like any other).
    if (m.active !== null && start < m.faultEnd && end > m.faultStart && !m.backoff) {
      m.backoff = true;
      sm.counters.backoffs++;
    }
    sm.counters.updates++;
    const ret = this.drv.update(m, { start, end, etype });
    const migrateOwner = event === MmuNotifyEvent.MIGRATE && owner !== null ? owner : -1;
    m.updatePt(start, end, etype, migrateOwner);
    if (event === MmuNotifyEvent.RELEASE) sm.kill(m, false);
    else if (typeof ret === "number" && ret !== 0) sm.kill(m, true);
  }

  /** Migration to the device: the driver's copy_to_device. */
  copyToDevice(mmId: number, va: number, spfn: number, dpfn: number): void {
    this.drv.copyToDevice(mmId, va, spfn, dpfn);
  }

  /**
   * A device page comes home: its device address is looked up in hmm_pt (and the entry cleared),
   * then the driver's copy_from_device copies it. A page whose entry an earlier invalidation
   * already cleared (e.g. a split of its device-private PMD) comes home with the core's frame.
   */
  copyFromDevice(mmId: number, va: number, dpfn: number, spfn: number): void {
    const sm = this.sm;
    const m = sm.mirrors.get(mmId);
    let frame = dpfn;
    const a = m !== undefined && m.hmm !== null ? m.takeDeviceEntry(va) : -1;
    if (a >= 0) {
      const want = deviceAddress(sm.ownerId, dpfn);
      if (a !== want)
        throw new HmmPtAssertionError(
          `copy from device: hmm_pt of mm ${mmId} maps ${hex(va)} to device address ${a}, but the CPU entry is device frame ${dpfn} of owner ${sm.ownerId} (device address ${want})`,
        );
      frame = a % 2 ** 32;
      sm.counters.copyFromDeviceViaHmmPt++;
    } else sm.counters.copyFromDeviceUnmirrored++;
    this.drv.copyFromDevice(mmId, va, frame, spfn);
  }

  /** The core unbound the device from `mmId` (its notifier is gone): kill the mirror. */
  unbind(mmId: number): void {
    const m = this.sm.mirrors.get(mmId);
    if (m !== undefined) this.sm.kill(m, true);
  }

  /** The device goes away: hmm_device_ops.release, then every hmm_pt is freed. */
  release(): void {
    const sm = this.sm;
    try {
      this.drv.release?.();
    } finally {
      for (const m of sm.mirrors.values()) sm.kill(m, false);
    }
  }

  /** The device's hardware: the driver's table. */
  translate(mmId: number, va: number, write: boolean): number {
    return this.drv.translate(mmId, va, write);
  }

  /** The driver's fault handler, or one hmm_mirror_fault per distinct page. */
  handleFaults(batch: DeviceFaultBatch): void | Generator<string, void, void> {
    if (typeof this.drv.handleFaults === "function") return this.drv.handleFaults(batch);
    return this.pageFaults(batch);
  }

  private *pageFaults(batch: DeviceFaultBatch): Generator<string, void, void> {
    for (let k = 0; k < batch.count; k++) {
      const va = batch.va[k];
      const write = batch.isWrite(k);
      let dup = -1;
      for (let j = 0; j < k; j++)
        if (batch.va[j] === va && batch.mmId[j] === batch.mmId[k] && (batch.isWrite(j) || !write)) {
          dup = j;
          break;
        }
      if (dup >= 0) {
        if (batch.cancelled[dup] !== 0) batch.cancelled[k] = batch.cancelled[dup];
        continue;
      }
      const r = yield* this.sm.mirror(batch.mmId[k]).faultSteps(va, va + PAGE_SIZE, write);
      if (r < 0) batch.cancel(k, cancelErrno(r));
    }
  }

  /** The driver's translations. */
  translations(): Iterable<DeviceTranslation> {
    return this.drv.translations();
  }
}

/** The cancellation errno for a failed hmm_mirror_fault. */
export function cancelErrno(r: number): "EFAULT" | "EPERM" | "ENOMEM" | "EIO" {
  if (r === -EFAULT) return "EFAULT";
  if (r === -EACCES) return "EPERM";
  if (r === -ENOMEM) return "ENOMEM";
  return "EIO";
}
