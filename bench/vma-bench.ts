import { MAP_ANONYMOUS, MAP_PRIVATE, Machine, type Mm, PROT_READ, PROT_WRITE } from "@hmmkit/mm";
import type { Bench } from "./harness.js";

const PAGE = 4096;
const RW = PROT_READ | PROT_WRITE;
/** Syscalls per timed call of a steady-state case. */
export const VMA_OPS_PER_CALL = 4000;

/** Protection of mapping `i`: alternating, so that neighbours never merge. */
const protOf = (i: number): number => (i & 1 ? RW : PROT_READ);

/** A seeded xorshift32, so every run does the same operations. */
function xorshift(seed: number): () => number {
  let x = seed | 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}

/** One address space holding `count` separate one-page mappings, and how long building it took. */
export interface VmaSetup {
  count: number;
  mm: Mm;
  /** Start of mapping i (placed top-down, so addresses fall as i grows). */
  addrs: Float64Array;
  /** Seconds the `count` mmap calls took. */
  buildSeconds: number;
}

/** mmap `count` one-page mappings without a hint (each one a getUnmappedArea search). */
export function buildVmas(count: number): VmaSetup {
  const machine = new Machine({ contentMode: "tag", memoryBytes: 64 * 1024 * 1024, maxMapCount: 1 << 20 });
  const mm = machine.createProcess().mm;
  const addrs = new Float64Array(count);
  const t = process.hrtime.bigint();
  for (let i = 0; i < count; i++) {
    addrs[i] = mm.mmap({ length: PAGE, prot: protOf(i), flags: MAP_PRIVATE | MAP_ANONYMOUS });
  }
  const buildSeconds = Number(process.hrtime.bigint() - t) / 1e9;
  if (mm.vmas.size !== count) throw new Error(`expected ${count} VMAs, got ${mm.vmas.size}`);
  return { count, mm, addrs, buildSeconds };
}

/**
 * Steady-state VMA operations among `setup.count` mappings: per step, at a random mapping, munmap
 * it and mmap a page again without a hint (the top-down search must find the hole it left, the
 * highest free gap), then mprotect it to its neighbours' protection (a three-way merge) and back (a
 * split into three). The mapping count is the same after every step.
 */
export function addVmaCase(bench: Bench, name: string, setup: VmaSetup): void {
  const { mm, addrs, count } = setup;
  const next = xorshift(0x5eed + count);
  bench.add(name, VMA_OPS_PER_CALL, () => {
    for (let k = 0; k < VMA_OPS_PER_CALL; k += 4) {
      // Not the first or last mapping, so both neighbours exist.
      const i = 1 + (next() % (count - 2));
      const a = addrs[i];
      const prot = protOf(i);
      mm.munmap(a, PAGE);
      const b = mm.mmap({ length: PAGE, prot, flags: MAP_PRIVATE | MAP_ANONYMOUS });
      if (b !== a) throw new Error(`mmap placed ${b.toString(16)}, expected the hole at ${a.toString(16)}`);
      mm.mprotect(a, PAGE, prot ^ PROT_WRITE);
      mm.mprotect(a, PAGE, prot);
    }
  });
}
