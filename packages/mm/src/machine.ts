import { DEFAULT_MMAP_BASE } from "./constants.js";
import type { ContentMode } from "./content-store.js";
import type { DevicePagemapOps } from "./device-pagemap.js";
import { MmError } from "./errors.js";
import { FramePool } from "./frame-pool.js";
import { Mm } from "./mm.js";
import { Process } from "./process.js";
import { MmStats } from "./stats.js";

/** Settings of a simulated machine. Defaults are those of a stock x86-64 Linux. */
export interface MachineConfig {
  /** Physical RAM in bytes (whole 2 MiB blocks; block 0 is reserved for the zero pages). */
  memoryBytes: number;
  /** How frame contents are kept; see ContentMode. */
  contentMode: ContentMode;
  /** /sys/kernel/mm/transparent_hugepage/enabled. */
  thp: "always" | "madvise" | "never";
  /**
   * Whether read faults on anonymous memory map the shared zero page. Linux does; some hosts do
   * not (a kernel booted with `pvm_no_zero_page=1` allocates a fresh page on every read fault).
   */
  zeroPage: boolean;
  /** /sys/kernel/mm/transparent_hugepage/use_zero_page (only used when `zeroPage` is true). */
  hugeZeroPage: boolean;
  /** /sys/kernel/mm/fault_around_bytes: read faults in shared mappings map this window. */
  faultAroundBytes: number;
  /** Top of the mmap area (top-down allocation starts below it). */
  mmapBase: number;
}

/** The defaults: 512 MiB of RAM, bytes mode, THP on MADV_HUGEPAGE, zero page on. */
export const DEFAULT_MACHINE_CONFIG: Readonly<MachineConfig> = Object.freeze({
  memoryBytes: 512 * 1024 * 1024,
  contentMode: "bytes",
  thp: "madvise",
  zeroPage: true,
  hugeZeroPage: true,
  faultAroundBytes: 65536,
  mmapBase: DEFAULT_MMAP_BASE,
});

function validate(c: MachineConfig): void {
  const bad = (key: string, why: string) => {
    throw new MmError("EINVAL", `machine config '${key}': ${why}`, "BAD_CONFIG");
  };
  if (c.contentMode !== "bytes" && c.contentMode !== "tag")
    bad("contentMode", `must be "bytes" or "tag", got ${JSON.stringify(c.contentMode)}`);
  if (!["always", "madvise", "never"].includes(c.thp))
    bad("thp", `must be "always", "madvise" or "never", got ${JSON.stringify(c.thp)}`);
  if (typeof c.zeroPage !== "boolean") bad("zeroPage", "must be a boolean");
  if (typeof c.hugeZeroPage !== "boolean") bad("hugeZeroPage", "must be a boolean");
  const fa = c.faultAroundBytes;
  if (!Number.isInteger(fa) || fa < 4096 || fa > 2 * 1024 * 1024 || (fa & (fa - 1)) !== 0) {
    bad("faultAroundBytes", `must be a power of two from 4096 to 2 MiB, got ${fa}`);
  }
  if (!Number.isSafeInteger(c.mmapBase) || c.mmapBase % (2 * 1024 * 1024) !== 0)
    bad("mmapBase", "must be 2 MiB aligned");
}

/**
 * A simulated machine: physical memory, the processes (address spaces) running on it, the owners
 * of device memory, and the memory manager's counters.
 */
export class Machine {
  readonly config: Readonly<MachineConfig>;
  readonly pool: FramePool;
  readonly stats = new MmStats();
  /** Live address spaces, in creation order. */
  readonly mms = new Set<Mm>();
  private readonly pagemaps: (DevicePagemapOps | undefined)[] = [];
  private deferred: (() => void)[] = [];
  private runningDeferred = false;
  private lastMmId = 0;
  private lastPid = 0;
  private lastAnonVma = 0;
  private lastShmem = 0;

  constructor(config: Partial<MachineConfig> = {}) {
    const c = { ...DEFAULT_MACHINE_CONFIG, ...config };
    validate(c);
    this.config = Object.freeze(c);
    this.pool = new FramePool(c.memoryBytes, c.contentMode);
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
  registerDevicePagemap(ops: DevicePagemapOps): number {
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
    this.pagemaps[owner] = undefined;
  }

  /** The pagemap ops of `owner`; throws if none is registered. */
  devicePagemap(owner: number): DevicePagemapOps {
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
