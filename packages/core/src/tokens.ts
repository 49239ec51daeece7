/**
 * Dependency-injection tokens (tsyringe). Interfaces have no runtime identity, so every service is
 * registered and injected under a symbol; `Symbol.for` keeps them equal across duplicate copies
 * of this module. A driver constructor takes its services with `@inject(TOKENS.X)` on every
 * parameter (the bundlers in use emit no decorator metadata, so injection by type does not work).
 */
export const TOKENS = {
  /** The simulated machine (`Machine` from @hmmkit/mm). */
  Machine: Symbol.for("hmmkit.Machine"),
  /** The HMM core (`HmmCore`). */
  HmmCore: Symbol.for("hmmkit.HmmCore"),
  /** Statistics (`HmmStats`). */
  Stats: Symbol.for("hmmkit.Stats"),
  /** The cost model (`CostModel`). */
  CostModel: Symbol.for("hmmkit.CostModel"),
  /** Core configuration (`HmmConfig`). */
  Config: Symbol.for("hmmkit.Config"),
  /** The container itself, for creating per-device child containers. */
  Container: Symbol.for("hmmkit.Container"),
  /** In a device's child container: the device's context (`DeviceContext`). */
  DeviceContext: Symbol.for("hmmkit.DeviceContext"),
  /** In a device's child container: the device's configuration (`DeviceConfig`). */
  DeviceConfig: Symbol.for("hmmkit.DeviceConfig"),
} as const;
