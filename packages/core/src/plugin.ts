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

/**
 * Check a plugin descriptor as loaded from `source` (a package name or a file path) and return it
 * typed. Throws PluginError listing every problem: missing fields, an API version this core cannot
 * run, an unknown design, a driver that is not a class (e.g. an arrow function), or a driver
 * prototype without the required callbacks (invalidate, copyToDevice, copyFromDevice,
 * translations, and mirrorPte or mirrorPtes).
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
  }
  if (problems.length > 0) throw new PluginError(label, problems);
  return candidate as HmmPlugin;
}
