import { hex, MmError } from "@hmmkit/mm";

/**
 * An error of the HMM core: an MmError (stable `code`, and the `errno` the kernel's HMM / test
 * driver returns for the same condition: EFAULT, EPERM, EINVAL, EBUSY, ENOENT, ENOMEM).
 */
export class HmmError extends MmError {
  override name = "HmmError";
}

/**
 * A driver callback threw. The message names the device, the driver, the callback and the address
 * (`[driver gpu0] mirrorPte @ 0x7f12_3400_0000: ...`); the original error is the `cause`.
 */
export class DriverError extends HmmError {
  override name = "DriverError";
  constructor(
    readonly device: string,
    readonly driver: string,
    readonly callback: string,
    readonly address: number | null,
    cause: unknown,
  ) {
    const where = address === null ? "" : ` @ ${hex(address)}`;
    const why = cause instanceof Error ? cause.message : String(cause);
    super("EIO", `[driver ${driver} on ${device}] ${callback}${where}: ${why}`, "DRIVER_FAILED", { cause });
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
