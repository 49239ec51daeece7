import { PAGE_SIZE } from "@hmmkit/mm";
import { unit5 } from "../seeded.js";
import { initPhase, type Params, SALT_CPU, type WorkloadGenerator } from "./generator.js";

/**
 * `stencil`: buffers A and B; in each iteration the device reads the `radius` neighbours on each
 * side of every page of the source (and the page itself) and writes the page in the destination;
 * then they swap. The CPU thread reads a `cpu` fraction of the source meanwhile (readers only).
 */
export const stencilWorkload: WorkloadGenerator = {
  pages: (p: Params) => p.size / PAGE_SIZE,
  footprintPages: (p: Params) => (2 * p.size) / PAGE_SIZE,
  run(w, p) {
    const pages = p.size / PAGE_SIZE;
    const a = w.alloc(pages);
    const b = w.alloc(pages);
    if (!initPhase(w, [a])) return;
    for (let it = 0; it < p.iters; it++) {
      const src = it % 2 === 0 ? a : b;
      const dst = it % 2 === 0 ? b : a;
      const ok = w.phase(`iter ${it}`, (ph) => {
        for (let i = 0; i < pages; i++) {
          const lo = Math.max(0, i - p.radius);
          const hi = Math.min(pages - 1, i + p.radius);
          for (let j = lo; j <= hi; j++) ph.deviceRead(src, j);
          ph.deviceWrite(dst, i);
        }
        if (p.cpu > 0)
          for (let i = 0; i < pages; i++)
            if (unit5(w.seed, ph.index, src.id, i, SALT_CPU) < p.cpu) ph.cpuRead(src, i);
      });
      if (!ok) return;
    }
  },
};
