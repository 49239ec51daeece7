import "reflect-metadata";
import { runWorkload, type WorkloadReport } from "@hmmkit/workloads";
import { parseArgs, USAGE, UsageError } from "./args.js";
import { DESIGNS } from "./designs.js";
import { formatTable } from "./table.js";

/** What one comparison found: per workload, one report per design. */
export interface Comparison {
  readonly designs: readonly string[];
  readonly runs: readonly { readonly spec: string; readonly reports: readonly WorkloadReport[] }[];
  /** Every design gave the first one's digest on every workload, and every run was clean. */
  readonly agree: boolean;
}

/**
 * Run the comparison `argv` asks for and print its tables with `out`. Returns the exit code: 0 when
 * every design agrees and every run is clean, 1 when not, 2 for bad input (the message goes to
 * `err`, without a stack trace).
 */
export function main(
  argv: readonly string[],
  out: (line: string) => void = console.log,
  err: (line: string) => void = console.error,
): number {
  let args: ReturnType<typeof parseArgs>;
  try {
    args = parseArgs(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    err(`compare-designs: ${e.message}`);
    err(USAGE);
    return 2;
  }
  if (args.help) {
    out(USAGE);
    return 0;
  }
  const c = compare(args.specs, args.designs, args.seed, args.contentMode);
  out(`seed ${args.seed}, ${args.contentMode} content; designs:`);
  for (const name of c.designs) out(`  ${name}: ${DESIGNS.find((d) => d.name === name)!.description}`);
  for (const run of c.runs) {
    out("");
    for (const line of formatTable(run.spec, c.designs, run.reports)) out(line);
  }
  out("");
  out(c.agree ? "every design gave the same final memory on every workload" : "DESIGNS DISAGREE (see above)");
  return c.agree ? 0 : 1;
}

/** Run every spec on every named design with the same seed. */
export function compare(
  specs: readonly string[],
  designs: readonly string[],
  seed = 1,
  contentMode: "tag" | "bytes" = "tag",
): Comparison {
  const chosen = DESIGNS.filter((d) => designs.includes(d.name));
  const runs = specs.map((spec) => ({
    spec,
    reports: chosen.map((d) => runWorkload({ spec, seed, machine: { contentMode }, ...d.options })),
  }));
  const agree = runs.every((r) => r.reports.every((x) => x.ok && x.digest === r.reports[0].digest));
  return { designs: chosen.map((d) => d.name), runs, agree };
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split("/").pop()!))
  process.exitCode = main(process.argv.slice(2));
