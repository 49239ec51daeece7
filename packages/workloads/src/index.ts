export { PhaseRuleError, WorkloadSpecError, type WorkloadSpecProblem } from "./errors.js";
export { type KindInfo, WORKLOAD_KIND_NAMES, WORKLOAD_KINDS, type WorkloadKind } from "./kind-table.js";
export type { RunWorkloadOptions } from "./options.js";
export type { DataMismatch, ReadAgent } from "./oracle.js";
export type { CancelledAccess, RunFailure, WorkloadReport } from "./report.js";
export { defaultMemoryBytes, runWorkload } from "./runner.js";
export { parseWorkloadSpec, resolveWorkloadSpec, type WorkloadSpec, workloadKindsMarkdown } from "./spec.js";
export { describeKeyForm, type SpecKey, type SpecKeyType } from "./spec-keys.js";
export { formatBinarySize, parseBinarySize } from "./units.js";
