import { z } from "zod";
import { DEFAULT_MMAP_BASE, HPAGE_PMD_SIZE, hex, MMAP_MIN_ADDR, PAGE_SIZE, TASK_SIZE } from "./constants.js";
import type { ContentMode } from "./content-store.js";
import { MmError } from "./errors.js";
import { describeValue } from "./validate.js";

/** Settings of a simulated machine. Defaults are those of a stock x86-64 Linux. */
export interface MachineConfig {
  /**
   * Physical RAM in bytes: a multiple of 2 MiB from 4 MiB to {@link MAX_MEMORY_BYTES} (block 0 is
   * reserved for the zero pages).
   */
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
  /** Top of the mmap area (top-down allocation starts below it); 2 MiB aligned, at most TASK_SIZE. */
  mmapBase: number;
  /**
   * vm.mmap_min_addr: the lowest address mmap places or accepts. MAP_FIXED below it is EPERM, as
   * for a process without CAP_SYS_RAWIO. Page aligned, below `mmapBase`.
   */
  mmapMinAddr: number;
  /** vm.max_map_count: the most VMAs one address space may have (mmap and splits give ENOMEM). */
  maxMapCount: number;
}

/** The largest `memoryBytes` (256 GiB): per-frame metadata is about 21 bytes in typed arrays. */
export const MAX_MEMORY_BYTES = 256 * 1024 ** 3;

/** Linux's DEFAULT_MAX_MAP_COUNT (USHRT_MAX - 5). */
export const DEFAULT_MAX_MAP_COUNT = 65530;

/** The defaults: 512 MiB of RAM, bytes mode, THP on MADV_HUGEPAGE, zero page on, Linux's sysctls. */
export const DEFAULT_MACHINE_CONFIG: Readonly<MachineConfig> = Object.freeze({
  memoryBytes: 512 * 1024 * 1024,
  contentMode: "bytes",
  thp: "madvise",
  zeroPage: true,
  hugeZeroPage: true,
  faultAroundBytes: 65536,
  mmapBase: DEFAULT_MMAP_BASE,
  mmapMinAddr: MMAP_MIN_ADDR,
  maxMapCount: DEFAULT_MAX_MAP_COUNT,
});

const int = (what: string) => z.number({ error: `must be ${what}` }).int({ error: `must be ${what}` });

const schema = z.strictObject({
  memoryBytes: int("a whole number of bytes")
    .min(2 * HPAGE_PMD_SIZE, { error: "must be at least 4 MiB" })
    .max(MAX_MEMORY_BYTES, { error: `must be at most ${MAX_MEMORY_BYTES / 1024 ** 3} GiB` })
    .refine((v) => v % HPAGE_PMD_SIZE === 0, { error: "must be a multiple of 2 MiB" }),
  contentMode: z.enum(["bytes", "tag"], { error: 'must be "bytes" or "tag"' }),
  thp: z.enum(["always", "madvise", "never"], { error: 'must be "always", "madvise" or "never"' }),
  zeroPage: z.boolean({ error: "must be true or false" }),
  hugeZeroPage: z.boolean({ error: "must be true or false" }),
  faultAroundBytes: int("a power of two from 4096 to 2 MiB").refine(
    (v) => v >= PAGE_SIZE && v <= HPAGE_PMD_SIZE && (v & (v - 1)) === 0,
    { error: "must be a power of two from 4096 to 2 MiB" },
  ),
  mmapBase: int("a 2 MiB aligned address")
    .refine((v) => v % HPAGE_PMD_SIZE === 0, { error: "must be 2 MiB aligned" })
    .refine((v) => v > 0 && v <= TASK_SIZE, { error: `must lie in (0, TASK_SIZE = ${hex(TASK_SIZE)}]` }),
  mmapMinAddr: int("a page-aligned address")
    .min(0, { error: "must not be negative" })
    .refine((v) => v % PAGE_SIZE === 0, { error: "must be page aligned" }),
  maxMapCount: int("a positive integer")
    .min(1, { error: "must be at least 1" })
    .max(2 ** 31 - 1, { error: "must fit in an int (at most 2^31 - 1)" }),
});

/** The option keys, for "did you mean". */
const KEYS = Object.keys(schema.shape) as (keyof MachineConfig)[];

/** One problem with a machine config: the option key and what is wrong with its value. */
export interface MachineConfigIssue {
  readonly key: string;
  readonly problem: string;
}

/** A machine config was rejected: EINVAL, code BAD_CONFIG, with every problem found. */
export class MachineConfigError extends MmError {
  override name = "MachineConfigError";
  constructor(readonly issues: readonly MachineConfigIssue[]) {
    super(
      "EINVAL",
      `machine config: ${issues.map((i) => `'${i.key}' ${i.problem}`).join("; ")}`,
      "BAD_CONFIG",
    );
  }
}

/** Levenshtein distance, for suggesting the option a misspelt key meant. */
function distance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0];
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const t = d[j];
      d[j] = Math.min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = t;
    }
  }
  return d[b.length];
}

function unknownKey(key: string): string {
  const lower = key.toLowerCase();
  let best: string | null = null;
  let bestD = 3;
  for (const k of KEYS) {
    const dist = k.toLowerCase() === lower ? 0 : distance(lower, k.toLowerCase());
    if (dist < bestD) {
      best = k;
      bestD = dist;
    }
  }
  return best === null
    ? `is not an option (options: ${KEYS.join(", ")})`
    : `is not an option; did you mean '${best}'?`;
}

/**
 * Check `input` (a partial config; missing keys take the defaults) and return the full config.
 * Unknown keys, values of the wrong type or out of range, and inconsistent combinations are all
 * reported at once in a {@link MachineConfigError} naming each key and what it must be.
 */
export function parseMachineConfig(input: unknown): Readonly<MachineConfig> {
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    throw new MachineConfigError([
      { key: "(config)", problem: `must be an object, got ${describeValue(input)}` },
    ]);
  }
  const given = input as Record<string, unknown>;
  // A key given as undefined takes its default, as if it were missing; an unknown key is kept so
  // that the schema reports it.
  const merged: Record<string, unknown> = { ...DEFAULT_MACHINE_CONFIG };
  for (const k of Object.keys(given)) if (given[k] !== undefined || !(k in merged)) merged[k] = given[k];
  const result = schema.safeParse(merged);
  const issues: MachineConfigIssue[] = [];
  if (!result.success) {
    for (const issue of result.error.issues) {
      if (issue.code === "unrecognized_keys") {
        for (const k of issue.keys) issues.push({ key: k, problem: unknownKey(k) });
        continue;
      }
      const key = String(issue.path[0]);
      issues.push({ key, problem: `${issue.message}, got ${describeValue(given[key])}` });
    }
    throw new MachineConfigError(issues);
  }
  const c = result.data;
  if (c.mmapMinAddr >= c.mmapBase) {
    issues.push({
      key: "mmapMinAddr",
      problem: `must be below mmapBase (${hex(c.mmapBase)}), got ${describeValue(c.mmapMinAddr)}`,
    });
    throw new MachineConfigError(issues);
  }
  return Object.freeze(c);
}
