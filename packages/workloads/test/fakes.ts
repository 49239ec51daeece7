/**
 * Fake drivers for the workload tests. MapMirrorFakeDriver keeps its mirror in a Map per address
 * space (virtual page -> frame and bits), translates from it and has no handleFaults (the core's
 * default handler faults page by page); BlockFaultFakeDriver adds a handler that faults the whole
 * 2 MiB block around each fault, so the two fault and invalidate very differently and their
 * digests must still agree. The deliberately broken ones are named as such.
 */
import {
  type Device,
  type DeviceConfig,
  type DeviceContext,
  type DeviceFaultBatch,
  type DeviceTranslation,
  deviceFrameResult,
  HMM_API_VERSION,
  HMM_PFN_DEVICE_PRIVATE,
  HMM_PFN_WRITE,
  type HmmCore,
  type HmmDriver,
  type HmmPlugin,
  type Steps,
  TOKENS,
  TRANSLATE_MISS,
} from "@hmmkit/core";
import { HPAGE_PMD_SIZE, MmError, type MmuNotifyEvent } from "@hmmkit/mm";
import { inject, injectable } from "tsyringe";

const PAGE = 4096;
const WRITABLE = 1;
const DEVICE = 2;

/** A per-PTE driver whose mirror is a Map per address space (vpn -> pfn * 4 + bits). */
@injectable()
export class MapMirrorFakeDriver implements HmmDriver {
  readonly mirror = new Map<number, Map<number, number>>();

  constructor(
    @inject(TOKENS.DeviceContext) readonly ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) readonly config: DeviceConfig,
  ) {}

  private of(mmId: number): Map<number, number> {
    let m = this.mirror.get(mmId);
    if (m === undefined) {
      m = new Map();
      this.mirror.set(mmId, m);
    }
    return m;
  }

  protected store(mmId: number, va: number, pfn: number, flags: number): void {
    const bits = (flags & HMM_PFN_WRITE ? WRITABLE : 0) | (flags & HMM_PFN_DEVICE_PRIVATE ? DEVICE : 0);
    this.of(mmId).set(va / PAGE, pfn * 4 + bits);
  }

  mirrorPte(mmId: number, va: number, pfn: number, flags: number): void {
    this.store(mmId, va, pfn, flags);
  }

  mirrorPmd(mmId: number, va: number, pfn: number, flags: number): void {
    for (let i = 0; i < 512; i++) this.store(mmId, va + i * PAGE, pfn + i, flags);
  }

  invalidate(mmId: number, start: number, end: number, _event: MmuNotifyEvent, _owner: number | null): void {
    const m = this.mirror.get(mmId);
    if (m === undefined || m.size === 0) return;
    const first = start / PAGE;
    const last = end / PAGE;
    let dropped = 0;
    // Clip the range to what is held: walk the Map when it is smaller than the range.
    if (m.size < last - first) {
      for (const vpn of [...m.keys()])
        if (vpn >= first && vpn < last) {
          m.delete(vpn);
          dropped++;
        }
    } else for (let v = first; v < last; v++) if (m.delete(v)) dropped++;
    this.ctx.stats.pagesDropped += dropped;
    if (dropped > 0) this.ctx.stats.tlbFlushes++;
  }

  copyToDevice(_mmId: number, _va: number, spfn: number, dpfn: number): void {
    if (spfn < 0) this.ctx.dma.zeroDevicePage(dpfn);
    else this.ctx.dma.systemToDevice(spfn, dpfn);
  }

  copyFromDevice(_mmId: number, _va: number, dpfn: number, spfn: number): void {
    this.ctx.dma.deviceToSystem(dpfn, spfn);
  }

  unbind(mmId: number): void {
    this.mirror.delete(mmId);
  }

  translate(mmId: number, va: number, write: boolean): number {
    const e = this.mirror.get(mmId)?.get(va / PAGE);
    if (e === undefined || (write && (e & WRITABLE) === 0)) return TRANSLATE_MISS;
    const pfn = Math.floor(e / 4);
    return e & DEVICE ? deviceFrameResult(pfn) : pfn;
  }

  *translations(): Iterable<DeviceTranslation> {
    for (const [mmId, m] of this.mirror)
      for (const [vpn, e] of m)
        yield {
          mmId,
          va: vpn * PAGE,
          pfn: Math.floor(e / 4),
          order: 0,
          writable: (e & WRITABLE) !== 0,
          devicePrivate: (e & DEVICE) !== 0,
        };
  }
}

/**
 * MapMirrorFakeDriver with a fault handler that makes the whole 2 MiB block around each fault
 * valid (clipped to the faulting page's VMA), falling back to the page alone when the block
 * fault fails (a racing munmap or mprotect), and cancelling the entry when that fails too.
 */
@injectable()
export class BlockFaultFakeDriver extends MapMirrorFakeDriver {
  blockFaults = 0;

  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
    @inject(TOKENS.HmmCore) readonly core: HmmCore,
  ) {
    super(ctx, config);
  }

  *handleFaults(batch: DeviceFaultBatch): Generator<string, void, void> {
    const dev = this.core.device(this.ctx.name);
    for (let k = 0; k < batch.count; k++) {
      const va = batch.va[k];
      const write = batch.isWrite(k);
      const mmId = batch.mmId[k];
      if (this.translate(mmId, va, write) !== TRANSLATE_MISS) continue;
      const mm = this.core.mmById(mmId);
      const vma = mm?.findVma(va) ?? null;
      if (mm === undefined || vma === null) {
        batch.cancel(k, "EFAULT");
        continue;
      }
      const block = Math.floor(va / HPAGE_PMD_SIZE) * HPAGE_PMD_SIZE;
      const start = Math.max(block, vma.start);
      const end = Math.min(block + HPAGE_PMD_SIZE, vma.end);
      try {
        this.blockFaults++;
        yield* this.core.deviceFaultSteps(dev, mm, start, end, write);
      } catch (e) {
        if (!(e instanceof MmError) || dev.state !== "active") throw e;
        yield* this.faultPage(dev, mm, batch, k, va, write);
      }
    }
  }

  private *faultPage(
    dev: Device,
    mm: NonNullable<ReturnType<HmmCore["mmById"]>>,
    batch: DeviceFaultBatch,
    k: number,
    va: number,
    write: boolean,
  ): Steps<void> {
    try {
      yield* this.core.deviceFaultSteps(dev, mm, va, va + PAGE, write);
    } catch (e) {
      if (!(e instanceof MmError) || dev.state !== "active") throw e;
      const errno = e.errno === "EPERM" ? "EPERM" : e.errno === "ENOMEM" ? "ENOMEM" : "EFAULT";
      batch.cancel(k, errno);
    }
  }
}

/**
 * MapMirrorFakeDriver with a first-touch migration policy: each fault first migrates its page to
 * device memory (where it can: a page that cannot move stays in RAM and is mapped remotely), then
 * faults it for the access. At most a quarter of device memory migrates per batch, the rest is
 * mapped remotely: a batch that migrated more than the device holds would evict pages still
 * waiting for their replay, round after round (a livelock the core ends with DRIVER_STUCK). A write to its own page that the CPU shares read-only (after fork)
 * brings the page home first, as a kernel driver must (hmm_range_fault only reports such a page).
 */
@injectable()
export class MigratingFakeDriver extends MapMirrorFakeDriver {
  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
    @inject(TOKENS.HmmCore) readonly core: HmmCore,
  ) {
    super(ctx, config);
  }

  *handleFaults(batch: DeviceFaultBatch): Generator<string, void, void> {
    const dev = this.core.device(this.ctx.name);
    let budget = Math.max(1, dev.memory.npages >> 2);
    for (let k = 0; k < batch.count; k++) {
      const va = batch.va[k];
      const write = batch.isWrite(k);
      const mmId = batch.mmId[k];
      if (this.translate(mmId, va, write) !== TRANSLATE_MISS) continue;
      const mm = this.core.mmById(mmId);
      if (mm === undefined) {
        batch.cancel(k, "EFAULT");
        continue;
      }
      try {
        if (budget > 0) budget -= (yield* this.core.migrateToDeviceSteps(dev, mm, va, va + PAGE)).migrated;
        const r = yield* this.core.deviceFaultSteps(dev, mm, va, va + PAGE, write);
        if (r.reportedReadOnly > 0) {
          yield* this.core.migrateToRamSteps(dev, mm, va, va + PAGE);
          yield* this.core.deviceFaultSteps(dev, mm, va, va + PAGE, write);
        }
      } catch (e) {
        if (!(e instanceof MmError) || dev.state !== "active") throw e;
        batch.cancel(k, e.errno === "EPERM" ? "EPERM" : e.errno === "ENOMEM" ? "ENOMEM" : "EFAULT");
      }
    }
  }
}

/**
 * A deliberately broken driver: MapMirrorFakeDriver whose translate sends every read to the frame
 * after the right one. Only a run with verifyTranslations off lets it through; the data oracle
 * must still catch it.
 */
@injectable()
export class WrongFrameFakeDriver extends MapMirrorFakeDriver {
  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
  ) {
    super(ctx, config);
  }
  override translate(mmId: number, va: number, write: boolean): number {
    const r = super.translate(mmId, va, write);
    return r >= 0 && !write ? (r + 1) % this.ctx.machine.pool.nframes : r;
  }
}

/** A deliberately broken driver: MapMirrorFakeDriver whose mirrorPte throws after `throwAfter` calls. */
@injectable()
export class ThrowingFakeDriver extends MapMirrorFakeDriver {
  private calls = 0;
  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
  ) {
    super(ctx, config);
  }
  override mirrorPte(mmId: number, va: number, pfn: number, flags: number): void {
    if (++this.calls > ((this.config.throwAfter as number | undefined) ?? 0))
      throw new Error(`fake mirrorPte failure after ${this.calls - 1} calls`);
    super.mirrorPte(mmId, va, pfn, flags);
  }
}

/** A plugin descriptor for a fake class. */
export function fakePlugin(driver: HmmPlugin["driver"], name: string): HmmPlugin {
  return { name, apiVersion: HMM_API_VERSION, design: "per-pte", driver, configKeys: ["throwAfter"] };
}

export const mapMirrorPlugin = fakePlugin(MapMirrorFakeDriver, "map-mirror-fake");
export const blockFaultPlugin = fakePlugin(BlockFaultFakeDriver, "block-fault-fake");
export const migratingPlugin = fakePlugin(MigratingFakeDriver, "migrating-fake");

/**
 * A deliberately broken driver: MapMirrorFakeDriver that ignores invalidations, so it keeps
 * translations the CPU page table no longer has.
 */
@injectable()
export class StaleFakeDriver extends MapMirrorFakeDriver {
  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
  ) {
    super(ctx, config);
  }
  override invalidate(): void {}
}

/** A deliberately broken driver: MigratingFakeDriver whose mirrorPte throws after `throwAfter` calls. */
@injectable()
export class ThrowingMigratingFakeDriver extends MigratingFakeDriver {
  private calls = 0;
  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
    @inject(TOKENS.HmmCore) core: HmmCore,
  ) {
    super(ctx, config, core);
  }
  override mirrorPte(mmId: number, va: number, pfn: number, flags: number): void {
    if (++this.calls > ((this.config.throwAfter as number | undefined) ?? 0))
      throw new Error(`fake mirrorPte failure after ${this.calls - 1} calls`);
    super.mirrorPte(mmId, va, pfn, flags);
  }
}
