import { PAGE_SIZE } from "@hmmkit/mm";
import { unit5 } from "../seeded.js";
import { initPhase, type Params, SALT_CPU_WRITE, SALT_WRITE, type WorkloadGenerator } from "./generator.js";

/**
 * `fork`: the CPU writes the buffer; then it forks while the device reads all of it (the device
 * writes nothing in that phase: a write racing the fork would make the child's copy depend on
 * the interleaving). After the fork, `write` of the parent's pages are written (alternately by
 * the parent's CPU thread and by the device, which breaks COW through a device write fault), the
 * device reads the rest; `write` of the child's pages are written too (by the child's CPU thread,
 * and by the device, which mirrors the child as well and breaks COW on the child's side), and the
 * child reads the others. A last phase reads everything back: the device both address spaces,
 * each CPU thread half of its own.
 */
export const forkWorkload: WorkloadGenerator = {
  pages: (p: Params) => p.size / PAGE_SIZE,
  footprintPages: (p: Params) => (2 * p.size) / PAGE_SIZE,
  run(w, p) {
    const pages = p.size / PAGE_SIZE;
    const r = w.alloc(pages);
    if (!initPhase(w, [r])) return;
    const forked = w.phase("fork", (ph) => {
      for (let i = 0; i < pages; i++) ph.deviceRead(r, i);
      ph.cpuOp(w.proc, "fork", "write", () => {
        w.fork();
      });
    });
    if (!forked) return;
    const c = w.childOf(r);
    const wrote = w.phase("after fork", (ph) => {
      for (let i = 0; i < pages; i++) {
        if (unit5(w.seed, ph.index, r.id, i, SALT_WRITE) < p.write) {
          if (i % 2 === 0) ph.cpuWrite(r, i);
          else ph.deviceWrite(r, i);
        } else ph.deviceRead(r, i);
        if (unit5(w.seed, ph.index, c.id, i, SALT_CPU_WRITE) < p.write) {
          if (i % 2 === 0) ph.cpuWrite(c, i);
          else ph.deviceWrite(c, i);
        } else ph.cpuRead(c, i);
      }
    });
    if (!wrote) return;
    w.phase("check", (ph) => {
      for (let i = 0; i < pages; i++) {
        ph.deviceRead(r, i);
        ph.deviceRead(c, i);
        if (i % 2 === 0) ph.cpuRead(r, i);
        else ph.cpuRead(c, i);
      }
    });
  },
};
