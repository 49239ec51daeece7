import { HPAGE_PMD_SIZE, PAGE_SIZE } from "@hmmkit/mm";
import { initPhase, type Params, streamPasses, type WorkloadGenerator } from "./generator.js";

const PMD_PAGES = HPAGE_PMD_SIZE / PAGE_SIZE;

/** `stream`: sequential device reads and writes over one buffer. */
export const streamWorkload: WorkloadGenerator = {
  pages: (p: Params) => p.size / PAGE_SIZE,
  footprintPages: (p: Params) => p.size / PAGE_SIZE,
  run(w, p) {
    const r = w.alloc(p.size / PAGE_SIZE);
    if (p.init === 1 && !initPhase(w, [r])) return;
    streamPasses(w, r, p.passes, p.write, p.cpu, "pass");
  },
};

/** `thp`: the stream over a 2 MiB aligned MADV_HUGEPAGE buffer, populated with THPs by the CPU first. */
export const thpWorkload: WorkloadGenerator = {
  pages: (p: Params) => p.size / PAGE_SIZE,
  footprintPages: (p: Params) => p.size / PAGE_SIZE + PMD_PAGES,
  run(w, p) {
    const r = w.alloc(p.size / PAGE_SIZE, true);
    if (!initPhase(w, [r])) return;
    streamPasses(w, r, p.passes, p.write, p.cpu, "pass");
  },
};

/** Pages of an oversubscribed working set: `factor` times device memory, rounded up. */
function oversubPages(p: Params, devicePages: number): number {
  return Math.ceil(p.factor * devicePages);
}

/** `oversub`: the stream over a working set `factor` times the device's memory. */
export const oversubWorkload: WorkloadGenerator = {
  pages: oversubPages,
  footprintPages: oversubPages,
  run(w, p) {
    const r = w.alloc(oversubPages(p, w.devicePages));
    if (!initPhase(w, [r])) return;
    streamPasses(w, r, p.passes, p.write, 0, "pass");
  },
};
