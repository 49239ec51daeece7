import {
  HPAGE_PMD_SIZE,
  MADV_HUGEPAGE,
  MADV_NOHUGEPAGE,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  PROT_READ,
  PROT_WRITE,
  type Process,
} from "@hmmkit/mm";

const GIB = 1024 ** 3;
/**
 * A small benchmark harness for ratios that hold on a noisy machine: every case is warmed up,
 * then the cases are timed in interleaved rounds (so drift hits all of them alike) and each keeps
 * its best round (interference only ever slows a run down).
 */

export interface Measurement {
  name: string;
  /** Seconds per call, best round. */
  seconds: number;
  /** Items processed per call (PTEs, pages). */
  items: number;
}

interface Case {
  name: string;
  items: number;
  fn: () => void;
  /** Untimed work before each timed call (fresh state the call consumes); timed one call at a time. */
  setup: (() => void) | null;
  batch: number;
  best: number;
}

const now = () => Number(process.hrtime.bigint()) / 1e6;

/** Interleaved rounds a case is timed in, by default (see Bench.run). */
export const BENCH_ROUNDS = 15;

/** Cases measured together. */
export class Bench {
  private readonly cases: Case[] = [];

  /** Register a case: `fn` processes `items` items per call. */
  add(name: string, items: number, fn: () => void): this {
    this.cases.push({ name, items, fn, setup: null, batch: 1, best: Number.POSITIVE_INFINITY });
    return this;
  }

  /**
   * Register a case whose every call needs fresh state made by `setup` (a new mapping to fault,
   * a new fork to break COW in): `setup` runs before each call, outside the timed part.
   */
  addWithSetup(name: string, items: number, setup: () => void, fn: () => void): this {
    this.cases.push({ name, items, fn, setup, batch: 1, best: Number.POSITIVE_INFINITY });
    return this;
  }

  /**
   * Warm every case up, then time `rounds` interleaved rounds of about `sampleMs` per case. Fifteen
   * rounds by default: with nine, the access-path ratios of repeated runs on a quiet 2-core
   * machine spread from 0.18x to 0.35x (a round or two still before V8 finished compiling a
   * case's loop, or under a neighbour's load); with fifteen, within 0.31x-0.33x.
   */
  run(rounds = BENCH_ROUNDS, sampleMs = 25, warmupMs = 300): Map<string, Measurement> {
    for (const c of this.cases) {
      const t = now();
      let calls = 0;
      let spent = 0;
      while (now() - t < warmupMs || calls < 3) {
        spent += this.call(c);
        calls++;
      }
      c.batch = c.setup ? 1 : Math.max(1, Math.ceil(sampleMs / Math.max(spent / calls, 1e-6)));
    }
    for (let r = 0; r < rounds; r++) {
      for (const c of this.cases) {
        let spent: number;
        if (c.setup) spent = this.call(c);
        else {
          const t = now();
          for (let i = 0; i < c.batch; i++) c.fn();
          spent = now() - t;
        }
        c.best = Math.min(c.best, spent / c.batch / 1000);
      }
    }
    return new Map(this.cases.map((c) => [c.name, { name: c.name, seconds: c.best, items: c.items }]));
  }

  /** One call of `c`, after its untimed setup; returns the milliseconds it took. */
  private call(c: Case): number {
    c.setup?.();
    const t = now();
    c.fn();
    return now() - t;
  }
}

/** Items per second of a measurement. */
export function rate(m: Measurement): number {
  return m.items / m.seconds;
}

/** Format a rate: "123.4 M/s". */
export function fmtRate(r: number): string {
  if (r >= 1e9) return `${(r / 1e9).toFixed(2)} G/s`;
  if (r >= 1e6) return `${(r / 1e6).toFixed(1)} M/s`;
  return `${(r / 1e3).toFixed(1)} k/s`;
}

/**
 * A 2 MiB-aligned private anonymous GiB in `p`, THP on or off (`huge`), every page written with
 * `stamp` (populated: 4 KiB pages, or THPs). Returns its address.
 */
export function populatedGiB(p: Process, huge: boolean, stamp: number): number {
  const raw = p.mm.mmap({
    length: GIB + HPAGE_PMD_SIZE,
    prot: PROT_READ | PROT_WRITE,
    flags: MAP_PRIVATE | MAP_ANONYMOUS,
  });
  const base = raw % HPAGE_PMD_SIZE === 0 ? raw : raw - (raw % HPAGE_PMD_SIZE) + HPAGE_PMD_SIZE;
  p.mm.madvise(base, GIB, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  p.touch(base, GIB, true, stamp);
  return base;
}
