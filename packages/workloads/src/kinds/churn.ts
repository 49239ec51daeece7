import {
  HPAGE_PMD_SIZE,
  MADV_DONTNEED,
  MADV_HUGEPAGE,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_PRIVATE,
  MREMAP_FIXED,
  MREMAP_MAYMOVE,
  PAGE_SIZE,
  PROT_READ,
  PROT_WRITE,
} from "@hmmkit/mm";
import type { PhaseBuilder } from "../phase.js";
import type { Region } from "../region.js";
import { unit5 } from "../seeded.js";
import type { WorkloadRun } from "../workload-run.js";
import { initPhase, type Params, SALT_VICTIM, SALT_WRITE, type WorkloadGenerator } from "./generator.js";

/** The four CPU operations, in the order the phases cycle through them. */
const OPS = ["mprotect", "remap", "mremap", "dontneed"] as const;

/**
 * `churn`: in each phase the CPU thread changes the mapping of one chunk (picked by a seeded coin)
 * while the device reads and writes every other chunk, so invalidations, splits of huge PMDs and
 * the device's faults race. Each operation keeps the digest driver-independent:
 * - mprotect: read-only, the CPU reads some of the chunk, read-write again; the device may read
 *   the chunk meanwhile (never write it: that would be a fatal EPERM only in the read-only window);
 * - remap: munmap then mmap MAP_FIXED (a new anonymous mapping reads as zeros, do_anonymous_page;
 *   the shadow is zeroed), then the CPU writes half of the chunk; the device does not touch it in
 *   that phase;
 * - mremap: the chunk moves to a PROT_NONE spare range and back (MREMAP_MAYMOVE|MREMAP_FIXED; the
 *   first unmaps the spare, as mremap_to does), its pages moving with it (move_page_tables), then
 *   the CPU reads a third of it back;
 * - dontneed: madvise(MADV_DONTNEED) (private anonymous pages are zapped and read as zeros next,
 *   madvise_dontneed_single_vma; the shadow is zeroed), then the CPU rewrites every page of the
 *   chunk before anyone reads it.
 */
export const churnWorkload: WorkloadGenerator = {
  pages: (p: Params) => p.size / PAGE_SIZE,
  footprintPages: (p: Params) => p.size / PAGE_SIZE + HPAGE_PMD_SIZE / PAGE_SIZE,
  run(w, p) {
    const pages = p.size / PAGE_SIZE;
    const chunk = p.chunk / PAGE_SIZE;
    const nchunks = pages / chunk;
    const huge = p.huge === 1;
    const r = w.alloc(pages, huge);
    const spare = w.reserve(chunk);
    if (!initPhase(w, [r])) return;
    for (let k = 0; k < p.ops; k++) {
      const victim = Math.floor(unit5(w.seed, k, r.id, 0, SALT_VICTIM) * nchunks);
      const op = OPS[k % OPS.length];
      const first = victim * chunk;
      const ok = w.phase(`${op} chunk ${victim}`, (ph) => {
        for (let i = 0; i < pages; i++) {
          if (i >= first && i < first + chunk) continue;
          if (unit5(w.seed, ph.index, r.id, i, SALT_WRITE) < p.write) ph.deviceWrite(r, i);
          else ph.deviceRead(r, i);
        }
        churnOp(w, ph, r, op, first, chunk, spare, huge);
      });
      if (!ok) return;
    }
  },
};

function churnOp(
  w: WorkloadRun,
  ph: PhaseBuilder,
  r: Region,
  op: (typeof OPS)[number],
  first: number,
  count: number,
  spare: number,
  huge: boolean,
): void {
  const mm = w.proc.mm;
  const va = r.va(first);
  const len = count * PAGE_SIZE;
  const changes = { region: r, first, count };
  switch (op) {
    case "mprotect":
      ph.cpuOp(w.proc, "mprotect-ro", "write", () => mm.mprotect(va, len, PROT_READ), {
        ...changes,
        keepsReadable: true,
      });
      for (let i = first; i < first + count; i += 4) ph.cpuRead(r, i);
      for (let i = first + 1; i < first + count; i += 4) ph.deviceRead(r, i);
      ph.cpuOp(w.proc, "mprotect-rw", "write", () => mm.mprotect(va, len, PROT_READ | PROT_WRITE));
      return;
    case "remap":
      ph.cpuOp(
        w.proc,
        "munmap+mmap",
        "write",
        () => {
          mm.munmap(va, len);
          mm.mmap({
            addr: va,
            length: len,
            prot: PROT_READ | PROT_WRITE,
            flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
          });
          if (huge) mm.madvise(va, len, MADV_HUGEPAGE);
          r.shadow.fill(0, first, first + count);
        },
        changes,
      );
      for (let i = first; i < first + count; i += 2) ph.cpuWrite(r, i);
      return;
    case "mremap":
      ph.cpuOp(
        w.proc,
        "mremap-away",
        "write",
        () => {
          mm.mremap(va, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, spare);
        },
        changes,
      );
      ph.cpuOp(w.proc, "mremap-back", "write", () => {
        mm.mremap(spare, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, va);
      });
      for (let i = first; i < first + count; i += 3) ph.cpuRead(r, i);
      return;
    case "dontneed":
      ph.cpuOp(
        w.proc,
        "madvise-dontneed",
        "read",
        () => {
          mm.madvise(va, len, MADV_DONTNEED);
          r.shadow.fill(0, first, first + count);
        },
        changes,
      );
      for (let i = first; i < first + count; i++) ph.cpuWrite(r, i);
      return;
  }
}
