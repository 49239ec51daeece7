/**
 * The iotlb driver's device config keys (declared in the plugin's `configKeys`, so the core
 * passes them through), validated with zod. Errors are HmmError EINVAL, code BAD_CONFIG, naming
 * the device, the key, the expected form and the value given.
 */
import { HmmError } from "@hmmkit/core";
import { z } from "zod";

/** Pages in a 2 MiB PMD: the largest fault window (an aligned window never crosses a PMD). */
export const MAX_FAULT_WINDOW = 512;
/** Most TLB entries one device may have. */
export const MAX_TLB_ENTRIES = 65536;

/** The driver's settings, defaults filled in. */
export interface IotlbOptions {
  /** TLB entries (default 64). */
  readonly tlbEntries: number;
  /** Associativity: entries per set (default 4). `tlbEntries / tlbWays` sets, a power of two. */
  readonly tlbWays: number;
  /**
   * Pages faulted per miss (default 1): the aligned window of this many pages around the faulting
   * page, as RDMA ODP prefetches a small range. A power of two from 1 to 512.
   */
  readonly faultWindow: number;
  /** Cache a 2 MiB PMD from mirrorPmd as one TLB entry (default true), as an ATS TLB caches large pages. */
  readonly hugeEntries: boolean;
}

/** Defaults of {@link IotlbOptions}. */
export const DEFAULT_IOTLB_OPTIONS: Readonly<IotlbOptions> = Object.freeze({
  tlbEntries: 64,
  tlbWays: 4,
  faultWindow: 1,
  hugeEntries: true,
});

/** The config keys the driver reads (HmmPlugin.configKeys). */
export const IOTLB_CONFIG_KEYS = ["tlbEntries", "tlbWays", "faultWindow", "hugeEntries"] as const;

const isPowerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0;

const EXPECTED: Record<(typeof IOTLB_CONFIG_KEYS)[number], string> = {
  tlbEntries: `an integer from 1 to ${MAX_TLB_ENTRIES} (default 64)`,
  tlbWays: "an integer from 1 to tlbEntries that divides it (default 4)",
  faultWindow: `a power of two from 1 to ${MAX_FAULT_WINDOW} pages (default 1)`,
  hugeEntries: "a boolean (default true)",
};

const schema = z.object({
  tlbEntries: z.number().int().min(1).max(MAX_TLB_ENTRIES).optional(),
  tlbWays: z.number().int().min(1).max(MAX_TLB_ENTRIES).optional(),
  faultWindow: z.number().int().min(1).max(MAX_FAULT_WINDOW).refine(isPowerOfTwo).optional(),
  hugeEntries: z.boolean().optional(),
});

function describe(v: unknown): string {
  if (typeof v === "string") return `${JSON.stringify(v)} (a string)`;
  if (v === null) return "null";
  if (typeof v === "object") return Array.isArray(v) ? "an array" : "an object";
  return String(v);
}

/**
 * The iotlb settings of device config `config` (other keys are the core's and are ignored here).
 * Throws HmmError EINVAL (BAD_CONFIG) listing every bad key with its value.
 */
export function parseIotlbOptions(config: Readonly<Record<string, unknown>>): IotlbOptions {
  const where = `device config ${String(config.name ?? "")} (plugin 'iotlb')`;
  const picked: Record<string, unknown> = {};
  for (const k of IOTLB_CONFIG_KEYS) if (config[k] !== undefined) picked[k] = config[k];
  const r = schema.safeParse(picked);
  const problems: string[] = [];
  if (!r.success) {
    const keys = new Set(r.error.issues.map((i) => String(i.path[0]) as keyof typeof EXPECTED));
    for (const k of keys) problems.push(`'${k}' must be ${EXPECTED[k]}, got ${describe(picked[k])}`);
  } else {
    const o = { ...DEFAULT_IOTLB_OPTIONS, ...r.data };
    if (o.tlbWays > o.tlbEntries || o.tlbEntries % o.tlbWays !== 0)
      problems.push(
        `'tlbWays' ${o.tlbWays} does not divide 'tlbEntries' ${o.tlbEntries} into whole sets (pick ways dividing the entries)`,
      );
    else if (!isPowerOfTwo(o.tlbEntries / o.tlbWays))
      problems.push(
        `'tlbEntries' ${o.tlbEntries} / 'tlbWays' ${o.tlbWays} gives ${o.tlbEntries / o.tlbWays} sets, which is not a power of two (the set index is the low bits of the page number)`,
      );
    if (problems.length === 0) return Object.freeze(o);
  }
  const body = problems.length === 1 ? problems[0] : `\n  - ${problems.join("\n  - ")}`;
  throw new HmmError("EINVAL", `${where}: ${body}`, "BAD_CONFIG");
}
