import { PAGE_SIZE } from "@hmmkit/mm";
import { hash5, prng, unit5 } from "../seeded.js";
import {
  initPhase,
  type Params,
  SALT_CPU,
  SALT_CPU_WRITE,
  SALT_RANDOM,
  SALT_WRITE,
  type WorkloadGenerator,
} from "./generator.js";

/**
 * `random`: `accesses` device accesses per phase to uniformly random pages. Whether a page is
 * written or read in a phase is the page's seeded coin, so repeated accesses to it agree (a page
 * the device writes is written with the same stamp each time and never read in that phase).
 */
export const randomWorkload: WorkloadGenerator = {
  pages: (p: Params) => p.size / PAGE_SIZE,
  footprintPages: (p: Params) => p.size / PAGE_SIZE,
  run(w, p) {
    const pages = p.size / PAGE_SIZE;
    const r = w.alloc(pages);
    if (p.init === 1 && !initPhase(w, [r])) return;
    const { cpu, write } = p;
    for (let pass = 0; pass < p.passes; pass++) {
      const ok = w.phase(`pass ${pass}`, (ph) => {
        const seed = w.seed;
        const isCpu = (i: number) => cpu > 0 && unit5(seed, ph.index, r.id, i, SALT_CPU) < cpu;
        let devicePages = pages;
        if (cpu > 0)
          for (let i = 0; i < pages; i++) {
            if (!isCpu(i)) continue;
            devicePages--;
            ph.cpuRead(r, i);
            if (unit5(seed, ph.index, r.id, i, SALT_CPU_WRITE) < write) ph.cpuWrite(r, i);
          }
        const rand = prng(hash5(seed, ph.index, r.id, 0, SALT_RANDOM));
        // A small buffer may leave the device no page in a phase: then it has nothing to access.
        for (let a = 0; a < p.accesses && devicePages > 0; a++) {
          let i = Math.floor(rand() * pages);
          // The CPU's pages are left alone in this phase: draw again (cpu <= 0.9, so this ends).
          while (isCpu(i)) i = Math.floor(rand() * pages);
          if (write > 0 && unit5(seed, ph.index, r.id, i, SALT_WRITE) < write) ph.deviceWrite(r, i);
          else ph.deviceRead(r, i);
        }
      });
      if (!ok) return;
    }
  },
};
