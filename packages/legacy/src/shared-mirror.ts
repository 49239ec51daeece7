import { type Device, type DeviceContext, type HmmCore, HmmError } from "@hmmkit/core";
import type { SharedMirrorDriver, SharedMirrorPlugin } from "./contract.js";
import { HmmEtype } from "./etype.js";
import { HmmPt } from "./hmm-pt.js";
import { HmmMirror } from "./mirror.js";
import type { LegacyOptions } from "./options.js";
import type { LegacyCounters, LegacyStats } from "./stats.js";
import type { FaultMirror, MirrorHost, Mm } from "./types.js";

const ALL_END = 2 ** 47 - 4096;

/** The directory trees shared per address space, per core (sharedDirectories). */
const sharedTrees = new WeakMap<HmmCore, Map<number, { pt: HmmPt; users: number }>>();

/**
 * One shared-mirror device, as HMM v12's common code sees it (struct hmm_device and its
 * mirrors): the driver, its hmm_mirror per address space (each with its hmm_pt), the options and
 * the counters. Returned by attachSharedMirror; injected into the driver as
 * LEGACY_TOKENS.SharedMirror.
 */
export class SharedMirror implements MirrorHost {
  /** Mirrors by address space id (live and killed ones; see HmmMirror.hmm). */
  readonly mirrors = new Map<number, HmmMirror>();
  readonly counters: LegacyCounters = {
    mirrorFaults: 0,
    enoentFaults: 0,
    eagainRetries: 0,
    updates: 0,
    backoffs: 0,
    dirtyPages: 0,
    copyFromDeviceViaHmmPt: 0,
    copyFromDeviceUnmirrored: 0,
    driverTableBytes: 0,
  };
  /** The driver (set once built). */
  driver!: SharedMirrorDriver;
  /** The core's device this layer registered (set once attached). */
  device!: Device;
  /** The device's context (set when the core builds the device). */
  context!: DeviceContext;

  constructor(
    readonly core: HmmCore,
    readonly plugin: SharedMirrorPlugin,
    readonly options: LegacyOptions,
  ) {}

  /** The device's pagemap owner id. */
  get ownerId(): number {
    return this.context.ownerId;
  }

  /**
   * The mirror of address space `mmId`: the existing one (live or killed), or a new one
   * registered now (hmm_mirror_register) if the device never mirrored it.
   */
  mirror(mmId: number): HmmMirror {
    const m = this.mirrors.get(mmId);
    if (m !== undefined) return m;
    const mm = this.core.mmById(mmId);
    if (mm === undefined)
      throw new HmmError(
        "ENOENT",
        `SharedMirror.mirror: device ${this.context.name} has no mirror of address space ${String(mmId)}, and no live address space has that id`,
        "BAD_ARGUMENT",
      );
    return this.register(mm);
  }

  /**
   * hmm_mirror_register: mirror `mm` (a live mirror of it is returned as is; a killed one is
   * replaced by a new one).
   */
  register(mmLike: Mm | { readonly mm: Mm }): HmmMirror {
    const mm = this.mmOf("register", mmLike);
    const old = this.mirrors.get(mm.id);
    if (old !== undefined && old.hmm !== null) return old;
    let pt: HmmPt;
    if (this.options.sharedDirectories) {
      let trees = sharedTrees.get(this.core);
      if (trees === undefined) {
        trees = new Map();
        sharedTrees.set(this.core, trees);
      }
      let t = trees.get(mm.id);
      if (t === undefined) {
        t = { pt: new HmmPt({ delayedPruning: this.options.delayedPruning }), users: 0 };
        trees.set(mm.id, t);
      }
      t.users++;
      pt = t.pt;
    } else pt = new HmmPt({ delayedPruning: this.options.delayedPruning });
    const m = new HmmMirror(this, mm, pt);
    this.mirrors.set(mm.id, m);
    return m;
  }

  /** hmm_mirror_unregister: kill the mirror of `mm` (everything unmapped; later faults -ENODEV). */
  unregister(mmLike: Mm | { readonly mm: Mm }): void {
    const mm = this.mmOf("unregister", mmLike);
    const m = this.mirrors.get(mm.id);
    if (m !== undefined) this.kill(m, true);
  }

  /** The address space of `x` (an Mm or a Process of this core's machine), else HmmError EINVAL. */
  private mmOf(op: string, x: unknown): Mm {
    const mm = typeof x === "object" && x !== null && "mm" in x ? (x as { mm: unknown }).mm : x;
    if (typeof mm !== "object" || mm === null || !this.core.machine.mms.has(mm as Mm))
      throw new HmmError(
        "EINVAL",
        `SharedMirror.${op}: 'mm' must be a live address space (Mm or Process) of this core's machine, got ${mm === null ? "null" : typeof mm}`,
        "BAD_ARGUMENT",
      );
    return mm as Mm;
  }

  /**
   * hmm_mirror_kill: tell the driver everything is unmapped (HMM_MUNMAP over all of user space),
   * clear the mirror's hmm_pt (a shared tree keeps the other devices' entries) and detach it.
   */
  kill(m: HmmMirror, tellDriver: boolean): void {
    if (m.hmm === null) return;
    if (tellDriver) {
      this.counters.updates++;
      this.driver.update(m, { start: 0, end: ALL_END, etype: HmmEtype.HMM_MUNMAP });
    }
    const mmId = m.mmId;
    const shared = this.options.sharedDirectories ? sharedTrees.get(this.core)?.get(mmId) : undefined;
    if (shared === undefined) m.updatePt(0, ALL_END, HmmEtype.HMM_MUNMAP, -1);
    else if (--shared.users === 0) {
      m.updatePt(0, ALL_END, HmmEtype.HMM_MUNMAP, -1);
      m.pt.flushDelayed();
      sharedTrees.get(this.core)!.delete(mmId);
    }
    if (shared === undefined) m.pt.flushDelayed();
    m.hmm = null;
  }

  /** The driver's update for a device fault event on [start, end) (from hmm_mirror_fault). */
  update(m: FaultMirror, start: number, end: number, write: boolean): number {
    this.counters.updates++;
    // Every FaultMirror of a SharedMirror is one of its HmmMirrors.
    const r = this.driver.update(m as HmmMirror, { start, end, etype: HmmMirror.faultEtype(write) });
    return typeof r === "number" ? r : 0;
  }

  /** The distinct hmm_pt trees of this device's live mirrors. */
  tables(): HmmPt[] {
    const s = new Set<HmmPt>();
    for (const m of this.mirrors.values()) if (m.hmm !== null) s.add(m.pt);
    return [...s];
  }

  /** Bytes of this device's hmm_pt trees (a tree shared with other devices counted in full). */
  sharedBytes(): number {
    let b = 0;
    for (const pt of this.tables()) b += pt.bytes;
    return b;
  }

  /** Every counter: the layer's own, its tables' (summed) and the memory figures. */
  stats(): LegacyStats {
    const out: Record<string, number> = { ...this.counters };
    let bytes = 0;
    let leaf = 0;
    let dir = 0;
    for (const pt of this.tables()) {
      bytes += pt.bytes;
      leaf += pt.leafBytes;
      dir += pt.directoryBytes;
    }
    const sums: Record<string, number> = {};
    for (const m of new Set([...this.mirrors.values()].map((x) => x.pt))) {
      for (const [k, v] of Object.entries(m.stats.snapshot())) sums[k] = (sums[k] ?? 0) + v;
    }
    Object.assign(out, sums);
    out.sharedMirrorBytes = bytes;
    out.sharedMirrorLeafBytes = leaf;
    out.sharedMirrorDirectoryBytes = dir;
    return out as LegacyStats;
  }
}

/**
 * Bytes of every hmm_pt tree of the shared-mirror devices given, each tree counted once (trees
 * shared with `sharedDirectories` are not counted per device).
 */
export function sharedMirrorBytes(devices: Iterable<SharedMirror>): number {
  const s = new Set<HmmPt>();
  for (const d of devices) for (const pt of d.tables()) s.add(pt);
  let b = 0;
  for (const pt of s) b += pt.bytes;
  return b;
}
