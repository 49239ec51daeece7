/**
 * Dependency-injection tokens of the legacy layer. A shared-mirror driver is built in a child
 * container holding the core's tokens (TOKENS.DeviceContext, TOKENS.DeviceConfig, TOKENS.HmmCore,
 * ...) and these.
 */
export const LEGACY_TOKENS = {
  /** The device's `SharedMirror` (its mirrors, options and counters). */
  SharedMirror: Symbol.for("hmmkit.legacy.SharedMirror"),
} as const;
