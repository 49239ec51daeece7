/**
 * The figures in the package README: a 1 GiB stream run end to end on the two test fakes, and
 * the cost of describing one 1 GiB phase (seeded coins, stamps, the phase rule, the typed-array
 * stream) against a bare DeviceAccesses.push loop of the same accesses, measured in the same
 * process (best of 5). Run: npx tsx --tsconfig tsconfig.base.json --conditions=@hmmkit/source
 * packages/workloads/bench/gib-stream.ts
 */
import "reflect-metadata";
import { DeviceAccesses } from "@hmmkit/core";
import { CpuScript } from "../src/cpu-script.js";
import { DeviceStream } from "../src/device-stream.js";
import { runWorkload } from "../src/index.js";
import { PhaseBuilder, type PhaseSink } from "../src/phase.js";
import { Region } from "../src/region.js";
import { unit5 } from "../src/seeded.js";
import { blockFaultPlugin, mapMirrorPlugin } from "../test/fakes.js";

const PAGES = 262_144;
const spec = "stream:size=1GiB,passes=2,write=0.5";
for (const plugin of [blockFaultPlugin, mapMirrorPlugin]) {
  const t = performance.now();
  const r = runWorkload({ spec, plugin, coherence: "end" });
  const total = performance.now() - t;
  console.log(
    `${spec} on ${plugin.name}: phases ${r.wallMs.toFixed(0)} ms, whole run ${total.toFixed(0)} ms, ok ${r.ok}, ` +
      `${r.deviceStats.accesses} accesses, ${r.checks.data.checked} reads checked, digest ${r.digest}, ` +
      `RSS ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB`,
  );
}

const region = new Region(0, null as never, 0x7f00_0000_0000, PAGES);
const stream = new DeviceStream();
const sink: PhaseSink = { seed: 1, procIndex: () => 0, stream: () => stream, script: () => new CpuScript() };
const bare = new DeviceAccesses(PAGES);
let best = Number.POSITIVE_INFINITY;
let bestBare = Number.POSITIVE_INFINITY;
for (let round = 0; round < 5; round++) {
  region.use.fill(0);
  stream.clear();
  let t = performance.now();
  const p = new PhaseBuilder(sink, "pass", round);
  for (let i = 0; i < PAGES; i++) {
    if (unit5(1, round, 0, i, 7) < 0.5) p.deviceWrite(region, i);
    else p.deviceRead(region, i);
  }
  best = Math.min(best, performance.now() - t);
  bare.clear();
  t = performance.now();
  for (let i = 0; i < PAGES; i++) bare.push(region.va(i), i & 1, i);
  bestBare = Math.min(bestBare, performance.now() - t);
}
const rate = (ms: number) => `${(PAGES / ms / 1000).toFixed(1)} M accesses/s`;
console.log(
  `describing a 1 GiB phase: ${rate(best)}; bare DeviceAccesses.push: ${rate(bestBare)}; ratio ${(bestBare / best).toFixed(2)}x`,
);
