import "reflect-metadata";

export { MmuNotifyEvent } from "@hmmkit/mm";
export { refuseInsideCallback } from "./callback-scope.js";
export * from "./coherence.js";
export * from "./container.js";
export * from "./contract.js";
export * from "./cost-model.js";
export * from "./cpu-steps.js";
export * from "./device.js";
export * from "./device-access.js";
export {
  DEFAULT_FAULT_BUFFER,
  type DeviceAccessError,
  type DeviceRunOptions,
  type DeviceRunResult,
  MAX_FAULT_ROUNDS,
} from "./device-exec.js";
export type { DeviceFaultResult } from "./device-fault.js";
export * from "./device-memory.js";
export { didYouMean } from "./did-you-mean.js";
export * from "./dispatcher.js";
export * from "./errors.js";
export * from "./flags.js";
export * from "./hmm-core.js";
export type { MigrateResult } from "./migration.js";
export * from "./mmap-lock.js";
export * from "./plugin.js";
export { PmdSet } from "./pmd-set.js";
export * from "./range.js";
export * from "./scheduler.js";
export * from "./snapshot.js";
export * from "./stats.js";
export * from "./tokens.js";
