import { MmError } from "./errors.js";
import { FramePool } from "./frame-pool.js";
import { reclaimLazyfree } from "./lazyfree.js";
import { type MachineConfig, parseMachineConfig } from "./machine-config.js";
import { Mm } from "./mm.js";
import { Process } from "./process.js";
import { MmStats } from "./stats.js";
import type { DevicePagemapOps, MachineState } from "./types.js";
import { badArgument, checkFunction, checkIntegerIn } from "./validate.js";

export type { MachineConfig } from "./machine-config.js";

/**
 * A simulated machine: physical memory, the processes (address spaces) running on it, the owners
 * of device memory, and the memory manager's counters.
 */
export class Machine implements MachineState {
  readonly config: Readonly<MachineConfig>;
  readonly pool: FramePool;
  readonly stats = new MmStats();
  /** Live address spaces, in creation order. */
  readonly mms = new Set<Mm>();
  private readonly pagemaps: (DevicePagemapOps<Mm> | undefined)[] = [];
  /**
   * @internal Set once mremap has moved a private VMA: anonymous pages may then sit at different
   * addresses in different processes, and reverse-map walks look pages up by linear index.
   */
  anonMoved = false;
  private deferred: (() => void)[] = [];
  private runningDeferred = false;
  private lastMmId = 0;
  private lastPid = 0;
  private lastAnonVma = 0;
  private lastShmem = 0;

  /** A machine with `config` over the defaults; an invalid config is a MachineConfigError (BAD_CONFIG). */
  constructor(config: Partial<MachineConfig> = {}) {
    this.config = parseMachineConfig(config);
    this.pool = new FramePool(this.config.memoryBytes, this.config.contentMode);
    this.pool.reclaim = () => reclaimLazyfree(this);
  }

  /** A new process with an empty address space. */
  createProcess(): Process {
    return new Process(this, ++this.lastPid, this.newMm(), null);
  }

  /** @internal A new empty address space. */
  newMm(): Mm {
    const mm = new Mm(this, ++this.lastMmId);
    this.mms.add(mm);
    return mm;
  }

  /** @internal */
  newPid(): number {
    return ++this.lastPid;
  }

  /** @internal */
  newAnonVmaId(): number {
    return ++this.lastAnonVma;
  }

  /** @internal */
  newShmemId(): number {
    return ++this.lastShmem;
  }

  /**
   * Register the owner of a range of device-private memory; returns its owner id (1..255), which
   * device-private entries carry.
   */
  registerDevicePagemap(ops: DevicePagemapOps<Mm>): number {
    const op = "registerDevicePagemap";
    if (typeof ops !== "object" || ops === null)
      throw badArgument(op, "ops", ops, "a DevicePagemapOps object");
    if (typeof ops.name !== "string") throw badArgument(op, "ops.name", ops.name, "a string");
    for (let id = 1; id < 256; id++) {
      if (this.pagemaps[id] === undefined) {
        this.pagemaps[id] = ops;
        return id;
      }
    }
    throw new MmError(
      "ENOMEM",
      `cannot register device '${ops.name}': 255 device pagemaps already registered`,
    );
  }

  /** Forget a pagemap owner (after all its pages left device memory). */
  unregisterDevicePagemap(owner: number): void {
    checkIntegerIn("unregisterDevicePagemap", "owner", owner, 1, 255);
    this.pagemaps[owner] = undefined;
  }

  /** The pagemap ops of `owner`; throws if none is registered. */
  devicePagemap(owner: number): DevicePagemapOps<Mm> {
    const ops = this.pagemaps[owner];
    if (ops === undefined)
      throw new MmError("EFAULT", `no device pagemap registered for owner ${owner}`, "NO_PAGEMAP");
    return ops;
  }

  /**
   * Run `work` at the next safe point: when the memory operation in progress (a syscall, a CPU
   * fault) has finished. Owners of notifiers use it for work they cannot do inside a callback.
   */
  defer(work: () => void): void {
    checkFunction("defer", "work", work);
    this.deferred.push(work);
  }

  /** @internal Run deferred work; called when a syscall or a CPU fault completes. */
  runDeferred(): void {
    if (this.deferred.length === 0 || this.runningDeferred) return;
    this.runningDeferred = true;
    try {
      while (this.deferred.length > 0) this.deferred.shift()!();
    } finally {
      this.runningDeferred = false;
    }
  }

  /** Frames in use (a leak check after every process exited should see 0). */
  get usedFrames(): number {
    return this.pool.usedFrames;
  }
}
