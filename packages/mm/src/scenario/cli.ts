import { readFileSync } from "node:fs";
import type { MachineConfig } from "../machine.js";
import { hostMachineConfig } from "./host.js";
import { parseSize, runScenario } from "./runner.js";

const USAGE = `usage: mm-scenario [options] < scenario.mm

Runs an mmoracle scenario on the simulated memory manager and prints the oracle's output format.
By default the simulated kernel takes this host's THP and zero-page settings, so the output can
be diffed with the real kernel's (mmoracle) on the same machine.

  --linux-defaults        ignore the host: THP madvise, zero page and huge zero page on
  --thp=always|madvise|never
  --zero-page=on|off      read faults map the shared zero page
  --huge-zero-page=on|off
  --memory=SIZE           simulated RAM (default 16G)
  --print-config          print the settings used, as JSON, and exit`;

function onOff(flag: string, v: string): boolean {
  if (v === "on") return true;
  if (v === "off") return false;
  throw new Error(`${flag} must be on or off, got '${v}'`);
}

function main(argv: string[]): number {
  let config: Partial<MachineConfig> = hostMachineConfig();
  let printConfig = false;
  for (const arg of argv) {
    const [flag, value = ""] = arg.split("=", 2);
    if (flag === "--help" || flag === "-h") {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    }
    if (flag === "--linux-defaults") config = {};
    else if (flag === "--thp") config.thp = value as MachineConfig["thp"];
    else if (flag === "--zero-page") config.zeroPage = onOff(flag, value);
    else if (flag === "--huge-zero-page") config.hugeZeroPage = onOff(flag, value);
    else if (flag === "--memory") config.memoryBytes = parseSize(value);
    else if (flag === "--print-config") printConfig = true;
    else {
      process.stderr.write(`mm-scenario: unknown option '${arg}'\n${USAGE}\n`);
      return 2;
    }
  }
  if (printConfig) {
    process.stdout.write(`${JSON.stringify(config)}\n`);
    return 0;
  }
  const text = readFileSync(0, "utf8");
  process.stdout.write(`${runScenario(text, config).join("\n")}\n`);
  return 0;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (e) {
  process.stderr.write(`mm-scenario: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
}
