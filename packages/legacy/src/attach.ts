import {
  apiVersionCompatible,
  type Device,
  type DeviceConfig,
  HMM_API_VERSION,
  HmmCore,
  HmmError,
  type HmmPlugin,
  PluginError,
} from "@hmmkit/core";
import { SHARED_MIRROR_CONFIG_KEY, SharedMirrorClient } from "./client.js";
import { LEGACY_API_VERSION, type SharedMirrorPlugin } from "./contract.js";
import { parseLegacyOptions } from "./options.js";
import { SharedMirror } from "./shared-mirror.js";

const REQUIRED = ["update", "copyToDevice", "copyFromDevice", "translate", "translations"] as const;
const OPTIONAL = ["handleFaults", "release"] as const;

/** tsyringe's metadata key for `@inject(TOKEN)` on constructor parameters. */
const INJECTION_TOKENS = "injectionTokens";

function ownTokens(cls: object): Record<string, unknown> {
  const r = (Reflect as unknown as { getOwnMetadata?(k: string, t: object): unknown }).getOwnMetadata?.(
    INJECTION_TOKENS,
    cls,
  );
  return typeof r === "object" && r !== null ? (r as Record<string, unknown>) : {};
}

/**
 * Check a shared-mirror plugin descriptor as loaded from `source` and return it typed. Throws a
 * PluginError listing every problem: missing or malformed fields, an apiVersion this layer
 * (LEGACY_API_VERSION) cannot run, a design other than "shared-mirror" (a per-pte plugin goes to
 * HmmCore.addDevice), a driver that is not a class, a missing callback (update, copyToDevice,
 * copyFromDevice, translate, translations), a per-PTE callback (shared-mirror drivers never get
 * one: they read hmm_pt), a constructor parameter without `@inject(TOKEN)`, or bad configKeys.
 */
export function validateSharedMirrorPlugin(candidate: unknown, source = "<inline>"): SharedMirrorPlugin {
  if (typeof candidate !== "object" || candidate === null)
    throw new PluginError(source, [
      `expected a shared-mirror plugin object, got ${candidate === null ? "null" : typeof candidate}`,
    ]);
  const p = candidate as Record<string, unknown>;
  const problems: string[] = [];
  const name = typeof p.name === "string" && p.name.length > 0 ? p.name : null;
  const label = name ? `'${name}' (${source})` : source;
  if (!name) problems.push("missing 'name' (a non-empty string)");
  else if (!/^[a-z][a-z0-9-]*$/.test(name))
    problems.push(`'name' must be lower-case letters, digits and dashes, got '${name}'`);
  if (typeof p.apiVersion !== "string")
    problems.push(
      `missing 'apiVersion' (the legacy contract version it targets, e.g. "^${LEGACY_API_VERSION}")`,
    );
  else if (!apiVersionCompatible(p.apiVersion, LEGACY_API_VERSION))
    problems.push(
      `apiVersion '${p.apiVersion}' is not compatible with the legacy layer's API ${LEGACY_API_VERSION} (the core's per-PTE contract is ${HMM_API_VERSION}: a per-pte plugin is added with HmmCore.addDevice)`,
    );
  if (p.design === "per-pte")
    problems.push(
      "'design' is \"per-pte\": a per-PTE driver receives the core's callbacks itself; add it with HmmCore.addDevice, not attachSharedMirror",
    );
  else if (p.design !== "shared-mirror")
    problems.push(`'design' must be "shared-mirror", got ${JSON.stringify(p.design)}`);
  const ctor = p.driver as { prototype?: unknown; name?: string; length?: number } | undefined;
  if (ctor === undefined || ctor === null) problems.push("missing 'driver' (the driver class)");
  else if (typeof ctor !== "function" || typeof ctor.prototype !== "object" || ctor.prototype === null)
    problems.push(
      `'driver' must be a class, got ${typeof ctor === "function" ? "a function that is not a constructor" : typeof ctor}`,
    );
  else {
    const proto = ctor.prototype as Record<string, unknown>;
    for (const cb of REQUIRED)
      if (typeof proto[cb] !== "function") problems.push(`driver class ${ctor.name} has no '${cb}' method`);
    for (const cb of OPTIONAL)
      if (cb in proto && typeof proto[cb] !== "function")
        problems.push(`driver class ${ctor.name}: '${cb}' must be a method`);
    for (const cb of ["mirrorPte", "mirrorPtes", "mirrorPmd", "invalidate"])
      if (typeof proto[cb] === "function")
        problems.push(
          `driver class ${ctor.name} implements '${cb}', a per-PTE callback: a shared-mirror driver reads hmm_pt and gets 'update' events instead (a per-pte driver is added with HmmCore.addDevice)`,
        );
    const tokens = ownTokens(ctor as object);
    const n = typeof ctor.length === "number" ? ctor.length : 0;
    for (let i = 0; i < n; i++)
      if (!(String(i) in tokens))
        problems.push(
          `driver class ${ctor.name}: constructor parameter ${i} has no @inject(TOKEN): tsyringe cannot know what to pass`,
        );
  }
  if (p.configKeys !== undefined) {
    const keys = p.configKeys;
    if (!Array.isArray(keys) || !keys.every((k) => typeof k === "string" && k.length > 0))
      problems.push("'configKeys' must be an array of non-empty strings");
    else if (keys.includes(SHARED_MIRROR_CONFIG_KEY))
      problems.push(
        `'configKeys' may not contain '${SHARED_MIRROR_CONFIG_KEY}' (reserved by the legacy layer)`,
      );
  }
  if (problems.length > 0) throw new PluginError(label, problems);
  return candidate as SharedMirrorPlugin;
}

/** What attachSharedMirror gives back. */
export interface AttachedSharedMirror {
  /** The core's device (run work on it with HmmCore.runDevice, migrate with migrateToDevice, ...). */
  readonly device: Device;
  /** HMM's side of it: the mirrors (hmm_pt per address space), options and counters. */
  readonly mirror: SharedMirror;
}

/**
 * Attach a device driven by shared-mirror `plugin` (validated first, see
 * validateSharedMirrorPlugin) to `core`, through the legacy layer: the layer registers a per-PTE
 * client with `core.addDevice(…, config)` (so the device has the core's memory, DMA, notifiers and
 * access path) and builds the driver in a child container with LEGACY_TOKENS.SharedMirror.
 * `config` is a DeviceConfig (the core's keys and the plugin's configKeys; `callbackMode` and
 * `pmdCallback` are the layer's, not the user's). `options`: see LegacyOptions. A call that fails
 * leaves nothing attached.
 */
export function attachSharedMirror(
  core: HmmCore,
  plugin: SharedMirrorPlugin | unknown,
  config: DeviceConfig,
  options?: Partial<{ delayedPruning: number; sharedDirectories: boolean }>,
  source = "<inline>",
): AttachedSharedMirror {
  if (!(core instanceof HmmCore))
    throw new HmmError(
      "EINVAL",
      "attachSharedMirror: 'core' must be an HmmCore (createHmm().core)",
      "BAD_ARGUMENT",
    );
  const p = validateSharedMirrorPlugin(plugin, source);
  const opts = parseLegacyOptions(options);
  if (typeof config !== "object" || config === null)
    throw new HmmError(
      "EINVAL",
      `attachSharedMirror: 'config' must be a device config object ({ name, ... }), got ${config === null ? "null" : typeof config}`,
      "BAD_CONFIG",
    );
  for (const k of [SHARED_MIRROR_CONFIG_KEY, "callbackMode", "pmdCallback"])
    if (k in config)
      throw new HmmError(
        "EINVAL",
        `attachSharedMirror: device config key '${k}' is set by the legacy layer (hmm_pt is filled from whole PMDs and page arrays), remove it`,
        "BAD_CONFIG",
      );
  const sm = new SharedMirror(core, p, opts);
  const internal: HmmPlugin = {
    name: p.name,
    apiVersion: HMM_API_VERSION,
    design: "per-pte",
    driver: SharedMirrorClient,
    description: `shared-mirror plugin '${p.name}' through @hmmkit/legacy's hmm_pt`,
    configKeys: [...(p.configKeys ?? []), SHARED_MIRROR_CONFIG_KEY],
  };
  const device = core.addDevice(internal, { ...config, [SHARED_MIRROR_CONFIG_KEY]: sm }, source);
  sm.device = device;
  return { device, mirror: sm };
}

/** The SharedMirror behind a device attached with attachSharedMirror, or undefined. */
export function sharedMirrorOf(device: Device): SharedMirror | undefined {
  const d = device.driver;
  return d instanceof SharedMirrorClient ? d.sm : undefined;
}
