import "reflect-metadata";
import type { Device, DeviceConfig, HmmCore, HmmSystem } from "@hmmkit/core";
import { type AttachedSharedMirror, attachSharedMirror, type LegacyOptions } from "@hmmkit/legacy";
import { legacyPlugin } from "./driver.js";

export { DeviceTable } from "./device-table.js";
export { LegacyDeviceDriver, legacyPlugin } from "./driver.js";
export default legacyPlugin;

/**
 * Attach a legacy device to `core` through @hmmkit/legacy (attachSharedMirror with this package's
 * plugin). `config` defaults to `{ name: "legacy0" }`.
 */
export function attachLegacy(
  core: HmmCore,
  config: DeviceConfig = { name: "legacy0" },
  options?: Partial<LegacyOptions>,
): AttachedSharedMirror {
  return attachSharedMirror(core, legacyPlugin, config, options, "@hmmkit/driver-legacy");
}

/**
 * A runWorkload `attach` hook (@hmmkit/workloads): attaches a legacy device to the system's core
 * and returns the core's device. `config.name` defaults to "dev0".
 */
export function legacyAttach(
  config: Partial<DeviceConfig> = {},
  options?: Partial<LegacyOptions>,
): (system: HmmSystem) => Device {
  return (system) => attachLegacy(system.core, { name: "dev0", ...config }, options).device;
}
