import { HmmError } from "@hmmkit/core";

/** What a {@link WorkloadSpecError} found wrong. */
export type WorkloadSpecProblem = "syntax" | "unknown-kind" | "unknown-key" | "bad-value";

/**
 * A workload spec string was refused: EINVAL, stable code BAD_SPEC. The message quotes the spec
 * and says what was wrong: the syntax, an unknown kind (with "did you mean" and the list of
 * kinds), an unknown key (with the kind's keys), or a key whose value has the wrong form (with the
 * expected form).
 */
export class WorkloadSpecError extends HmmError {
  override name = "WorkloadSpecError";
  constructor(
    /** The spec text as given. */
    readonly spec: string,
    readonly problem: WorkloadSpecProblem,
    detail: string,
    /** The kind, when the problem is with it or inside it. */
    readonly kind: string | null = null,
    /** The key, for unknown-key and bad-value. */
    readonly key: string | null = null,
  ) {
    super("EINVAL", `workload spec ${JSON.stringify(spec)}: ${detail}`, "BAD_SPEC");
  }
}

/** Runner options were refused: EINVAL, code BAD_CONFIG, naming the key. */
export function badConfig(detail: string): HmmError {
  return new HmmError("EINVAL", `runWorkload options: ${detail}`, "BAD_CONFIG");
}

/**
 * A workload generator broke its own phase rule (a page written by one agent and accessed by
 * another in one phase): a bug in the generator, never in the driver under test. Code
 * WORKLOAD_PHASE_RULE.
 */
export class PhaseRuleError extends HmmError {
  override name = "PhaseRuleError";
  constructor(detail: string) {
    super("EINVAL", `workload phase rule broken: ${detail}`, "WORKLOAD_PHASE_RULE");
  }
}
