import { HmmError } from "./errors.js";

/**
 * A step of simulated work: a generator that yields at each preemption point (the yielded string
 * names the point, e.g. "fault:walk→commit") and returns its result.
 */
export type Steps<T = unknown> = Generator<string, T, void>;

/** Run a step generator to completion on the calling thread (no interleaving). */
export function runSteps<T>(steps: Steps<T>): T {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

/** The outcome of one scheduled task. */
export interface TaskResult {
  readonly name: string;
  readonly value?: unknown;
  readonly error?: unknown;
  readonly steps: number;
}

/** mulberry32: a small, fast, seeded PRNG. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A deterministic scheduler for simulated CPU threads and device fault handlers. Each task is a
 * step generator; at every step the scheduler picks the next runnable task with a PRNG seeded by
 * `seed`, so the same seed replays the same interleaving (the trace says which task ran to which
 * preemption point). A task that throws ends with its error recorded; the others go on.
 */
export class Scheduler {
  private readonly tasks: { name: string; steps: Steps; count: number }[] = [];
  readonly results = new Map<string, TaskResult>();
  /** "task@point" for every step taken, in order. */
  readonly trace: string[] = [];
  private readonly random: () => number;

  constructor(readonly seed: number) {
    if (!Number.isSafeInteger(seed))
      throw new HmmError(
        "EINVAL",
        `Scheduler: 'seed' must be an integer, got ${String(seed)}`,
        "BAD_ARGUMENT",
      );
    this.random = prng(seed);
  }

  /** Add a task. Names must be unique. */
  spawn(name: string, steps: Steps): this {
    if (typeof name !== "string")
      throw new HmmError(
        "EINVAL",
        `Scheduler.spawn: 'name' must be a string, got ${typeof name}`,
        "BAD_ARGUMENT",
      );
    if (typeof (steps as { next?: unknown } | null)?.next !== "function")
      throw new HmmError(
        "EINVAL",
        `Scheduler.spawn: 'steps' of task '${name}' must be a step generator (an operation's ...Steps form), got ${steps === null ? "null" : typeof steps}`,
        "BAD_ARGUMENT",
      );
    if (this.tasks.some((t) => t.name === name) || this.results.has(name)) {
      throw new HmmError("EEXIST", `scheduler: a task named '${name}' already exists`, "BAD_ARGUMENT");
    }
    this.tasks.push({ name, steps, count: 0 });
    return this;
  }

  /** Run until every task finished, or `maxSteps` steps (then the rest are abandoned: an error). */
  run(maxSteps = 1_000_000): Map<string, TaskResult> {
    if (!Number.isSafeInteger(maxSteps) || maxSteps < 0)
      throw new HmmError(
        "EINVAL",
        `Scheduler.run: 'maxSteps' must be a non-negative integer, got ${String(maxSteps)}`,
        "BAD_ARGUMENT",
      );
    let n = 0;
    while (this.tasks.length > 0) {
      if (n++ >= maxSteps) {
        for (const t of this.tasks) {
          t.steps.return(undefined as never);
          this.results.set(t.name, {
            name: t.name,
            error: new Error(`did not finish in ${maxSteps} steps (seed ${this.seed})`),
            steps: t.count,
          });
        }
        this.tasks.length = 0;
        break;
      }
      const i = Math.floor(this.random() * this.tasks.length);
      const t = this.tasks[i];
      t.count++;
      let r: IteratorResult<string, unknown>;
      try {
        r = t.steps.next();
      } catch (error) {
        this.tasks.splice(i, 1);
        this.trace.push(`${t.name}@throw`);
        this.results.set(t.name, { name: t.name, error, steps: t.count });
        continue;
      }
      if (r.done) {
        this.tasks.splice(i, 1);
        this.trace.push(`${t.name}@done`);
        this.results.set(t.name, { name: t.name, value: r.value, steps: t.count });
      } else {
        this.trace.push(`${t.name}@${r.value}`);
      }
    }
    return this.results;
  }

  /** Value returned by task `name`; throws its error if it failed. */
  result<T>(name: string): T {
    const r = this.results.get(name);
    if (r === undefined)
      throw new HmmError("ENOENT", `scheduler: no finished task '${name}'`, "BAD_ARGUMENT");
    if (r.error !== undefined) throw r.error;
    return r.value as T;
  }
}
