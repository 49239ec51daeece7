/**
 * Schemas of every options object the core takes (createHmm's options, HmmConfig, DeviceConfig,
 * the cost options), one zod schema each, all strict: an unknown key is refused with its name (and
 * "did you mean" for a near miss), a value of the wrong form with the key, the expected form and
 * what was given. The errors are HmmError EINVAL with code BAD_CONFIG. The machine's own options
 * are validated by @hmmkit/mm's Machine.
 */
import { z } from "zod";
import { describeValue } from "./check-args.js";
import type { HmmPlugin } from "./contract.js";
import { didYouMean } from "./did-you-mean.js";
import { HmmError } from "./errors.js";

/** Most device memory one device may have: 2^25 pages (128 GiB). */
export const MAX_DEVICE_MEMORY_PAGES = 2 ** 25;

const pages = (what: string) =>
  z
    .number()
    .int()
    .min(1)
    .max(MAX_DEVICE_MEMORY_PAGES)
    .describe(`${what}: an integer number of 4 KiB pages from 1 to ${MAX_DEVICE_MEMORY_PAGES}`);

/** HmmConfig (createHmm's `config`). */
export const hmmConfigSchema = z.strictObject({
  defaultDeviceMemoryPages: pages("device memory per device").optional(),
  evictBatchPages: z
    .number()
    .int()
    .min(1)
    .max(MAX_DEVICE_MEMORY_PAGES)
    .describe(
      "pages evicted at once: an integer from 1 (eviction is turned off per device with evictOnPressure)",
    )
    .optional(),
});

/** The core's own keys of a DeviceConfig (a plugin may declare more, see HmmPlugin.configKeys). */
export const deviceConfigSchema = z.strictObject({
  name: z
    .string()
    .regex(/^[A-Za-z][\w.-]*$/)
    .describe("the device name: a string of letters, digits, _ . - starting with a letter"),
  memoryPages: pages("device memory").optional(),
  callbackMode: z.enum(["auto", "per-pte", "array"]).describe('"auto", "per-pte" or "array"').optional(),
  pmdCallback: z.boolean().describe("a boolean").optional(),
  evictOnPressure: z.boolean().describe("a boolean").optional(),
  compoundMigration: z.boolean().describe("a boolean").optional(),
  faultBuffer: z
    .number()
    .int()
    .min(1)
    .max(65536)
    .describe("fault buffer entries per batch: an integer from 1 to 65536 (default 256, as UVM)")
    .optional(),
});

/** Names of the cost constants (CostConstants). */
export const COST_CONSTANT_NAMES = [
  "faultServiceUs",
  "pageMapUs",
  "populatePageUs",
  "cpuFaultOnDeviceUs",
  "hostToDeviceGBps",
  "deviceToHostGBps",
  "invalidatePageNs",
  "callbackNs",
  "localAccessNs",
  "remoteAccessNs",
] as const;

const costValue = z.number().min(0).max(Number.MAX_VALUE).describe("a finite number >= 0");

/** createHmm's `cost`. */
export const costOptionsSchema = z.strictObject({
  profile: z
    .custom<object>(
      (v) =>
        typeof v === "object" && v !== null && typeof (v as { constants?: unknown }).constants === "object",
    )
    .describe("a CostProfile (an object with name, description and constants)")
    .optional(),
  overrides: z
    .strictObject(Object.fromEntries(COST_CONSTANT_NAMES.map((k) => [k, costValue.optional()])))
    .describe(`an object of cost constants (${COST_CONSTANT_NAMES.join(", ")})`)
    .optional(),
});

/** createHmm's options. */
export const createHmmOptionsSchema = z.strictObject({
  machine: z
    .custom<object>((v) => typeof v === "object" && v !== null && !Array.isArray(v))
    .describe("a Machine or a MachineConfig object")
    .optional(),
  config: z
    .custom<object>((v) => typeof v === "object" && v !== null && !Array.isArray(v))
    .describe("an HmmConfig object")
    .optional(),
  cost: z
    .custom<object>((v) => typeof v === "object" && v !== null && !Array.isArray(v))
    .describe("an object with profile and overrides")
    .optional(),
  parent: z
    .custom<object>(
      (v) =>
        typeof v === "object" &&
        v !== null &&
        typeof (v as { createChildContainer?: unknown }).createChildContainer === "function",
    )
    .describe("a tsyringe DependencyContainer")
    .optional(),
});

type AnySchema = z.ZodType;

/** The schema at `path` under `schema` (through optional wrappers), if it is there. */
function schemaAt(schema: AnySchema | undefined, path: readonly PropertyKey[]): AnySchema | undefined {
  let s = schema;
  for (let i = 0; ; i++) {
    while (s instanceof z.ZodOptional) {
      if (s.description !== undefined) return s;
      s = s.unwrap() as AnySchema;
    }
    if (i === path.length || s === undefined) return s;
    if (!(s instanceof z.ZodObject)) return undefined;
    s = (s.shape as Record<string, AnySchema>)[String(path[i])];
  }
}

function knownKeys(schema: AnySchema, path: readonly PropertyKey[]): string[] {
  let s = schemaAt(schema, path);
  while (s instanceof z.ZodOptional) s = s.unwrap() as AnySchema;
  return s instanceof z.ZodObject ? Object.keys(s.shape) : [];
}

function valueAt(value: unknown, path: readonly PropertyKey[]): unknown {
  let v = value;
  for (const p of path) {
    if (typeof v !== "object" || v === null) return undefined;
    v = (v as Record<PropertyKey, unknown>)[p];
  }
  return v;
}

const keyName = (path: readonly PropertyKey[]) => path.map(String).join(".");

/**
 * Parse `value` with `schema`; on failure throw an HmmError EINVAL (BAD_CONFIG) whose message has
 * one line per problem: `where`, the key, the expected form and what was given.
 */
export function parseOptions<T>(schema: z.ZodType<T>, value: unknown, where: string): T {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const problems: string[] = [];
  for (const issue of r.error.issues) {
    if (issue.code === "unrecognized_keys") {
      const known = knownKeys(schema, issue.path);
      for (const k of issue.keys) {
        const near = didYouMean(k, known);
        const at = keyName([...issue.path, k]);
        problems.push(
          `unknown key '${at}'${near ? ` (did you mean '${keyName([...issue.path, near])}'?)` : ""}; known keys: ${known.join(", ")}`,
        );
      }
      continue;
    }
    const expected = schemaAt(schema, issue.path)?.description ?? issue.message;
    const got = valueAt(value, issue.path);
    if (issue.path.length === 0) problems.push(`must be an object, got ${describeValue(got)}`);
    else problems.push(`'${keyName(issue.path)}' must be ${expected}, got ${describeValue(got)}`);
  }
  const body = problems.length === 1 ? problems[0] : `\n  - ${problems.join("\n  - ")}`;
  throw new HmmError("EINVAL", `${where}: ${body}`, "BAD_CONFIG");
}

/**
 * The core's own keys of a device config, validated: the keys of `deviceConfigSchema` plus the
 * plugin's `configKeys` (passed to the driver untouched); anything else is refused.
 */
export function parseDeviceConfig(config: unknown, plugin: HmmPlugin): z.infer<typeof deviceConfigSchema> {
  const extra = plugin.configKeys ?? [];
  const schema =
    extra.length === 0
      ? deviceConfigSchema
      : deviceConfigSchema.extend(Object.fromEntries(extra.map((k) => [k, z.unknown().optional()])));
  const name =
    typeof (config as { name?: unknown } | null)?.name === "string"
      ? ` ${(config as { name: string }).name}`
      : "";
  return parseOptions(schema, config, `device config${name} (plugin '${plugin.name}')`) as z.infer<
    typeof deviceConfigSchema
  >;
}
