import { type DriverClass, HMM_API_VERSION, type HmmPlugin } from "./contract.js";
import { PluginError } from "./errors.js";

const SEMVER = /^(\d+)\.(\d+)\.(\d+)(?:-[0-9A-Za-z.-]+)?$/;

function parse(v: string): [number, number, number] | null {
  const m = SEMVER.exec(v);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : null;
}

/**
 * True if a plugin targeting `wanted` (an exact version, `^x.y.z` or `~x.y.z`) can run on the core's
 * `HMM_API_VERSION`: same major version, and the core not older than what the plugin needs.
 */
export function apiVersionCompatible(wanted: string, have = HMM_API_VERSION): boolean {
  if (typeof wanted !== "string" || typeof have !== "string") return false;
  const range = wanted.trim();
  const op = range[0] === "^" || range[0] === "~" ? range[0] : "";
  const w = parse(op ? range.slice(1) : range);
  const h = parse(have);
  if (!w || !h) return false;
  if (w[0] !== h[0]) return false;
  if (op === "~" && w[1] !== h[1]) return false;
  if (h[1] !== w[1]) return h[1] > w[1];
  return h[2] >= w[2];
}

const CALLBACKS = [
  "mirrorPte",
  "mirrorPmd",
  "mirrorPtes",
  "invalidate",
  "copyToDevice",
  "copyFromDevice",
  "release",
  "translations",
];

/** tsyringe's metadata key for `@inject(TOKEN)` on constructor parameters. */
const INJECTION_TOKENS = "injectionTokens";

type Metadata = {
  getOwnMetadata?(key: string, target: object): unknown;
  getMetadata?(key: string, target: object): unknown;
};

function ownTokens(cls: object): Record<string, unknown> {
  const r = (Reflect as unknown as Metadata).getOwnMetadata?.(INJECTION_TOKENS, cls);
  return typeof r === "object" && r !== null ? (r as Record<string, unknown>) : {};
}

/** Parameter names of a class's own constructor, from its source (best effort, for messages). */
function paramNames(cls: object): string[] {
  try {
    const m = /constructor\s*\(([^)]*)\)/.exec(Function.prototype.toString.call(cls));
    return m ? m[1].split(",").map((x) => x.replace(/=.*$/s, "").trim()) : [];
  } catch {
    return [];
  }
}

/**
 * What tsyringe would get wrong constructing `driver`: it passes constructor parameters only by
 * `@inject(TOKEN)` (or emitted `design:paramtypes`), and calls a class whose constructor declares
 * no parameter with `new X()`. A parameter without a token, or a subclass without its own
 * injections whose base class needs them, would construct a driver with `undefined` services.
 */
function injectionProblems(driver: DriverClass): string[] {
  const out: string[] = [];
  const tokens = ownTokens(driver);
  const types = (Reflect as unknown as Metadata).getMetadata?.("design:paramtypes", driver);
  const typed = Array.isArray(types) ? types : [];
  const n = driver.length;
  const names = paramNames(driver);
  for (let i = 0; i < n; i++) {
    const t = typed[i];
    if (!(String(i) in tokens) && (typeof t !== "function" || t === Object))
      out.push(
        `driver class ${driver.name}: constructor parameter ${i} (${names[i] || "unnamed"}) has no @inject(TOKEN): tsyringe cannot know what to pass`,
      );
  }
  if (n === 0 && Object.keys(tokens).length === 0) {
    for (
      let base = Object.getPrototypeOf(driver);
      typeof base === "function" && base !== Function.prototype;
      base = Object.getPrototypeOf(base)
    ) {
      const bt = Object.keys(ownTokens(base));
      if (bt.length === 0) continue;
      const bn = paramNames(base);
      const list = bt.map((i) => `${i} (${bn[Number(i)] || "unnamed"})`).join(", ");
      out.push(
        `driver class ${driver.name} has no constructor injections of its own, but its base class ${base.name} takes injected parameters ${list}: tsyringe would call new ${driver.name}() and pass nothing; give ${driver.name} @injectable() and a constructor with @inject(TOKEN) on each parameter`,
      );
      break;
    }
  }
  return out;
}

/**
 * Check a plugin descriptor as loaded from `source` (a package name or a file path) and return it
 * typed. Throws PluginError listing every problem: missing fields, an API version this core cannot
 * run, an unknown design, a driver that is not a class (e.g. an arrow function), or a driver
 * prototype without the required callbacks (invalidate, copyToDevice, copyFromDevice,
 * translations, and mirrorPte or mirrorPtes), a constructor parameter without `@inject(TOKEN)`,
 * a subclass that lost its base class's injections, `configKeys` that is not a string list, or a
 * `callbackMode` that is not a form the driver implements.
 */
export function validatePlugin(candidate: unknown, source = "<inline>"): HmmPlugin {
  const problems: string[] = [];
  const p = (candidate ?? {}) as Record<string, unknown>;
  const name = typeof p.name === "string" && p.name.length > 0 ? p.name : null;
  const label = name ? `'${name}' (${source})` : source;
  if (typeof candidate !== "object" || candidate === null) {
    throw new PluginError(label, [
      `expected a plugin object, got ${candidate === null ? "null" : typeof candidate}`,
    ]);
  }
  if (!name) problems.push("missing 'name' (a non-empty string)");
  else if (!/^[a-z][a-z0-9-]*$/.test(name))
    problems.push(`'name' must be lower-case letters, digits and dashes, got '${name}'`);
  if (typeof p.apiVersion !== "string")
    problems.push(`missing 'apiVersion' (the contract version it targets, e.g. "${HMM_API_VERSION}")`);
  else if (!apiVersionCompatible(p.apiVersion)) {
    problems.push(`apiVersion '${p.apiVersion}' is not compatible with this core's API ${HMM_API_VERSION}`);
  }
  if (p.design !== "per-pte" && p.design !== "shared-mirror") {
    problems.push(`'design' must be "per-pte" or "shared-mirror", got ${JSON.stringify(p.design)}`);
  }
  const ctor = p.driver as { prototype?: unknown } | undefined;
  if (ctor === undefined || ctor === null) {
    problems.push("missing 'driver' (the driver class)");
  } else if (typeof ctor !== "function" || typeof ctor.prototype !== "object" || ctor.prototype === null) {
    // An arrow function or a method has no prototype: it cannot be constructed.
    const got = typeof ctor === "function" ? "a function that is not a constructor" : typeof ctor;
    problems.push(`'driver' must be a class, got ${got}`);
  } else {
    const proto = (p.driver as DriverClass).prototype as Record<string, unknown>;
    for (const cb of ["invalidate", "copyToDevice", "copyFromDevice", "translations"]) {
      if (typeof proto[cb] !== "function")
        problems.push(`driver class ${(p.driver as DriverClass).name} has no '${cb}' method`);
    }
    if (typeof proto.mirrorPte !== "function" && typeof proto.mirrorPtes !== "function") {
      problems.push(
        `driver class ${(p.driver as DriverClass).name} implements neither 'mirrorPte' nor 'mirrorPtes'`,
      );
    }
    for (const key of Object.getOwnPropertyNames(proto)) {
      if (/^mirror/.test(key) && !CALLBACKS.includes(key))
        problems.push(`driver method '${key}' is not part of the contract (typo?)`);
    }
    problems.push(...injectionProblems(p.driver as DriverClass));
  }
  if (p.configKeys !== undefined) {
    const keys = p.configKeys;
    if (!Array.isArray(keys) || !keys.every((k) => typeof k === "string" && k.length > 0))
      problems.push(
        "'configKeys' must be an array of non-empty strings (the device config keys the driver reads)",
      );
  }
  if (p.callbackMode !== undefined) {
    const mode = p.callbackMode;
    const proto = (typeof ctor === "function" ? ctor.prototype : null) as Record<string, unknown> | null;
    if (mode !== "per-pte" && mode !== "array")
      problems.push(`'callbackMode' must be "per-pte" or "array", got ${JSON.stringify(mode)}`);
    else if (proto !== null && typeof proto[mode === "array" ? "mirrorPtes" : "mirrorPte"] !== "function")
      problems.push(
        `'callbackMode' is "${mode}" but the driver has no '${mode === "array" ? "mirrorPtes" : "mirrorPte"}'`,
      );
  }
  if (problems.length > 0) throw new PluginError(label, problems);
  return candidate as HmmPlugin;
}
