import { type Device, type DeviceConfig, didYouMean, type HmmPlugin, type HmmSystem } from "@hmmkit/core";
import { describeValue } from "@hmmkit/mm";
import { z } from "zod";
import { badConfig } from "./errors.js";
import type { WorkloadSpec } from "./spec.js";
import type { CoherenceChecks } from "./workload-run.js";

/** Options of {@link runWorkload}. */
export interface RunWorkloadOptions {
  /** The workload: a spec string (`stream:size=64MiB,passes=2`) or a parsed WorkloadSpec. */
  spec: string | WorkloadSpec;
  /** Seed of every stamp, coin and interleaving (default 1). */
  seed?: number;
  /** The driver plugin; the runner adds one device with `device` (give this or `attach`). */
  plugin?: HmmPlugin;
  /** Device config for `plugin` (name default "dev0"; memoryPages, faultBuffer, driver keys...). */
  device?: Partial<DeviceConfig>;
  /**
   * Attach the device yourself and return it (instead of `plugin`): e.g. a shared-mirror driver
   * through @hmmkit/legacy's layer. Called once, with the system the run builds.
   */
  attach?: (system: HmmSystem) => Device;
  /**
   * The simulated machine: memoryBytes (default: the workload's footprint plus a quarter and
   * 16 MiB, rounded up to 2 MiB), contentMode (default "tag"), zeroPage (default true), thp
   * (default "madvise").
   */
  machine?: {
    memoryBytes?: number;
    contentMode?: "bytes" | "tag";
    zeroPage?: boolean;
    thp?: "always" | "madvise" | "never";
  };
  /** Check every device access's translation against the CPU page table (default true). */
  verifyTranslations?: boolean;
  /** When to check coherence: at every phase end (default), once at the end, or never. */
  coherence?: CoherenceChecks;
  /** createHmm's `config` and `cost` (core settings, cost profile and overrides). */
  hmm?: { config?: Record<string, unknown>; cost?: Record<string, unknown> };
}

const object = (what: string) =>
  z.custom<object>((v) => typeof v === "object" && v !== null && !Array.isArray(v)).describe(what);

const machineSchema = z.strictObject({
  memoryBytes: z
    .number()
    .int()
    .min(4 * 1024 * 1024)
    .describe("bytes of RAM: an integer multiple of 2 MiB, at least 4 MiB")
    .optional(),
  contentMode: z.enum(["bytes", "tag"]).describe('"bytes" or "tag"').optional(),
  zeroPage: z.boolean().describe("a boolean").optional(),
  thp: z.enum(["always", "madvise", "never"]).describe('"always", "madvise" or "never"').optional(),
});

const optionsSchema = z.strictObject({
  spec: z
    .union([z.string(), object("")])
    .describe("a spec string (kind:key=value,...) or a WorkloadSpec from parseWorkloadSpec"),
  seed: z
    .number()
    .int()
    .min(0)
    .max(2 ** 32 - 1)
    .describe("an integer from 0 to 2^32 - 1")
    .optional(),
  plugin: object("an HmmPlugin (name, apiVersion, design, driver)").optional(),
  device: object("a device config object (name, memoryPages, ...)").optional(),
  attach: z
    .custom<(s: HmmSystem) => Device>((v) => typeof v === "function")
    .describe("a function (system) => Device")
    .optional(),
  machine: machineSchema.optional(),
  verifyTranslations: z.boolean().describe("a boolean").optional(),
  coherence: z.enum(["phases", "end", "off"]).describe('"phases", "end" or "off"').optional(),
  hmm: z
    .strictObject({
      config: object("an HmmConfig object").optional(),
      cost: object("createHmm's cost options").optional(),
    })
    .describe("an object with config and cost")
    .optional(),
});

function shapeAt(path: readonly PropertyKey[]): z.ZodType | undefined {
  let s: z.ZodType | undefined = optionsSchema;
  for (const p of path) {
    while (s instanceof z.ZodOptional) s = s.unwrap() as z.ZodType;
    if (!(s instanceof z.ZodObject)) return undefined;
    s = (s.shape as Record<string, z.ZodType>)[String(p)];
  }
  while (s instanceof z.ZodOptional && s.description === undefined) s = s.unwrap() as z.ZodType;
  return s;
}

function keysAt(path: readonly PropertyKey[]): string[] {
  let s = shapeAt(path);
  while (s instanceof z.ZodOptional) s = s.unwrap() as z.ZodType;
  return s instanceof z.ZodObject ? Object.keys(s.shape) : [];
}

function valueAt(v: unknown, path: readonly PropertyKey[]): unknown {
  for (const p of path)
    v = typeof v === "object" && v !== null ? (v as Record<PropertyKey, unknown>)[p] : undefined;
  return v;
}

/**
 * Check the options: one strict schema (an unknown key is refused with "did you mean" and the
 * known keys; a value of the wrong form with the key and the form expected), then the rules
 * across keys: `spec` is required, and exactly one of `plugin` and `attach`. HmmError EINVAL
 * BAD_CONFIG.
 */
export function parseRunOptions(options: unknown): RunWorkloadOptions {
  if (typeof options !== "object" || options === null || Array.isArray(options))
    throw badConfig(`must be an object, got ${describeValue(options)}`);
  const r = optionsSchema.safeParse(options);
  if (!r.success) {
    const problems: string[] = [];
    for (const issue of r.error.issues) {
      const at = issue.path.map(String).join(".");
      if (issue.code === "unrecognized_keys") {
        const known = keysAt(issue.path);
        for (const k of issue.keys) {
          const near = didYouMean(k, known);
          const name = at === "" ? k : `${at}.${k}`;
          problems.push(
            `unknown key '${name}'${near ? ` (did you mean '${at === "" ? near : `${at}.${near}`}'?)` : ""}; known keys: ${known.join(", ")}`,
          );
        }
        continue;
      }
      const expected = (shapeAt(issue.path) as z.ZodType | undefined)?.description ?? issue.message;
      const got = valueAt(options, issue.path);
      problems.push(
        got === undefined && at === "spec"
          ? "'spec' is required: a spec string (kind:key=value,...) or a WorkloadSpec"
          : `'${at}' must be ${expected}, got ${describeValue(got)}`,
      );
    }
    throw badConfig(problems.length === 1 ? problems[0] : `\n  - ${problems.join("\n  - ")}`);
  }
  const o = options as RunWorkloadOptions;
  if (o.plugin === undefined && o.attach === undefined)
    throw badConfig("give 'plugin' (the runner adds the device) or 'attach' (you add it and return it)");
  if (o.plugin !== undefined && o.attach !== undefined)
    throw badConfig("'plugin' and 'attach' exclude each other: give one");
  if (o.device !== undefined && o.attach !== undefined)
    throw badConfig(
      "'device' configures the device the runner adds for 'plugin'; with 'attach', configure it there",
    );
  return o;
}
