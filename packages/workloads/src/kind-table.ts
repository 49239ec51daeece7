import { HPAGE_PMD_SIZE } from "@hmmkit/mm";
import type { SpecKey } from "./spec-keys.js";

const MiB = 1024 * 1024;

/** The workload kinds. */
export type WorkloadKind =
  | "stream"
  | "random"
  | "stencil"
  | "pingpong"
  | "fork"
  | "churn"
  | "thp"
  | "oversub";

/** What a kind is and the keys its spec takes. */
export interface KindInfo {
  /** One line: what the workload does. */
  readonly summary: string;
  /** Its keys, in the order a normalized spec lists them. */
  readonly keys: Readonly<Record<string, SpecKey>>;
  /** A problem spanning keys (named in the message), or null. */
  readonly check?: (params: Readonly<Record<string, number>>) => { key: string; problem: string } | null;
}

const wave: SpecKey = {
  type: "int",
  default: 0,
  max: 2 ** 31 - 1,
  doc: "device accesses in flight together (a warp or a launch); their faults share the fault buffer; 0: the whole phase at once",
};
const size = (bytes: number, doc = "buffer size"): SpecKey => ({ type: "size", default: bytes, doc });
const passes: SpecKey = { type: "int", default: 1, min: 1, max: 4096, doc: "phases over the buffer" };
const write = (
  f: number,
  doc = "fraction of pages the device writes per phase (the rest it reads)",
): SpecKey => ({
  type: "fraction",
  default: f,
  doc,
});
const cpu: SpecKey = {
  type: "fraction",
  default: 0,
  max: 0.9,
  doc: "fraction of pages the CPU thread reads and writes in each phase, interleaved with the device (the device leaves them alone in that phase)",
};
const init: SpecKey = {
  type: "int",
  default: 1,
  max: 1,
  doc: "1: the CPU writes every page first (a phase of its own), so device reads see data",
};

/**
 * Every kind with its keys and defaults: the one table the parser, its errors and the README
 * use (a test compares the README's table with it).
 */
export const WORKLOAD_KINDS: Readonly<Record<WorkloadKind, KindInfo>> = {
  stream: {
    summary: "sequential device reads and writes over one buffer, `passes` times",
    keys: { size: size(16 * MiB), passes, write: write(0), cpu, init, wave },
  },
  random: {
    summary: "uniformly random device accesses to the pages of one buffer",
    keys: {
      size: size(16 * MiB),
      accesses: { type: "int", default: 4096, min: 1, max: 2 ** 26, doc: "device accesses per phase" },
      passes,
      write: write(0.25),
      cpu,
      init,
      wave,
    },
  },
  stencil: {
    summary:
      "the device reads each page's neighbours in buffer A and writes the page in buffer B, then the buffers swap",
    keys: {
      size: size(4 * MiB, "size of each of the two buffers"),
      iters: { type: "int", default: 4, min: 1, max: 4096, doc: "iterations (phases), swapping A and B" },
      radius: { type: "int", default: 1, max: 16, doc: "neighbours read on each side of a page" },
      cpu: { ...cpu, default: 0.25, doc: "fraction of source pages the CPU thread reads in each iteration" },
      wave,
    },
  },
  pingpong: {
    summary:
      "the CPU and the device alternately write the same pages (each page changes hands every round): migration thrash",
    keys: {
      size: size(4 * MiB),
      rounds: {
        type: "int",
        default: 8,
        min: 1,
        max: 4096,
        doc: "rounds (phases); a page changes hands each round",
      },
      wave,
    },
  },
  fork: {
    summary:
      "the process forks while the device reads its memory; then both CPU threads and the device write in both address spaces; the digest covers parent and child",
    keys: {
      size: size(4 * MiB),
      write: write(0.5, "fraction of pages each side writes after the fork"),
      wave,
    },
  },
  churn: {
    summary:
      "mprotect, munmap+mmap MAP_FIXED, mremap and madvise(DONTNEED) on one chunk while the device works on the others",
    keys: {
      size: size(8 * MiB),
      chunk: size(256 * 1024, "the range each CPU operation changes (the buffer holds size/chunk chunks)"),
      ops: {
        type: "int",
        default: 8,
        min: 1,
        max: 4096,
        doc: "CPU operations (one phase each), cycling through the four",
      },
      write: write(0.5),
      huge: { type: "int", default: 0, max: 1, doc: "1: the buffer is 2 MiB aligned and MADV_HUGEPAGE" },
      wave,
    },
    check: (p) =>
      p.size % p.chunk !== 0 || p.size / p.chunk < 2
        ? { key: "chunk", problem: "must divide 'size' into at least 2 chunks" }
        : null,
  },
  thp: {
    summary: "a stream over a 2 MiB aligned MADV_HUGEPAGE buffer the CPU populated with THPs",
    keys: {
      size: { ...size(8 * MiB), min: HPAGE_PMD_SIZE, multipleOf: HPAGE_PMD_SIZE },
      passes,
      write: write(0),
      cpu,
      wave,
    },
  },
  oversub: {
    summary:
      "a stream over a working set larger than device memory (`factor` times the device's memoryPages; the runner sizes it)",
    keys: {
      factor: { type: "number", default: 1.5, min: 1, max: 64, doc: "working set / device memory" },
      passes: { ...passes, default: 2 },
      write: write(0.5),
      wave,
    },
  },
};

/** The kind names, in table order. */
export const WORKLOAD_KIND_NAMES = Object.keys(WORKLOAD_KINDS) as WorkloadKind[];
