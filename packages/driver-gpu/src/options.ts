/**
 * The gpu driver's device config keys (declared in the plugin's `configKeys`), validated with zod
 * when the driver is constructed: a value of the wrong form is an HmmError EINVAL (code
 * BAD_CONFIG) naming the device, the key, what it must be and what it was.
 */
import { HmmError } from "@hmmkit/core";
import { z } from "zod";

/** Where faulted blocks go. */
export type MigratePolicy = "none" | "first-touch" | "access-counter";
/** How an eviction victim is chosen. */
export type EvictionPolicy = "lru" | "clock";

const pow2 = (what: string) =>
  z
    .number()
    .int()
    .min(1)
    .max(512)
    .refine((n) => (n & (n - 1)) === 0)
    .describe(`${what}: a power of two from 1 to 512 (pages)`);

const positive = (what: string, max: number) =>
  z.number().int().min(1).max(max).describe(`${what}: an integer from 1 to ${max}`);

/** Each key's schema, with the description errors quote. */
const fields = {
  migrate: z
    .enum(["none", "first-touch", "access-counter"])
    .describe('"none" (always remote), "first-touch" or "access-counter"'),
  accessThreshold: positive("remote accesses to a block before it migrates (access-counter)", 2 ** 28),
  prefetch: z.boolean().describe("a boolean"),
  prefetchThreshold: z
    .number()
    .int()
    .min(1)
    .max(100)
    .describe("a percentage from 1 to 100 (UVM's uvm_perf_prefetch_threshold, 51)"),
  prefetchWindow: pow2("the largest region prefetched around a fault"),
  prefetchGranule: pow2("the big-page size faults grow to before prefetch"),
  eviction: z.enum(["lru", "clock"]).describe('"lru" or "clock"'),
  thrashing: z.boolean().describe("a boolean"),
  thrashingThreshold: positive("bounces within the window that pin a block", 255),
  thrashingWindow: positive("the thrashing window in fault batches", 2 ** 20),
  thrashingPinBatches: positive("how long a thrashing block stays pinned, in fault batches", 2 ** 20),
};

/** The schema of the driver's keys (every key optional; defaults in {@link GPU_DEFAULTS}). */
export const gpuOptionsSchema = z.object(
  Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, v.optional()])) as {
    [K in keyof typeof fields]: z.ZodOptional<(typeof fields)[K]>;
  },
);

/** The gpu driver's settings. */
export interface GpuOptions {
  /** Migration policy (default "first-touch"). */
  readonly migrate: MigratePolicy;
  /** Remote accesses to a 2 MiB block before access-counter migrates it (default 256, UVM's access counter threshold). */
  readonly accessThreshold: number;
  /** Prefetch inside a VA block (default true). */
  readonly prefetch: boolean;
  /** Prefetch threshold in percent (default 51, uvm_perf_prefetch_threshold). */
  readonly prefetchThreshold: number;
  /** Largest prefetch region in pages (default 512: the whole VA block). */
  readonly prefetchWindow: number;
  /** Big-page granule faults grow to before the prefetch tree (default 16 pages = 64 KiB, UVM's big page). */
  readonly prefetchGranule: number;
  /** Eviction victim choice (default "lru"). */
  readonly eviction: EvictionPolicy;
  /** Thrashing detection (default false). */
  readonly thrashing: boolean;
  /** Bounces within the window that pin a block remote (default 3, uvm_perf_thrashing_threshold). */
  readonly thrashingThreshold: number;
  /** The window, in fault batches (default 16). */
  readonly thrashingWindow: number;
  /** How long a pin lasts, in fault batches (default 64). */
  readonly thrashingPinBatches: number;
}

/** Defaults of {@link GpuOptions}. */
export const GPU_DEFAULTS: Readonly<GpuOptions> = Object.freeze({
  migrate: "first-touch",
  accessThreshold: 256,
  prefetch: true,
  prefetchThreshold: 51,
  prefetchWindow: 512,
  prefetchGranule: 16,
  eviction: "lru",
  thrashing: false,
  thrashingThreshold: 3,
  thrashingWindow: 16,
  thrashingPinBatches: 64,
});

/** The driver's config keys, for the plugin's `configKeys`. */
export const GPU_CONFIG_KEYS: readonly string[] = Object.keys(gpuOptionsSchema.shape);

function describe(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "number" || typeof v === "boolean" || v === null || v === undefined) return String(v);
  return Array.isArray(v) ? "an array" : typeof v;
}

/**
 * The driver's settings from a device config (the core's own keys are ignored here; unknown keys
 * were already refused by the core against `configKeys`). Throws HmmError EINVAL BAD_CONFIG with
 * one line per bad key.
 */
export function parseGpuOptions(config: Readonly<Record<string, unknown>>, device = "?"): GpuOptions {
  const mine: Record<string, unknown> = {};
  for (const k of GPU_CONFIG_KEYS) if (config[k] !== undefined) mine[k] = config[k];
  const r = gpuOptionsSchema.safeParse(mine);
  if (!r.success) {
    const lines = r.error.issues.map((issue) => {
      const key = String(issue.path[0]);
      const want = (fields as Record<string, z.ZodType>)[key]?.description ?? issue.message;
      return `'${key}' must be ${want}, got ${describe(mine[key])}`;
    });
    throw new HmmError(
      "EINVAL",
      `gpu device config ${device}: ${lines.length === 1 ? lines[0] : `\n  - ${lines.join("\n  - ")}`}`,
      "BAD_CONFIG",
    );
  }
  return { ...GPU_DEFAULTS, ...r.data } as GpuOptions;
}
