/**
 * Fake device drivers for the core's tests. Each keeps a small mirror (mm id -> virtual page ->
 * frame and flags, like lib/test_hmm.c's xarray), drops every entry an invalidation covers, copies
 * pages with the device's DMA engine, and records every call it gets. Device accesses go through
 * the mirror only (`deviceRead` / `deviceWrite`, like dmirror's READ and WRITE ioctls), so a test
 * that reads data through a fake proves the frames the core reported hold that data.
 */
import { MmuNotifyEvent } from "@hmmkit/mm";

const MMU_NOTIFY_MIGRATE = MmuNotifyEvent.MIGRATE;

import { inject, injectable } from "tsyringe";
import {
  type DeviceConfig,
  type DeviceContext,
  type DeviceFaultBatch,
  type DeviceTranslation,
  deviceFrameResult,
  HMM_API_VERSION,
  HMM_PFN_DEVICE_PRIVATE,
  HMM_PFN_EXCLUSIVE,
  HMM_PFN_WRITE,
  type HmmCore,
  type HmmDriver,
  type HmmPlugin,
  TOKENS,
  TRANSLATE_MISS,
} from "../src/index.js";

export const PAGE = 4096;

/** One mirrored page. */
export interface MirrorEntry {
  pfn: number;
  flags: number;
}

/** One mirror callback as the fake received it (arrays copied). */
export interface MirrorCall {
  cb: "mirrorPte" | "mirrorPmd" | "mirrorPtes";
  mmId: number;
  va: number;
  /** mirrorPte / mirrorPmd: the frame and flags. */
  pfn: number;
  flags: number;
  /** mirrorPtes: page count and copies of the arrays. */
  count: number;
  pfns: number[];
  flagList: number[];
}

/** One invalidate callback. */
export interface InvalidateCall {
  mmId: number;
  start: number;
  end: number;
  event: MmuNotifyEvent;
  owner: number | null;
}

/** One copy callback. */
export interface CopyCall {
  mmId: number;
  va: number;
  spfn: number;
  dpfn: number;
}

/** The part every fake shares: mirror, recording, copies, translations, device access. */
export abstract class MirrorFakeBase implements HmmDriver {
  /** mm id -> virtual page number -> entry. */
  readonly mirror = new Map<number, Map<number, MirrorEntry>>();
  readonly mirrorCalls: MirrorCall[] = [];
  readonly invalidations: InvalidateCall[] = [];
  readonly copiesToDevice: CopyCall[] = [];
  readonly copiesFromDevice: CopyCall[] = [];
  /** mm ids the core unbound the device from, in order. */
  readonly unbound: number[] = [];
  released = 0;

  constructor(
    readonly ctx: DeviceContext,
    readonly config: Readonly<DeviceConfig>,
  ) {}

  /** Forget what was recorded (the mirror stays). */
  clearRecords(): void {
    this.mirrorCalls.length = 0;
    this.invalidations.length = 0;
    this.copiesToDevice.length = 0;
    this.copiesFromDevice.length = 0;
  }

  protected store(mmId: number, va: number, pfn: number, flags: number): void {
    let m = this.mirror.get(mmId);
    if (m === undefined) {
      m = new Map();
      this.mirror.set(mmId, m);
    }
    m.set(va / PAGE, { pfn, flags });
  }

  protected recordPte(mmId: number, va: number, pfn: number, flags: number): void {
    this.mirrorCalls.push({ cb: "mirrorPte", mmId, va, pfn, flags, count: 1, pfns: [], flagList: [] });
    this.store(mmId, va, pfn, flags);
  }

  protected recordPmd(mmId: number, va: number, pfn: number, flags: number): void {
    this.mirrorCalls.push({ cb: "mirrorPmd", mmId, va, pfn, flags, count: 512, pfns: [], flagList: [] });
    for (let i = 0; i < 512; i++) this.store(mmId, va + i * PAGE, pfn + i, flags);
  }

  protected recordPtes(mmId: number, va: number, count: number, pfns: Int32Array, flags: Int32Array): void {
    this.mirrorCalls.push({
      cb: "mirrorPtes",
      mmId,
      va,
      pfn: -1,
      flags: 0,
      count,
      pfns: Array.from(pfns.subarray(0, count)),
      flagList: Array.from(flags.subarray(0, count)),
    });
    for (let i = 0; i < count; i++) this.store(mmId, va + i * PAGE, pfns[i], flags[i]);
  }

  /** dmirror_interval_invalidate: drop every entry in [start, end), whatever the event. */
  invalidate(mmId: number, start: number, end: number, event: MmuNotifyEvent, owner: number | null): void {
    this.invalidations.push({ mmId, start, end, event, owner });
    const m = this.mirror.get(mmId);
    if (m === undefined) return;
    const first = start / PAGE;
    const last = end / PAGE;
    for (const vpn of [...m.keys()]) if (vpn >= first && vpn < last) m.delete(vpn);
  }

  copyToDevice(mmId: number, va: number, spfn: number, dpfn: number): void {
    this.copiesToDevice.push({ mmId, va, spfn, dpfn });
    if (spfn < 0) this.ctx.dma.zeroDevicePage(dpfn);
    else this.ctx.dma.systemToDevice(spfn, dpfn);
  }

  copyFromDevice(mmId: number, va: number, dpfn: number, spfn: number): void {
    this.copiesFromDevice.push({ mmId, va, spfn, dpfn });
    this.ctx.dma.deviceToSystem(dpfn, spfn);
  }

  /** The mirror of `mmId` is closed (dmirror_fops_release destroys its xarray). */
  unbind(mmId: number): void {
    this.unbound.push(mmId);
    this.mirror.delete(mmId);
  }

  release(): void {
    this.released++;
  }

  *translations(): Iterable<DeviceTranslation> {
    for (const [mmId, m] of this.mirror) {
      for (const [vpn, e] of m) {
        yield {
          mmId,
          va: vpn * PAGE,
          pfn: e.pfn,
          order: 0,
          writable: (e.flags & HMM_PFN_WRITE) !== 0,
          devicePrivate: (e.flags & HMM_PFN_DEVICE_PRIVATE) !== 0,
          exclusive: (e.flags & HMM_PFN_EXCLUSIVE) !== 0,
        };
      }
    }
  }

  /** The mirror entry of page `va` in `mmId`, if any. */
  entry(mmId: number, va: number): MirrorEntry | undefined {
    return this.mirror.get(mmId)?.get(Math.floor(va / PAGE));
  }

  /** Pages mirrored for `mmId`. */
  mirrored(mmId: number): number {
    return this.mirror.get(mmId)?.size ?? 0;
  }

  /** Entries flagged EXCLUSIVE. */
  exclusiveEntries(): number {
    let n = 0;
    for (const m of this.mirror.values()) for (const e of m.values()) if (e.flags & HMM_PFN_EXCLUSIVE) n++;
    return n;
  }

  private contentOf(e: MirrorEntry) {
    return e.flags & HMM_PFN_DEVICE_PRIVATE ? this.ctx.memory.content : this.ctx.machine.pool.content;
  }

  /** A device read through the mirror; throws (a device page fault) at the first missing page. */
  deviceRead(mmId: number, va: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    for (let done = 0; done < len; ) {
      const a = va + done;
      const off = a % PAGE;
      const n = Math.min(PAGE - off, len - done);
      const e = this.entry(mmId, a);
      if (e === undefined) throw new Error(`device read: page ${a.toString(16)} is not mirrored`);
      this.contentOf(e).readBytes(e.pfn, off, out, done, n);
      done += n;
    }
    return out;
  }

  /** A device write through the mirror; throws at the first page not mirrored writable. */
  deviceWrite(mmId: number, va: number, data: Uint8Array): void {
    for (let done = 0; done < data.length; ) {
      const a = va + done;
      const off = a % PAGE;
      const n = Math.min(PAGE - off, data.length - done);
      const e = this.entry(mmId, a);
      if (e === undefined || !(e.flags & HMM_PFN_WRITE))
        throw new Error(`device write: page ${a.toString(16)} is not mirrored writable`);
      this.contentOf(e).writeBytes(e.pfn, off, data, done, n);
      done += n;
    }
  }
}

/** Per-PTE and per-PMD callbacks: the full per-pte design. */
@injectable()
export class RecordingFakeDriver extends MirrorFakeBase {
  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
  ) {
    super(ctx, config);
  }
  mirrorPte(mmId: number, va: number, pfn: number, flags: number): void {
    this.recordPte(mmId, va, pfn, flags);
  }
  mirrorPmd(mmId: number, va: number, pfn: number, flags: number): void {
    this.recordPmd(mmId, va, pfn, flags);
  }
}

/** Per-PTE callback only: huge PMDs must arrive as 512 pages. */
@injectable()
export class PteOnlyFakeDriver extends MirrorFakeBase {
  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
  ) {
    super(ctx, config);
  }
  mirrorPte(mmId: number, va: number, pfn: number, flags: number): void {
    this.recordPte(mmId, va, pfn, flags);
  }
}

/** Array callback only. */
@injectable()
export class ArrayFakeDriver extends MirrorFakeBase {
  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
  ) {
    super(ctx, config);
  }
  mirrorPtes(mmId: number, va: number, count: number, pfns: Int32Array, flags: Int32Array): void {
    this.recordPtes(mmId, va, count, pfns, flags);
  }
}

/** Both the per-PTE and the array form (the core picks per-PTE unless told otherwise). */
@injectable()
export class DualFormFakeDriver extends MirrorFakeBase {
  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
  ) {
    super(ctx, config);
  }
  mirrorPte(mmId: number, va: number, pfn: number, flags: number): void {
    this.recordPte(mmId, va, pfn, flags);
  }
  mirrorPtes(mmId: number, va: number, count: number, pfns: Int32Array, flags: Int32Array): void {
    this.recordPtes(mmId, va, count, pfns, flags);
  }
}

/**
 * A driver written like lib/test_hmm.c: it ignores MIGRATE invalidations it caused itself
 * (dmirror_interval_invalidate) and drops a page's translation when the page goes home
 * (dmirror_devmem_fault_alloc_and_copy erases the mirror entry), here in copyFromDevice.
 * `eraseOnCopyBack: false` in its config leaves that erase out.
 */
@injectable()
export class KernelStyleFakeDriver extends MirrorFakeBase {
  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
  ) {
    super(ctx, config);
  }
  mirrorPte(mmId: number, va: number, pfn: number, flags: number): void {
    this.recordPte(mmId, va, pfn, flags);
  }
  override invalidate(
    mmId: number,
    start: number,
    end: number,
    event: MmuNotifyEvent,
    owner: number | null,
  ): void {
    if (event === MMU_NOTIFY_MIGRATE && owner === this.ctx.ownerId) {
      this.invalidations.push({ mmId, start, end, event, owner });
      return;
    }
    super.invalidate(mmId, start, end, event, owner);
  }
  override copyFromDevice(mmId: number, va: number, dpfn: number, spfn: number): void {
    super.copyFromDevice(mmId, va, dpfn, spfn);
    if (this.config.eraseOnCopyBack !== false) this.mirror.get(mmId)?.delete(va / PAGE);
  }
}

/**
 * An array-form driver that translates in place: it overwrites the arrays it is given (as a
 * kernel driver may do with its own hmm_pfns), which the contract allows for scratch buffers.
 */
@injectable()
export class ScribblingFakeDriver extends MirrorFakeBase {
  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
  ) {
    super(ctx, config);
  }
  mirrorPtes(mmId: number, va: number, count: number, pfns: Int32Array, flags: Int32Array): void {
    this.recordPtes(mmId, va, count, pfns, flags);
    for (let i = 0; i < count; i++) {
      pfns[i] = 0x7fff_0000 + i; // "device addresses"
      flags[i] = 0;
    }
  }
}

/**
 * A driver that throws from one callback, chosen by its device config: `throwIn` names the
 * callback, `throwAfter` how many calls of it succeed first (default 0). It has every callback
 * form; `callbackMode: "array"` makes the core use mirrorPtes.
 */
@injectable()
export class ThrowingFakeDriver extends MirrorFakeBase {
  private readonly counts = new Map<string, number>();
  /** The error it threw, once it threw. */
  thrown: Error | null = null;

  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
  ) {
    super(ctx, config);
  }

  protected maybeThrow(cb: string): void {
    if (this.config.throwIn !== cb) return;
    const n = (this.counts.get(cb) ?? 0) + 1;
    this.counts.set(cb, n);
    if (n > ((this.config.throwAfter as number | undefined) ?? 0)) {
      this.thrown = new Error(`fake ${cb} failure #${n}`);
      throw this.thrown;
    }
  }

  mirrorPte(mmId: number, va: number, pfn: number, flags: number): void {
    this.maybeThrow("mirrorPte");
    this.recordPte(mmId, va, pfn, flags);
  }
  mirrorPmd(mmId: number, va: number, pfn: number, flags: number): void {
    this.maybeThrow("mirrorPmd");
    this.recordPmd(mmId, va, pfn, flags);
  }
  mirrorPtes(mmId: number, va: number, count: number, pfns: Int32Array, flags: Int32Array): void {
    this.maybeThrow("mirrorPtes");
    this.recordPtes(mmId, va, count, pfns, flags);
  }
  override invalidate(
    mmId: number,
    start: number,
    end: number,
    event: MmuNotifyEvent,
    owner: number | null,
  ): void {
    this.maybeThrow("invalidate");
    super.invalidate(mmId, start, end, event, owner);
  }
  override copyToDevice(mmId: number, va: number, spfn: number, dpfn: number): void {
    this.maybeThrow("copyToDevice");
    super.copyToDevice(mmId, va, spfn, dpfn);
  }
  override copyFromDevice(mmId: number, va: number, dpfn: number, spfn: number): void {
    this.maybeThrow("copyFromDevice");
    super.copyFromDevice(mmId, va, dpfn, spfn);
  }
  override release(): void {
    this.maybeThrow("release");
    super.release();
  }
  override translations(): Iterable<DeviceTranslation> {
    this.maybeThrow("translations");
    return super.translations();
  }
}

/** Device config keys the fakes read (declared by their plugins; any other key is refused). */
export const FAKE_CONFIG_KEYS = ["throwIn", "throwAfter", "eraseOnCopyBack", "tlbEntries", "vendor", "lane"];

/** A plugin descriptor for a fake driver class. */
export function fakePlugin(driver: HmmPlugin["driver"], name = "recording-fake"): HmmPlugin {
  return { name, apiVersion: HMM_API_VERSION, design: "per-pte", driver, configKeys: FAKE_CONFIG_KEYS };
}

/** What a HostileFakeDriver does in its armed callback: throw, return something, or re-enter. */
export type HostileAct = (drv: HostileFakeDriver, args: readonly number[]) => unknown;

/**
 * A deliberately broken driver: a correct mirror (as RecordingFakeDriver) whose callbacks can be
 * armed with a HostileAct (`arm(callback, act, after)`): after `after` clean calls the act runs
 * inside the callback, before its normal work. What the act returns, the callback returns (a
 * Promise, a thenable); what it throws, the callback throws. Tests use it for unprintable throws,
 * stack overflows, async callbacks, re-entry and DMA misuse.
 */
@injectable()
export class HostileFakeDriver extends MirrorFakeBase {
  private armed: { cb: string; act: HostileAct; after: number; times: number } | null = null;
  private readonly counts = new Map<string, number>();
  /** Calls in which the act ran. */
  acted = 0;

  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
  ) {
    super(ctx, config);
  }

  /** Run `act` in callback `cb` after `after` clean calls, `times` times (default: every call). */
  arm(cb: string, act: HostileAct, after = 0, times = Number.POSITIVE_INFINITY): this {
    this.armed = { cb, act, after, times };
    this.counts.clear();
    return this;
  }

  disarm(): void {
    this.armed = null;
  }

  private act(cb: string, args: readonly number[]): unknown {
    const a = this.armed;
    if (a === null || a.cb !== cb) return undefined;
    const n = (this.counts.get(cb) ?? 0) + 1;
    this.counts.set(cb, n);
    if (n <= a.after || n > a.after + a.times) return undefined;
    this.acted++;
    return a.act(this, args);
  }

  mirrorPte(mmId: number, va: number, pfn: number, flags: number): unknown {
    const r = this.act("mirrorPte", [mmId, va, pfn, flags]);
    this.recordPte(mmId, va, pfn, flags);
    return r;
  }
  mirrorPmd(mmId: number, va: number, pfn: number, flags: number): unknown {
    const r = this.act("mirrorPmd", [mmId, va, pfn, flags]);
    this.recordPmd(mmId, va, pfn, flags);
    return r;
  }
  mirrorPtes(mmId: number, va: number, count: number, pfns: Int32Array, flags: Int32Array): unknown {
    const r = this.act("mirrorPtes", [mmId, va, count]);
    this.recordPtes(mmId, va, count, pfns, flags);
    return r;
  }
  override invalidate(
    mmId: number,
    start: number,
    end: number,
    event: MmuNotifyEvent,
    owner: number | null,
  ): unknown {
    const r = this.act("invalidate", [mmId, start, end, event, owner ?? -1]);
    super.invalidate(mmId, start, end, event, owner);
    return r;
  }
  override copyToDevice(mmId: number, va: number, spfn: number, dpfn: number): unknown {
    const r = this.act("copyToDevice", [mmId, va, spfn, dpfn]);
    super.copyToDevice(mmId, va, spfn, dpfn);
    return r;
  }
  override copyFromDevice(mmId: number, va: number, dpfn: number, spfn: number): unknown {
    const r = this.act("copyFromDevice", [mmId, va, dpfn, spfn]);
    super.copyFromDevice(mmId, va, dpfn, spfn);
    return r;
  }
  override release(): unknown {
    const r = this.act("release", []);
    super.release();
    return r;
  }
  override translations(): Iterable<DeviceTranslation> {
    const r = this.act("translations", []);
    if (r !== undefined) return r as Iterable<DeviceTranslation>;
    return super.translations();
  }
}

/**
 * RecordingFakeDriver plus the device's hardware side: `translate` looks the page up in the mirror
 * (a system pfn, or deviceFrameResult for a device-private entry; a miss when absent or read-only
 * for a write). No handleFaults: the core's default handler services its faults.
 */
@injectable()
export class TranslatingFakeDriver extends RecordingFakeDriver {
  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
  ) {
    super(ctx, config);
  }
  translate(mmId: number, va: number, write: boolean): number {
    return mirrorTranslate(this, mmId, va, write);
  }
}

/** A fake's hardware lookup: its mirror entry for the page, as a translate result. */
function mirrorTranslate(d: MirrorFakeBase, mmId: number, va: number, write: boolean): number {
  const e = d.mirror.get(mmId)?.get(va / PAGE);
  if (e === undefined || (write && (e.flags & HMM_PFN_WRITE) === 0)) return TRANSLATE_MISS;
  return e.flags & HMM_PFN_DEVICE_PRIVATE ? deviceFrameResult(e.pfn) : e.pfn;
}

/** ThrowingFakeDriver with translate (which can throw too: `throwIn: "translate"`). */
@injectable()
export class ThrowingTranslatingFakeDriver extends ThrowingFakeDriver {
  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
  ) {
    super(ctx, config);
  }
  translate(mmId: number, va: number, write: boolean): number {
    this.maybeThrow("translate");
    return mirrorTranslate(this, mmId, va, write);
  }
}

/** A deliberately broken driver: TranslatingFakeDriver that ignores invalidations (keeps stale translations). */
@injectable()
export class StaleTranslatingFakeDriver extends TranslatingFakeDriver {
  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
  ) {
    super(ctx, config);
  }
  override invalidate(): void {}
}

/** A deliberately broken driver: its fault handler services nothing and cancels nothing. */
@injectable()
export class IdleHandlerFakeDriver extends TranslatingFakeDriver {
  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
  ) {
    super(ctx, config);
  }
  handlerCalls = 0;
  handleFaults(_batch: DeviceFaultBatch): void {
    this.handlerCalls++;
  }
}

/**
 * TranslatingFakeDriver with its own fault handler, a step generator: one deviceFaultSteps per
 * distinct page of the batch (so the scheduler can interleave inside it), and every entry at or
 * above the config's `lane` address cancelled with EPERM without asking the core (a driver policy).
 */
@injectable()
export class StepHandlerFakeDriver extends TranslatingFakeDriver {
  readonly batchSizes: number[] = [];
  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
    @inject(TOKENS.HmmCore) private readonly core: HmmCore,
  ) {
    super(ctx, config);
  }
  *handleFaults(batch: DeviceFaultBatch): Generator<string, void, void> {
    this.batchSizes.push(batch.count);
    const dev = this.core.device(this.ctx.name);
    const mm = this.core.mmById(batch.mmId[0])!;
    const seen = new Set<number>();
    const limit = (this.config.lane as number | undefined) ?? Number.POSITIVE_INFINITY;
    for (let i = 0; i < batch.count; i++) {
      const va = batch.va[i];
      if (va >= limit) {
        batch.cancel(i, "EPERM");
        continue;
      }
      if (seen.has(va)) continue;
      seen.add(va);
      yield* this.core.deviceFaultSteps(dev, mm, va, va + PAGE, batch.isWrite(i));
    }
  }
}

/** A deliberately broken driver: its translate calls munmap on the address space (a re-entry). */
@injectable()
export class ReenteringTranslateFakeDriver extends TranslatingFakeDriver {
  caught: unknown = null;
  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
  ) {
    super(ctx, config);
  }
  override translate(mmId: number, va: number, write: boolean): number {
    for (const mm of this.ctx.machine.mms)
      if (mm.id === mmId) {
        try {
          mm.munmap(va, PAGE);
        } catch (e) {
          this.caught = e;
        }
      }
    return super.translate(mmId, va, write);
  }
}

/** A deliberately broken driver: it reports every page it mirrors as exclusive (HMM_PFN_EXCLUSIVE). */
@injectable()
export class ExclusiveClaimingFakeDriver extends RecordingFakeDriver {
  constructor(
    @inject(TOKENS.DeviceContext) ctx: DeviceContext,
    @inject(TOKENS.DeviceConfig) config: DeviceConfig,
  ) {
    super(ctx, config);
  }
  override mirrorPte(mmId: number, va: number, pfn: number, flags: number): void {
    super.mirrorPte(mmId, va, pfn, flags | HMM_PFN_EXCLUSIVE);
  }
}
