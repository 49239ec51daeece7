import { hex, TASK_SIZE } from "./constants.js";

/** errno names the simulated kernel returns, with their Linux numbers. */
export const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  EDEADLK: 35,
  EOVERFLOW: 75,
  EOPNOTSUPP: 95,
} as const;

/** One of the errno names in {@link ERRNO}. */
export type ErrnoName = keyof typeof ERRNO;

/**
 * An error of the simulated memory manager. `code` is a stable identifier; `errno` is the errno
 * name the real kernel returns for the same condition, so callers can match on it.
 */
export class MmError extends Error {
  override name = "MmError";
  constructor(
    readonly errno: ErrnoName,
    message: string,
    readonly code: string = errno,
    options?: { cause?: unknown },
  ) {
    super(`${errno}: ${message}`, options);
  }
}

/** Physical memory is exhausted: no frame (or no huge frame where one is required) is free. */
export class OutOfMemoryError extends MmError {
  override name = "OutOfMemoryError";
  constructor(what: string, totalFrames: number, freeFrames: number) {
    super(
      "ENOMEM",
      `out of memory allocating ${what}: ${freeFrames} of ${totalFrames} frames free; ` +
        "raise MachineConfig.memoryBytes or unmap memory first",
      "OUT_OF_MEMORY",
    );
  }
}

/** A CPU access the hardware would answer with SIGSEGV: no VMA, or the VMA forbids the access. */
export class SegvError extends MmError {
  override name = "SegvError";
  constructor(
    readonly address: number,
    readonly reason: "no-vma" | "access",
    access: "read" | "write",
  ) {
    super("EFAULT", `SIGSEGV on ${access} at ${hex(address)}: ${segvWhy(address, reason)}`, "SIGSEGV");
  }
}

function segvWhy(address: number, reason: "no-vma" | "access"): string {
  if (reason === "access") return "the mapping does not permit this access";
  if (address >= TASK_SIZE) return `outside user space (TASK_SIZE is ${hex(TASK_SIZE)})`;
  return "no mapping there";
}
