import { PAGE_SIZE } from "@hmmkit/mm";
import type { Params, WorkloadGenerator } from "./generator.js";

/**
 * `pingpong`: every page changes hands each round. In round k the device does an atomic on the
 * pages with (page + k) even (it sees what the CPU wrote the round before, and stores its own
 * stamp), while the CPU thread reads and then writes the others; the next round they swap. A
 * driver that migrates on touch moves every page every round (migration thrash).
 */
export const pingpongWorkload: WorkloadGenerator = {
  pages: (p: Params) => p.size / PAGE_SIZE,
  footprintPages: (p: Params) => p.size / PAGE_SIZE,
  run(w, p) {
    const pages = p.size / PAGE_SIZE;
    const r = w.alloc(pages);
    for (let k = 0; k < p.rounds; k++) {
      const ok = w.phase(`round ${k}`, (ph) => {
        for (let i = 0; i < pages; i++) {
          if (((i + k) & 1) === 0) ph.deviceAtomic(r, i);
          else {
            ph.cpuRead(r, i);
            ph.cpuWrite(r, i);
          }
        }
      });
      if (!ok) return;
    }
  },
};
