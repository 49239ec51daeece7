import "reflect-metadata";
import type { DeviceConfig, HmmCore } from "@hmmkit/core";
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
