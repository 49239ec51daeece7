/**
 * The command line: workloads (kinds or full spec strings), `--size`, `--seed`, `--content`,
 * `--designs`. Bad input is a UsageError: its message says what was wrong; the command prints it
 * and exits with code 2.
 */
import {
  formatBinarySize,
  parseBinarySize,
  parseWorkloadSpec,
  WORKLOAD_KINDS,
  type WorkloadKind,
} from "@hmmkit/workloads";
import { DESIGNS } from "./designs.js";

/** Bad command-line input. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** What to run. */
export interface CompareArgs {
  /** Normalized spec strings, in the order given. */
  readonly specs: readonly string[];
  readonly seed: number;
  readonly contentMode: "tag" | "bytes";
  /** Names of the designs to compare, in DESIGNS order. */
  readonly designs: readonly string[];
  readonly help: boolean;
}

/** Kinds run when none is given. */
export const DEFAULT_KINDS: readonly WorkloadKind[] = ["stream", "random", "pingpong", "thp"];
/** Buffer size of a kind given without one (thp: at least one 2 MiB page). */
export const DEFAULT_SIZE = 1024 * 1024;

export const USAGE = `usage: compare-designs [workload ...] [--size=SIZE] [--seed=N] [--content=tag|bytes] [--designs=a,b]

  workload     a kind (${Object.keys(WORKLOAD_KINDS).join(", ")}) or a full spec
               (stream:size=4MiB,passes=2,write=0.5); default: ${DEFAULT_KINDS.join(" ")}
  --size       buffer size of the kinds given without a size key, with a binary unit
               (default 1MiB; thp at least 2MiB; oversub has no size: it follows device memory)
  --seed       the workloads' seed, an integer from 0 to 4294967295 (default 1)
  --content    tag (default) or bytes: how the machine keeps page contents
  --designs    which designs to compare (default all: ${DESIGNS.map((d) => d.name).join(", ")})`;

function optionValue(arg: string, name: string): string {
  const v = arg.slice(name.length + 1);
  if (v === "") throw new UsageError(`${name} needs a value (${name}=...)`);
  return v;
}

/** Parse the arguments (without node and the script). Throws UsageError. */
export function parseArgs(argv: readonly string[]): CompareArgs {
  let size: number | null = null;
  let seed = 1;
  let contentMode: "tag" | "bytes" = "tag";
  let designs = DESIGNS.map((d) => d.name);
  let help = false;
  const workloads: string[] = [];
  for (const arg of argv) {
    // A lone `--` (which `pnpm start -- ...` passes through) means nothing here: no workload starts with "-".
    if (arg === "--") continue;
    if (arg === "--help" || arg === "-h") help = true;
    else if (arg.startsWith("--size=")) {
      const text = optionValue(arg, "--size");
      size = parseBinarySize(text);
      if (size === null || size <= 0)
        throw new UsageError(`--size: '${text}' is not a size (an integer with a binary unit, e.g. 4MiB)`);
    } else if (arg.startsWith("--seed=")) {
      const text = optionValue(arg, "--seed");
      seed = Number(text);
      if (!/^\d+$/.test(text) || seed > 0xffff_ffff)
        throw new UsageError(`--seed: '${text}' is not an integer from 0 to 4294967295`);
    } else if (arg.startsWith("--content=")) {
      const text = optionValue(arg, "--content");
      if (text !== "tag" && text !== "bytes")
        throw new UsageError(`--content: '${text}' is not tag or bytes`);
      contentMode = text;
    } else if (arg.startsWith("--designs=")) {
      const names = optionValue(arg, "--designs").split(",");
      for (const n of names)
        if (!DESIGNS.some((d) => d.name === n))
          throw new UsageError(
            `--designs: unknown design '${n}' (known: ${DESIGNS.map((d) => d.name).join(", ")})`,
          );
      designs = DESIGNS.map((d) => d.name).filter((n) => names.includes(n));
    } else if (arg.startsWith("-")) throw new UsageError(`unknown option '${arg}'`);
    else workloads.push(arg);
  }
  const specs = (workloads.length > 0 ? workloads : DEFAULT_KINDS).map((w) => specFor(w, size));
  return { specs, seed, contentMode, designs, help };
}

/** The normalized spec for a workload argument; a bare kind (or one without size) gets `size`. */
function specFor(text: string, size: number | null): string {
  try {
    const parsed = parseWorkloadSpec(text);
    const keys = WORKLOAD_KINDS[parsed.kind].keys as Record<string, unknown>;
    if (!("size" in keys) || /(^|[:,])\s*size\s*=/.test(text)) return parsed.text;
    const bytes = size ?? (parsed.kind === "thp" ? 2 * DEFAULT_SIZE : DEFAULT_SIZE);
    const withSize = `${parsed.kind}:${text.includes(":") ? `${text.slice(text.indexOf(":") + 1)},` : ""}size=${formatBinarySize(bytes)}`;
    return parseWorkloadSpec(withSize).text;
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
}
