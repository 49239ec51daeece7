/**
 * Argument checks at the HMM core's public entries. Every entry checks what it is given before it
 * changes anything, and a bad argument is an HmmError EINVAL (code BAD_ARGUMENT) naming the
 * operation, the argument and the value (addresses in hex). Objects of another system (an Mm or
 * Process of another Machine, a Device of another HmmCore) are refused the same way (code
 * FOREIGN_OBJECT): accepting them would corrupt both systems' refcounts.
 */
import { hex, type Machine, Mm, Process } from "@hmmkit/mm";
import { HmmError } from "./errors.js";

/** A short, safe description of any value for a message (never throws); `address`: numbers in hex. */
export function describeValue(v: unknown, address = false): string {
  try {
    switch (typeof v) {
      case "number":
        if (address && Number.isSafeInteger(v) && v >= 0) return hex(v);
        return String(v);
      case "string":
        return v.length > 40
          ? `${JSON.stringify(v.slice(0, 40))}... (a string)`
          : `${JSON.stringify(v)} (a string)`;
      case "bigint":
        return `${v}n (a bigint)`;
      case "symbol":
        return v.toString();
      case "undefined":
        return "undefined";
      case "boolean":
        return String(v);
      case "function":
        return `a function${v.name ? ` ${v.name}` : ""}`;
      default: {
        if (v === null) return "null";
        if (Array.isArray(v)) return `an array of ${v.length}`;
        const ctor = Object.getPrototypeOf(v)?.constructor?.name;
        return ctor && ctor !== "Object" ? `a ${ctor}` : "an object";
      }
    }
  } catch {
    return "an unprintable value";
  }
}

/** An EINVAL for argument `arg` of `op`. */
export function badArgument(
  op: string,
  arg: string,
  expected: string,
  got: unknown,
  address = false,
): HmmError {
  return new HmmError(
    "EINVAL",
    `${op}: '${arg}' must be ${expected}, got ${describeValue(got, address)}`,
    "BAD_ARGUMENT",
  );
}

/** The mm of `x`, an Mm or Process of `machine`; anything else is refused. */
export function checkMm(machine: Machine, op: string, x: unknown, arg = "mm"): Mm {
  let mm: Mm;
  if (x instanceof Mm) mm = x;
  else if (x instanceof Process) mm = x.mm;
  else throw badArgument(op, arg, "an Mm or a Process", x);
  if (mm.machine !== machine)
    throw new HmmError(
      "EINVAL",
      `${op}: '${arg}' (address space ${mm.id}) belongs to another Machine than this core's: a core works on its own machine's address spaces only`,
      "FOREIGN_OBJECT",
    );
  return mm;
}

/** `v` is a boolean. */
export function checkBoolean(op: string, arg: string, v: unknown): boolean {
  if (typeof v !== "boolean") throw badArgument(op, arg, "a boolean", v);
  return v;
}

/** `v` is an integer in [min, max]. */
export function checkInteger(op: string, arg: string, v: unknown, min: number, max: number): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min || v > max)
    throw badArgument(op, arg, `an integer from ${min} to ${max}`, v);
  return v;
}
