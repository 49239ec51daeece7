import { type ErrnoName, hex, MmError } from "@hmmkit/mm";

/**
 * An error of the HMM core: an MmError (stable `code`, and the `errno` the kernel's HMM / test
 * driver returns for the same condition: EFAULT, EPERM, EINVAL, EBUSY, ENOENT, ENOMEM, EDEADLK).
 */
export class HmmError extends MmError {
  override name = "HmmError";
}

/**
 * A printable description of anything a driver may throw. Never throws itself: a thrown value may
 * be an object without a prototype, an Error whose `message` getter throws, a Symbol, or a Proxy
 * that throws on every trap, and containment must not depend on the driver's manners.
 */
export function describeThrown(cause: unknown): string {
  try {
    if (typeof cause === "symbol") return `a thrown ${cause.toString()}`;
    if (typeof cause !== "object" && typeof cause !== "function") return String(cause);
    if (cause === null) return "null";
  } catch {
    return "an unprintable thrown value";
  }
  let isError = false;
  try {
    isError = cause instanceof Error;
  } catch {
    return "an unprintable thrown object (it throws when inspected)";
  }
  if (isError) {
    try {
      const m = (cause as Error).message;
      if (typeof m === "string") return m;
      return `an Error whose message is ${typeof m}`;
    } catch {
      return "an Error whose message cannot be read";
    }
  }
  try {
    const s = String(cause);
    return typeof s === "string" ? s : "an unprintable thrown object";
  } catch {
    return "an unprintable thrown object (no toString)";
  }
}

/** A breach of the driver contract found by the core rather than thrown by the driver. */
export interface ContractViolation {
  /** What the driver did, and what the contract says instead. */
  readonly why: string;
  /** errno: EDEADLK for a forbidden re-entry, EIO otherwise. */
  readonly errno?: ErrnoName;
  /**
   * Stable code: DRIVER_REENTRY, DRIVER_ASYNC, DRIVER_DMA, DRIVER_LIMIT, DRIVER_STALE (a translation
   * the CPU page table contradicts), DRIVER_FRAME (translate named no frame), DRIVER_STUCK (a fault
   * never serviced); default DRIVER_FAILED.
   */
  readonly code?: string;
}

/**
 * A driver callback threw, or broke the contract (returned a Promise, re-entered the core or mm,
 * misused DMA). The message names the device, the driver, the callback and the address
 * (`[driver gpu on gpu0] mirrorPte @ 0x7f12_3400_0000: ...`); the original error is the `cause`.
 */
export class DriverError extends HmmError {
  override name = "DriverError";
  constructor(
    readonly device: string,
    readonly driver: string,
    readonly callback: string,
    readonly address: number | null,
    cause: unknown,
    /** A contract violation the core detected: what it was, and its errno and code. */
    violation: ContractViolation | null = null,
  ) {
    const where = address === null ? "" : ` @ ${hex(address)}`;
    const why = violation?.why ?? describeThrown(cause);
    super(
      violation?.errno ?? "EIO",
      `[driver ${driver} on ${device}] ${callback}${where}: ${why}`,
      violation?.code ?? "DRIVER_FAILED",
      { cause },
    );
  }
}

/** A plugin failed validation when loaded. The message names the plugin and what is wrong. */
export class PluginError extends HmmError {
  override name = "PluginError";
  constructor(
    readonly plugin: string,
    problems: string[],
  ) {
    super("EINVAL", `plugin ${plugin} is invalid:\n  - ${problems.join("\n  - ")}`, "PLUGIN_INVALID");
  }
}
