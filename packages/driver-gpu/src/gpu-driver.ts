import {
  type Device,
  type DeviceContext,
  type DeviceFaultBatch,
  type DeviceTranslation,
  type HmmCore,
  type HmmDriver,
  HmmError,
  MmuNotifyEvent,
  TOKENS,
} from "@hmmkit/core";
import { inject, injectable } from "tsyringe";
import { BLOCK_BYTES, DeviceTable } from "./device-table.js";
import { FaultService, type FaultServiceHost } from "./fault-service.js";
import { GpuStats } from "./gpu-stats.js";
import { type GpuOptions, parseGpuOptions } from "./options.js";
import { PTE_DEVICE, PTE_EXCLUSIVE, PTE_MAX_PFN, PTE_WRITE, ptePfn } from "./pte-encoding.js";
import { Residency } from "./residency.js";

/**
 * A GPU-like device driver in the per-PTE design: it keeps its own device page table (4 KiB and
 * 2 MiB entries, device-table.ts), translates every device access through it (`translate`),
 * services fault batches itself (coalesce, group by 2 MiB VA block, migrate or map remotely,
 * prefetch by UVM's rule, evict, detect thrashing: fault-service.ts), and migrates through the
 * core (the core owns device memory; the driver only copies).
 */
@injectable()
export class GpuDriver implements HmmDriver, FaultServiceHost {
  /** The driver's settings (the device config's gpu keys, validated). */
  readonly options: GpuOptions;
  /** The device page table. */
  readonly table: DeviceTable;
  /** Residency records of migrated blocks (eviction order, thrashing). */
  readonly residency: Residency;
  /**
   * Counters only this driver has (see GpuStats), as the fault path keeps them; read `gpuStats`
   * for them with the table's and residency's up to date.
   */
  readonly counters = new GpuStats();
  readonly compound: boolean;
  evicting = false;
  private readonly service: FaultService;
  private dev: Device | null = null;

  constructor(
    @inject(TOKENS.DeviceContext) readonly ctx: DeviceContext,
    @inject(TOKENS.HmmCore) readonly core: HmmCore,
  ) {
    this.options = parseGpuOptions(ctx.config, ctx.name);
    // The entry encoding holds frame numbers up to PTE_MAX_PFN; checked once here, so the
    // mirror callbacks need no range check per PTE.
    const frames = Math.max(ctx.machine.pool.nframes, ctx.memory.npages);
    if (frames - 1 > PTE_MAX_PFN)
      throw new HmmError(
        "EINVAL",
        `gpu device ${ctx.name}: ${frames} frames exceed the device page table's ${PTE_MAX_PFN + 1} (2^27: 512 GiB of 4 KiB frames)`,
        "BAD_CONFIG",
      );
    this.compound = ctx.config.compoundMigration === true;
    this.residency = new Residency(this.options.eviction);
    this.table = new DeviceTable(this.residency, () => this.reportBytes());
    if (this.options.migrate === "access-counter")
      this.table.setAccessThreshold(this.options.accessThreshold);
    this.service = new FaultService(this);
    this.reportBytes();
  }

  /** This driver's Device. */
  device(): Device {
    if (this.dev === null) this.dev = this.core.device(this.ctx.name);
    return this.dev;
  }

  /** Bytes of the live mirror structures: the table and the residency records. */
  liveBytes(): number {
    return this.table.liveBytes() + this.residency.liveBytes();
  }

  /** Report the live bytes (DeviceStats.mirrorBytes); the table calls it whenever they change. */
  reportBytes(): void {
    this.ctx.stats.setMirrorBytes(this.liveBytes());
  }

  /**
   * The gpu's own counters (GpuStats). The ones the table and the residency records keep
   * (capacityBytes, hugeSplits, accessNotifications) are brought up to date when this is read,
   * not on every change.
   */
  get gpuStats(): GpuStats {
    const s = this.counters;
    s.capacityBytes = this.table.capacityBytes() + this.residency.capacityBytes();
    s.hugeSplits = this.table.splits;
    s.accessNotifications = this.table.notified;
    return s;
  }

  // ---- the core's callbacks -------------------------------------------------------------------

  mirrorPte(mmId: number, va: number, pfn: number, flags: number): void {
    this.table.setPte(mmId, va, pfn, flags);
  }

  mirrorPmd(mmId: number, va: number, pfn: number, flags: number): void {
    this.table.setPmd(mmId, va, pfn, flags);
  }

  mirrorPtes(mmId: number, va: number, count: number, pfns: Int32Array, flags: Int32Array): void {
    this.table.setPtes(mmId, va, count, pfns, flags);
  }

  invalidate(mmId: number, start: number, end: number, event: MmuNotifyEvent, _owner: number | null): void {
    const dropped =
      event === MmuNotifyEvent.RELEASE
        ? this.table.dropMm(mmId, (aux) => this.residency.free(aux))
        : this.table.invalidate(mmId, start, end);
    if (dropped > 0) {
      const s = this.ctx.stats;
      s.pagesDropped += dropped;
      // One device TLB shootdown per invalidation that dropped something.
      s.tlbFlushes++;
    }
    this.reportBytes();
  }

  copyToDevice(_mmId: number, _va: number, spfn: number, dpfn: number): void {
    if (spfn < 0) this.ctx.dma.zeroDevicePage(dpfn);
    else this.ctx.dma.systemToDevice(spfn, dpfn);
  }

  copyFromDevice(mmId: number, va: number, dpfn: number, spfn: number): void {
    this.ctx.dma.deviceToSystem(dpfn, spfn);
    // A page going home because the CPU wants it (not an eviction) is half of a bounce.
    if (this.options.thrashing && !this.evicting) {
      const aux = this.table.auxOf(mmId, Math.floor(va / BLOCK_BYTES));
      if (aux >= 0) this.residency.noteWentHome(aux);
    }
  }

  unbind(mmId: number): void {
    // The pages stay in device memory (and keep their residency records for eviction).
    this.table.dropMm(mmId, null);
    this.reportBytes();
  }

  release(): void {
    this.table.clear();
    this.residency.clear();
    this.reportBytes();
  }

  translate(mmId: number, va: number, write: boolean): number {
    return this.table.translate(mmId, va, write);
  }

  handleFaults(batch: DeviceFaultBatch): Generator<string, void, void> {
    return this.service.handle(batch);
  }

  *translations(): Iterable<DeviceTranslation> {
    const out: DeviceTranslation[] = [];
    this.table.forEachEntry((mmId, va, e, order) => {
      out.push({
        mmId,
        va,
        pfn: ptePfn(e),
        order,
        writable: (e & PTE_WRITE) !== 0,
        devicePrivate: (e & PTE_DEVICE) !== 0,
        exclusive: (e & PTE_EXCLUSIVE) !== 0,
      });
    });
    yield* out;
  }
}
