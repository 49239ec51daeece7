import type { Machine } from "@hmmkit/mm";
import type { DependencyContainer } from "tsyringe";
import type { CallbackMode, HmmDriver, HmmPlugin } from "./contract.js";
import { Device, type DeviceConfig, type DeviceContext, type DeviceDma } from "./device.js";
import { DeviceMemory } from "./device-memory.js";
import { DriverDispatcher } from "./dispatcher.js";
import { type DriverError, describeThrown, HmmError } from "./errors.js";
import { migrateOnCpuFault } from "./migrate-to-ram.js";
import { parseDeviceConfig } from "./options.js";
import { validatePlugin } from "./plugin.js";
import { DeviceStats, type HmmStats } from "./stats.js";
import { TOKENS } from "./tokens.js";

/** Translations a driver may report beyond one per mapped page (see HmmCore.translations). */
export const TRANSLATIONS_MARGIN = 1024;

/**
 * The most translations `dev` can hold: one per page of every VMA of the address spaces it is
 * bound to, plus TRANSLATIONS_MARGIN. A driver reporting more has a runaway iterator.
 */
export function translationLimit(dev: Device): number {
  let pages = 0;
  for (const b of dev.bindings.values()) for (const v of b.mm.vmas) pages += v.pages;
  return pages + TRANSLATIONS_MARGIN;
}

/** What constructing a device needs from the core that will hold it. */
export interface AddDeviceHost {
  readonly machine: Machine;
  readonly stats: HmmStats;
  readonly container: DependencyContainer;
  /** Device memory when the device's config does not say (pages). */
  readonly defaultDeviceMemoryPages: number;
  /** Whether a device called `name` is attached now. */
  has(name: string): boolean;
  /** Called when the device's driver fails. */
  deviceFailed(dev: Device, err: DriverError): void;
}

/**
 * Construct a device driven by `plugin` (validated here; `source` names where it came from for
 * messages): its memory, DMA, pagemap registration, and the driver, built in a child container
 * holding the device's context and config. A call that fails leaves no pagemap registered; the
 * caller records the device only once this returns.
 */
export function constructDevice(
  host: AddDeviceHost,
  plugin: HmmPlugin | unknown,
  config: DeviceConfig,
  source: string,
): Device {
  // A shared-mirror plugin follows the legacy layer's contract, not this one: say where it goes
  // before validating it against the per-PTE contract (whose complaints would not apply).
  const design =
    typeof plugin === "object" && plugin !== null ? (plugin as { design?: unknown }).design : undefined;
  if (design === "shared-mirror") {
    const name = (plugin as { name?: unknown }).name;
    throw new HmmError(
      "EINVAL",
      `plugin '${typeof name === "string" ? name : "<unnamed>"}' (${source}) uses the shared-mirror design, which reads HMM's shared mirror: attach it through the legacy layer (@hmmkit/legacy, attachSharedMirror), not HmmCore.addDevice`,
      "PLUGIN_INVALID",
    );
  }
  const p = validatePlugin(plugin, source);
  const own = parseDeviceConfig(config, p);
  const name = own.name;
  if (host.has(name)) throw new HmmError("EEXIST", `a device named '${name}' already exists`, "BAD_CONFIG");
  const want = own.callbackMode ?? "auto";
  const proto = p.driver.prototype as unknown as Record<string, unknown>;
  const hasPte = typeof proto.mirrorPte === "function";
  const hasArray = typeof proto.mirrorPtes === "function";
  const preferred = p.callbackMode ?? "per-pte";
  const mode: CallbackMode =
    want === "array" || (want === "auto" && (!hasPte || (preferred === "array" && hasArray)))
      ? "array"
      : "per-pte";
  if ((mode === "array" && !hasArray) || (mode === "per-pte" && !hasPte)) {
    throw new HmmError(
      "EINVAL",
      `device ${name}: callbackMode '${want}' but plugin '${p.name}' does not implement it`,
      "BAD_CONFIG",
    );
  }
  const npages = own.memoryPages ?? host.defaultDeviceMemoryPages;
  const machine = host.machine;
  const memory = new DeviceMemory(npages, machine.config.contentMode);
  // Counters are cumulative per name: a device re-added under a removed one's name continues them.
  const stats = host.stats.devices.get(name) ?? new DeviceStats();
  const frames = machine.pool.nframes;
  let device: Device | undefined;
  // Until the device exists no copy callback runs, so no DMA is allowed.
  const gate = (): DriverDispatcher => {
    if (device === undefined)
      throw new HmmError(
        "EIO",
        `device ${name}: DMA outside a copy callback (the device is not attached yet)`,
        "DRIVER_DMA",
      );
    return device.dispatcher;
  };
  const dma: DeviceDma = {
    systemToDevice: (spfn, dpfn) => {
      gate().checkDma("systemToDevice", spfn, dpfn, frames, npages);
      machine.pool.content.copyTo(spfn, memory.content, dpfn);
    },
    deviceToSystem: (dpfn, spfn) => {
      gate().checkDma("deviceToSystem", spfn, dpfn, frames, npages);
      memory.content.copyTo(dpfn, machine.pool.content, spfn);
    },
    zeroDevicePage: (dpfn) => {
      gate().checkDma("zeroDevicePage", -1, dpfn, frames, npages);
      memory.content.zero(dpfn);
    },
  };
  const ownerId = machine.registerDevicePagemap({
    name,
    migrateToRam: (mm, _vma, va, dpfn) => migrateOnCpuFault(device!, mm, va, dpfn),
    pageGet: (dpfn, nr) => memory.get(dpfn, nr),
    pagePut: (dpfn) => memory.put(dpfn),
    folioRefs: (dpfn) => memory.folioRefs(dpfn),
    folioSplit: (dpfn) => memory.splitFolio(dpfn),
    pageHash: (dpfn) => memory.content.hash(dpfn),
  });
  try {
    const frozen = Object.freeze({ ...config });
    const context: DeviceContext = { name, ownerId, machine, memory, dma, stats, config: frozen };
    const child = host.container.createChildContainer();
    child.register(TOKENS.DeviceContext, { useValue: context });
    child.register(TOKENS.DeviceConfig, { useValue: frozen });
    let driver: HmmDriver;
    try {
      driver = child.resolve(p.driver as never);
    } catch (e) {
      const missing = /TypeInfo not known/.test(describeThrown(e))
        ? ` (add @injectable() to class ${p.driver.name})`
        : "";
      throw new HmmError(
        "EINVAL",
        `plugin '${p.name}': could not construct driver for ${name}: ${describeThrown(e)}${missing}`,
        "PLUGIN_INVALID",
        { cause: e },
      );
    }
    if (typeof driver !== "object" || driver === null)
      throw new HmmError(
        "EINVAL",
        `plugin '${p.name}': the driver for ${name} is not an object`,
        "PLUGIN_INVALID",
      );
    const huge = own.pmdCallback !== false && typeof proto.mirrorPmd === "function";
    const dispatcher = new DriverDispatcher(
      name,
      p.name,
      driver,
      mode,
      huge,
      stats,
      (err) => host.deviceFailed(device!, err),
      machine,
      () => translationLimit(device!),
    );
    device = new Device(name, ownerId, p, frozen, memory, stats, context, dispatcher);
  } catch (e) {
    machine.unregisterDevicePagemap(ownerId);
    throw e;
  }
  return device;
}
