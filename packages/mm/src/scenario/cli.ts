import { readFileSync, writeSync } from "node:fs";
import type { MachineConfig } from "../machine.js";
import { hostMachineConfig } from "./host.js";
import { ScenarioSyntaxError } from "./parse.js";
import { parseSize, runScenario } from "./runner.js";

const USAGE = `usage: mm-scenario [options] [scenario.mm]    (reads stdin without a file)

Runs an mmoracle scenario on the simulated memory manager and prints the oracle's output format.
By default the simulated kernel takes this host's THP and zero-page settings, so the output can
be diffed with the real kernel's (mmoracle) on the same machine.

  --linux-defaults        ignore the host: THP madvise, zero page and huge zero page on
  --thp=always|madvise|never
  --zero-page=on|off      read faults map the shared zero page
  --huge-zero-page=on|off
  --memory=SIZE           simulated RAM (default 16G)
  --print-config          print the settings used, as JSON, and exit

A line that does not parse stops the run with 'FILE:LINE: what is wrong' on stderr and exit
status 2; the output of the lines before it is printed.`;

function onOff(flag: string, v: string): boolean {
  if (v === "on") return true;
  if (v === "off") return false;
  throw new UsageError(`${flag} must be on or off, got '${v}'`);
}

function main(argv: string[]): number {
  let config: Partial<MachineConfig> = hostMachineConfig();
  let printConfig = false;
  let file: string | null = null;
  for (const arg of argv) {
    if (!arg.startsWith("-")) {
      if (file !== null) {
        process.stderr.write(`mm-scenario: more than one scenario file given ('${file}', '${arg}')\n`);
        return 2;
      }
      file = arg;
      continue;
    }
    const [flag, value = ""] = arg.split("=", 2);
    if (flag === "--help" || flag === "-h") {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    }
    if (flag === "--linux-defaults") config = {};
    else if (flag === "--thp") {
      if (value !== "always" && value !== "madvise" && value !== "never")
        throw new UsageError(`--thp must be always, madvise or never, got '${value}'`);
      config.thp = value;
    } else if (flag === "--zero-page") config.zeroPage = onOff(flag, value);
    else if (flag === "--huge-zero-page") config.hugeZeroPage = onOff(flag, value);
    else if (flag === "--memory") {
      try {
        config.memoryBytes = parseSize(value);
      } catch (e) {
        throw new UsageError(`--memory: ${(e as Error).message}`);
      }
    } else if (flag === "--print-config") printConfig = true;
    else {
      process.stderr.write(`mm-scenario: unknown option '${arg}'\n${USAGE}\n`);
      return 2;
    }
  }
  if (printConfig) {
    process.stdout.write(`${JSON.stringify(config)}\n`);
    return 0;
  }
  let text: string;
  try {
    text = readFileSync(file ?? 0, "utf8");
  } catch (e) {
    process.stderr.write(`mm-scenario: cannot read ${file ?? "stdin"}: ${(e as Error).message}\n`);
    return 2;
  }
  // Each line is written as it is produced, so a later bad line keeps the output before it.
  try {
    runScenario(text, config, { file: file ?? "<stdin>", onLine: (l) => writeSync(1, `${l}\n`) });
  } catch (e) {
    if (e instanceof ScenarioSyntaxError) {
      process.stderr.write(`${e.message}\n`);
      return 2;
    }
    throw e;
  }
  return 0;
}

/** A bad command-line option (exit status 2). */
class UsageError extends Error {}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (e) {
  process.stderr.write(`mm-scenario: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = e instanceof UsageError ? 2 : 1;
}
