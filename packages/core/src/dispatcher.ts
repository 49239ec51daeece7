import type { Machine, MmuNotifyEvent } from "@hmmkit/mm";
import { asyncReturn, hasIterator, isStepGenerator, isThenable } from "./callback-returns.js";
import { type CallbackHolder, type CallbackScope, HELD, scopeOf } from "./callback-scope.js";
import type { CallbackMode, DeviceTranslation, HmmDriver } from "./contract.js";
import type { DeviceFaultBatch } from "./device-access.js";
import { type ContractViolation, DriverError, HmmError } from "./errors.js";
import { type PteLoop, PteLoopState, pteLoopFor } from "./pte-loop.js";
import type { DeviceStats } from "./stats.js";

/** How the core reports pages to a driver. */

/** The copy a copy callback is asked to make: the only DMA it may do. */
const NO_COPY = -2;

/**
 * The one place that calls a driver. It counts calls, routes pages to the callback form the
 * driver uses, and turns a throw (of any value) into a DriverError naming device, driver,
 * callback and address; the first failure is handed to `onFailure` (the core's fault
 * containment) and every later call is skipped. It also enforces the parts of the contract a
 * driver can break without throwing: a callback returning a thenable (callbacks are synchronous),
 * a re-entry into mm or the core from inside a callback (EDEADLK), DMA outside the copy in
 * progress, and an endless `translations`. Hot loops keep the try/catch outside the per-page loop
 * and the call site monomorphic (same driver, same argument shape).
 */
export class DriverDispatcher implements CallbackHolder {
  failure: DriverError | null = null;
  private readonly pfnScratch = new Int32Array(512);
  private readonly flagScratch = new Int32Array(512);
  private readonly scope: CallbackScope;
  /** The guarded callback running now, or null. */
  private callback: string | null = null;
  /** A breach found while the current callback ran (reported when it returns or throws). */
  private violation: { v: ContractViolation; cause: unknown } | null = null;
  /** The copy in progress: [system frame, device frame], NO_COPY outside a copy callback. */
  private copySpfn = NO_COPY;
  private copyDpfn = NO_COPY;
  private copyToDev = false;
  /** The per-PTE loop compiled for this driver's class, and its state. */
  private readonly pteLoop: PteLoop;
  private readonly pteState = new PteLoopState();

  constructor(
    readonly deviceName: string,
    readonly driverName: string,
    readonly driver: HmmDriver,
    readonly mode: CallbackMode,
    /** Whether whole PMDs go to `mirrorPmd`. */
    readonly pmdCallback: boolean,
    readonly stats: DeviceStats,
    private readonly onFailure: (err: DriverError) => void,
    readonly machine: Machine,
    /** The most translations the driver can legitimately hold now (see {@link translations}). */
    private readonly maxTranslations: () => number = () => Number.MAX_SAFE_INTEGER,
  ) {
    this.scope = scopeOf(machine);
    this.pteLoop = pteLoopFor(driver);
  }

  /** True once the driver has failed. */
  get failed(): boolean {
    return this.failure !== null;
  }

  /** Record the failure (once) and hand it to the core's containment. */
  private fail(err: DriverError): void {
    if (this.failure !== null) return;
    this.failure = err;
    this.stats.driverFailures++;
    this.onFailure(err);
  }

  /**
   * The DriverError for a failure of `callback`. Never throws: describing a thrown value runs the
   * driver's code (getters, toString), which may throw anything or run out of stack.
   */
  private driverError(
    callback: string,
    address: number | null,
    cause: unknown,
    v: ContractViolation | null,
  ): DriverError {
    try {
      return new DriverError(this.deviceName, this.driverName, callback, address, cause, v);
    } catch {
      return new DriverError(this.deviceName, this.driverName, callback, null, undefined, {
        why: "failed, and the error could not be described",
      });
    }
  }

  /** Enter a guarded callback; returns the callback it interrupts (the scope's previous holder). */
  private enter(callback: string): CallbackHolder | null {
    const prev = this.scope.running;
    this.scope.running = this;
    this.callback = callback;
    this.violation = null;
    return prev;
  }

  private leave(prev: CallbackHolder | null): void {
    this.scope.running = prev;
    this.callback = null;
  }

  /**
   * After a callback returned `ret` (or threw `thrown`): leave its scope, and fail the device for
   * a breach found meanwhile, a thenable return, or the throw. The failure is worked out while
   * the scope still holds (a thenable's `then` and a thrown value's getters are driver code and
   * stay guarded), the containment runs after. True if the callback succeeded.
   */
  private settle(
    prev: CallbackHolder | null,
    callback: string,
    address: number | null,
    ret: unknown,
    threw: boolean,
    thrown: unknown,
  ): boolean {
    let err: DriverError | null = null;
    const viol = this.violation;
    this.violation = null;
    if (viol !== null) err = this.driverError(callback, address, viol.cause, viol.v);
    else if (threw) err = this.driverError(callback, address, thrown, null);
    else if (ret !== undefined && ret !== null) {
      const why = asyncReturn(ret);
      if (why !== null)
        err = this.driverError(callback, address, ret, {
          why: `${why}; driver callbacks must be synchronous (finish the work before returning: the core does not wait, so the result would be lost)`,
          code: "DRIVER_ASYNC",
        });
    }
    this.leave(prev);
    if (err === null) return true;
    this.fail(err);
    return false;
  }

  /**
   * Refuse `op` called from inside the running callback: record the breach (the device fails when
   * the callback returns, even if the driver catches the error) and throw an HmmError EDEADLK.
   */
  refuse(op: string): never {
    const cb = this.callback ?? "a";
    const why = `${op} from inside ${cb}: the kernel runs ${cb} under ${HELD[cb] ?? "the driver's locks"}, so this would deadlock (EDEADLK); do it after the callback has returned`;
    const err = new HmmError(
      "EDEADLK",
      `[driver ${this.driverName} on ${this.deviceName}] ${why}`,
      "DRIVER_REENTRY",
    );
    this.violation ??= { v: { why, errno: "EDEADLK", code: "DRIVER_REENTRY" }, cause: err };
    throw err;
  }

  /** Record a DMA breach and throw its error. */
  private refuseDma(why: string): never {
    const err = new HmmError("EIO", `[driver ${this.driverName} on ${this.deviceName}] ${why}`, "DRIVER_DMA");
    this.violation ??= { v: { why, code: "DRIVER_DMA" }, cause: err };
    throw err;
  }

  /**
   * Check a DMA request against the copy in progress: `spfn`/`dpfn` must be integers in range and
   * exactly the frames the running copy callback was given (-1 for "no system frame": a zero
   * fill). Throws (failing the device when the callback returns) otherwise.
   */
  checkDma(
    op: "systemToDevice" | "deviceToSystem" | "zeroDevicePage",
    spfn: number,
    dpfn: number,
    systemFrames: number,
    deviceFrames: number,
  ): void {
    const what = `DMA ${op}(${op === "zeroDevicePage" ? dpfn : op === "systemToDevice" ? `${spfn}, ${dpfn}` : `${dpfn}, ${spfn}`})`;
    if (this.copySpfn === NO_COPY)
      this.refuseDma(
        `${what} outside a copy callback: the DMA engine only runs inside copyToDevice and copyFromDevice`,
      );
    if (op !== "zeroDevicePage" && (!Number.isInteger(spfn) || spfn < 0 || spfn >= systemFrames))
      this.refuseDma(
        `${what}: system pfn ${String(spfn)} is not a frame of this machine (0..${systemFrames - 1})`,
      );
    if (!Number.isInteger(dpfn) || dpfn < 0 || dpfn >= deviceFrames)
      this.refuseDma(
        `${what}: device pfn ${String(dpfn)} is not a frame of this device (0..${deviceFrames - 1})`,
      );
    const toDev = op !== "deviceToSystem";
    const ok =
      toDev === this.copyToDev &&
      dpfn === this.copyDpfn &&
      (op === "zeroDevicePage" || spfn === this.copySpfn);
    if (!ok) {
      const given = this.copyToDev
        ? `copyToDevice was given spfn ${this.copySpfn}, dpfn ${this.copyDpfn}`
        : `copyFromDevice was given dpfn ${this.copyDpfn}, spfn ${this.copySpfn}`;
      this.refuseDma(
        `${what} does not match the migration in progress (${given}): a copy may only write the frame it was given`,
      );
    }
  }

  /**
   * Report `count` pages from `va`: page i has frame `pfns[pfnOff + i]` and HMM flags
   * `flags[flagOff + i]`. False if the driver failed.
   */
  mirrorRange(
    mmId: number,
    va: number,
    count: number,
    pfns: Int32Array,
    pfnOff: number,
    flags: Int32Array,
    flagOff: number,
  ): boolean {
    if (this.failure !== null) return false;
    const d = this.driver;
    const cb = this.mode === "array" ? "mirrorPtes" : "mirrorPte";
    let cur = va;
    let ret: unknown;
    let threw = false;
    let thrown: unknown;
    const prev = this.enter(cb);
    try {
      if (this.mode === "array") {
        // The driver gets copies in the dispatcher's scratch buffers, never a view of the caller's
        // arrays (for a device fault, `pfns` is the CPU page table itself): a driver that
        // translates in place must not be able to change CPU state. `count` is at most 512.
        const p = this.pfnScratch;
        const f = this.flagScratch;
        if (p !== pfns) p.set(pfns.subarray(pfnOff, pfnOff + count));
        if (f !== flags) f.set(flags.subarray(flagOff, flagOff + count));
        this.stats.arrayCallbacks++;
        ret = d.mirrorPtes!(mmId, va, count, p.subarray(0, count), f.subarray(0, count));
      } else {
        const out = this.pteState;
        out.threw = false;
        // The loop reads the breach slot (`violation`) through its own narrow view of this object.
        const host = this as unknown as { readonly violation: unknown };
        this.pteLoop(host, isThenable, d, mmId, va, count, pfns, pfnOff, flags, flagOff, out);
        this.stats.pteCallbacks += out.i;
        cur = out.cur;
        ret = out.ret;
        out.ret = undefined;
        if (out.threw) {
          threw = true;
          thrown = out.thrown;
          out.thrown = undefined;
        }
      }
    } catch (e) {
      threw = true;
      thrown = e;
    }
    return this.settle(prev, cb, cur, ret, threw, thrown);
  }

  /** Report a whole huge PMD at `va` (2 MiB aligned) mapping `pfn`..`pfn + 511` with `flags` (order 9 set). */
  mirrorPmd(mmId: number, va: number, pfn: number, flags: number): boolean {
    if (this.failure !== null) return false;
    if (this.pmdCallback) {
      let ret: unknown;
      let threw = false;
      let thrown: unknown;
      const prev = this.enter("mirrorPmd");
      try {
        this.stats.pmdCallbacks++;
        ret = this.driver.mirrorPmd!(mmId, va, pfn, flags);
      } catch (e) {
        threw = true;
        thrown = e;
      }
      return this.settle(prev, "mirrorPmd", va, ret, threw, thrown);
    }
    const p = this.pfnScratch;
    const f = this.flagScratch;
    for (let i = 0; i < 512; i++) {
      p[i] = pfn + i;
      f[i] = flags;
    }
    return this.mirrorRange(mmId, va, 512, p, 0, f, 0);
  }

  /** Deliver an invalidation. False if the driver failed (its translations are then void anyway). */
  invalidate(mmId: number, start: number, end: number, event: MmuNotifyEvent, owner: number | null): boolean {
    if (this.failure !== null) return false;
    let ret: unknown;
    let threw = false;
    let thrown: unknown;
    const prev = this.enter("invalidate");
    try {
      this.stats.invalidations++;
      ret = this.driver.invalidate(mmId, start, end, event, owner);
    } catch (e) {
      threw = true;
      thrown = e;
    }
    return this.settle(prev, "invalidate", start, ret, threw, thrown);
  }

  /** Ask the driver to copy a page to device memory. False if it failed. */
  copyToDevice(mmId: number, va: number, spfn: number, dpfn: number): boolean {
    return this.copy(true, mmId, va, spfn, dpfn);
  }

  /** Ask the driver to copy a page back to system memory. False if it failed. */
  copyFromDevice(mmId: number, va: number, dpfn: number, spfn: number): boolean {
    return this.copy(false, mmId, va, spfn, dpfn);
  }

  private copy(toDev: boolean, mmId: number, va: number, spfn: number, dpfn: number): boolean {
    if (this.failure !== null) return false;
    const cb = toDev ? "copyToDevice" : "copyFromDevice";
    let ret: unknown;
    let threw = false;
    let thrown: unknown;
    const prev = this.enter(cb);
    this.copyToDev = toDev;
    this.copySpfn = spfn;
    this.copyDpfn = dpfn;
    try {
      ret = toDev
        ? this.driver.copyToDevice(mmId, va, spfn, dpfn)
        : this.driver.copyFromDevice(mmId, va, dpfn, spfn);
    } catch (e) {
      threw = true;
      thrown = e;
    }
    this.copySpfn = NO_COPY;
    this.copyDpfn = NO_COPY;
    return this.settle(prev, cb, va, ret, threw, thrown);
  }

  /**
   * The driver's translations (empty once it failed: its state is discarded). A driver that
   * yields more than `maxTranslations()` (more than its address spaces could map) fails.
   */
  translations(): DeviceTranslation[] {
    if (this.failure !== null) return [];
    const out: DeviceTranslation[] = [];
    let threw = false;
    let thrown: unknown;
    let ret: unknown;
    const prev = this.enter("translations");
    try {
      const it = this.driver.translations();
      if (asyncReturn(it) !== null && !hasIterator(it)) ret = it;
      else {
        const max = this.maxTranslations();
        for (const t of it) {
          if (out.length >= max) {
            this.violation ??= {
              v: {
                why: `yielded more than ${max} translations, more than its address spaces can map (an endless or corrupt iterator)`,
                code: "DRIVER_LIMIT",
              },
              cause: undefined,
            };
            break;
          }
          out.push(t);
        }
      }
    } catch (e) {
      threw = true;
      thrown = e;
    }
    return this.settle(prev, "translations", null, ret, threw, thrown) ? out : [];
  }

  /** Tell the driver it no longer mirrors `mmId` (HmmCore.unbind). A throw fails the device. */
  unbind(mmId: number): void {
    if (this.failure !== null || typeof this.driver.unbind !== "function") return;
    let ret: unknown;
    let threw = false;
    let thrown: unknown;
    const prev = this.enter("unbind");
    try {
      ret = this.driver.unbind(mmId);
    } catch (e) {
      threw = true;
      thrown = e;
    }
    this.settle(prev, "unbind", null, ret, threw, thrown);
  }

  /**
   * Enter the `translate` scope for a run of hot calls (the caller calls `driver.translate`
   * directly, inside one try/catch, then {@link endTranslate}). Returns the interrupted holder.
   */
  beginTranslate(): CallbackHolder | null {
    return this.enter("translate");
  }

  /** Leave the `translate` scope; fails the device for a throw or a breach. True if all went well. */
  endTranslate(prev: CallbackHolder | null, va: number, threw: boolean, thrown: unknown): boolean {
    return this.settle(prev, "translate", va, undefined, threw, thrown);
  }

  /**
   * Fail the device for a breach the core found itself (a stale translation, a frame out of
   * range, a fault never serviced), naming `callback` and `address`.
   */
  breach(callback: string, address: number | null, v: ContractViolation): void {
    if (this.failure !== null) return;
    this.fail(this.driverError(callback, address, undefined, v));
  }

  /**
   * Hand a fault batch to the driver's handleFaults. It runs with nothing held (core operations
   * are allowed). Returns the step generator the driver returned (run it with
   * {@link stepFaultHandler}), null when it returned nothing, or false if the driver failed.
   */
  handleFaults(batch: DeviceFaultBatch): Iterator<string, void, void> | null | false {
    if (this.failure !== null) return false;
    let ret: unknown;
    let threw = false;
    let thrown: unknown;
    const prev = this.scope.running;
    this.violation = null;
    try {
      this.stats.faultBatches++;
      ret = this.driver.handleFaults!(batch);
    } catch (e) {
      threw = true;
      thrown = e;
    }
    const va = batch.count > 0 ? batch.va[0] : null;
    if (!threw && isStepGenerator(ret))
      return this.settle(prev, "handleFaults", va, undefined, false, null) ? ret : false;
    return this.settle(prev, "handleFaults", va, ret, threw, thrown) ? null : false;
  }

  /** One step of a fault handler's generator: the point it yielded, "" when done, or false if it failed. */
  stepFaultHandler(it: Iterator<string, void, void>): string | false {
    if (this.failure !== null) return false;
    let r: IteratorResult<string, void> | undefined;
    let threw = false;
    let thrown: unknown;
    const prev = this.scope.running;
    this.violation = null;
    try {
      r = it.next();
    } catch (e) {
      threw = true;
      thrown = e;
    }
    if (!this.settle(prev, "handleFaults", null, undefined, threw, thrown)) return false;
    if (r === undefined || r.done === true) return "";
    return typeof r.value === "string" ? r.value : "driver:fault-handler";
  }

  /**
   * Tell the driver the device is going away. It runs with no lock held (the device is already
   * detached, so operations on it give ENODEV). A throw here is recorded but changes nothing else.
   */
  release(): void {
    if (this.failure !== null || typeof this.driver.release !== "function") return;
    let ret: unknown;
    let threw = false;
    let thrown: unknown;
    const prev = this.scope.running;
    this.violation = null;
    try {
      ret = this.driver.release();
    } catch (e) {
      threw = true;
      thrown = e;
    }
    this.settle(prev, "release", null, ret, threw, thrown);
  }
}
