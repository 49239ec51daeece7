import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { runScenario } from "../src/index.js";
import {
  compareWithGolden,
  type KernelSettings,
  kernelMachineConfig,
  scenarioTitle,
} from "./golden-compare.js";

// Each test/golden/NAME.mm is a scenario and NAME.golden what mmoracle, a reference program that
// runs the scenario on the real kernel, printed for it. Each directory holds the goldens of one
// kernel, whose settings (kernel.json) the simulator runs with, not those of the machine running
// the tests: golden/ (no zero page) and golden/zero-page-on/.
const root = new URL("./golden/", import.meta.url);
const dirs = [
  root,
  ...readdirSync(root, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => new URL(`${d.name}/`, root)),
];

function lines(text: string): string[] {
  const l = text.split("\n");
  if (l[l.length - 1] === "") l.pop();
  return l;
}

for (const dir of dirs) {
  const read = (name: string) => readFileSync(new URL(name, dir), "utf8");
  const kernel = JSON.parse(read("kernel.json")) as KernelSettings;
  // 1 GiB of simulated RAM is plenty for these scenarios; the runner's default (16 GiB) would make
  // each run allocate frame arrays for 4 million frames.
  const config = { ...kernelMachineConfig(kernel), memoryBytes: 1024 ** 3 };
  const scenarios = readdirSync(dir)
    .filter((f) => f.endsWith(".mm"))
    .sort();
  const where = dir === root ? "golden/" : `golden/${dir.pathname.split("/").at(-2)}/`;

  describe(`the simulator does what Linux ${kernel.uname} did (THP ${kernel.thp}, zero page ${kernel.zero_page ? "on" : "off"}; ${where})`, () => {
    it("has a golden output and a one-line title for every scenario", () => {
      expect(scenarios.length).toBeGreaterThan(0);
      const goldens = new Set(readdirSync(dir).filter((f) => f.endsWith(".golden")));
      for (const f of scenarios) {
        expect(goldens.has(f.replace(/\.mm$/, ".golden")), f).toBe(true);
        expect(scenarioTitle(read(f)), f).toMatch(/^\S.*\.$/);
      }
      expect(goldens.size).toBe(scenarios.length);
    });

    for (const f of scenarios) {
      const text = read(f);
      it(scenarioTitle(text), () => {
        const out = runScenario(text, config, { file: f });
        const diff = compareWithGolden(lines(read(f.replace(/\.mm$/, ".golden"))), out);
        expect(diff, `${where}${f}: ${diff}\n--- simulator output:\n${out.join("\n")}`).toBeNull();
      });
    }
  });
}
