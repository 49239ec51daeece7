import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type ContentMode,
  ENTRY_KIND_MASK,
  ENTRY_PRESENT,
  ENTRY_ZERO,
  FRAME_ANON,
  MAP_FIXED,
  MAP_POPULATE,
  MIGRATE_VMA_SELECT_SYSTEM,
  MigrateVma,
  type Mm,
  type MmapOptions,
  MmError,
  makeDeviceExclusive,
  PageTableCursor,
  PROT_EXEC,
  type Process,
  SEG_TABLE,
} from "../src/index.js";
import { PAGE, PRIVATE, RW } from "./helpers.js";
import { machineState } from "./machine-state.js";
import { type Config, configArb, type MProc, type Op, opArb, Run } from "./shadow-model.js";

/**
 * Fuzz campaigns: random sequences of valid operations (the shadow model's, with migrations)
 * interleaved with invalid calls. CI-sized by default; `HMMKIT_FUZZ=long` runs more and longer
 * sequences under more seeds. fast-check prints the seed and path of a failing case; rerun it
 * with that seed.
 */
const LONG = process.env.HMMKIT_FUZZ === "long";
const SEEDS = LONG ? [42, 7, 1999, 31337, 271828] : [42];
const RUNS = LONG ? 100 : 12;
const MAX_OPS = LONG ? 100 : 60;
/** Per test: a long campaign takes minutes. */
const TIMEOUT = LONG ? 30 * 60_000 : 60_000;

/** A call every Linux-faithful mm must refuse without changing anything. */
type BadCall = (p: Process, a: number, pick: number) => unknown;

/** Values that are no address, length, prot or flag word (2^53 is past the safe integers). */
const JUNK: unknown[] = [
  undefined,
  null,
  Number.NaN,
  1.5,
  "3",
  -1,
  2 ** 53,
  Number.POSITIVE_INFINITY,
  {},
  [],
  true,
];
const junk = (pick: number) => JUNK[pick % JUNK.length];

const BAD_CALLS: [string, BadCall][] = [
  [
    "mmap junk prot",
    (p, _a, k) => p.mm.mmap({ length: PAGE, prot: junk(k), flags: PRIVATE } as unknown as MmapOptions),
  ],
  [
    "mmap junk length",
    (p, _a, k) => p.mm.mmap({ length: junk(k), prot: RW, flags: PRIVATE } as unknown as MmapOptions),
  ],
  [
    "mmap junk flags",
    (p, _a, k) => p.mm.mmap({ length: PAGE, prot: RW, flags: junk(k) } as unknown as MmapOptions),
  ],
  [
    "mmap string hint",
    (p, a) => p.mm.mmap({ addr: String(a), length: PAGE, prot: RW, flags: PRIVATE } as never),
  ],
  ["mmap no options", (p) => p.mm.mmap(undefined as unknown as MmapOptions)],
  ["mmap PROT_EXEC", (p) => p.mm.mmap({ length: PAGE, prot: RW | PROT_EXEC, flags: PRIVATE })],
  ["mmap MAP_POPULATE", (p) => p.mm.mmap({ length: PAGE, prot: RW, flags: PRIVATE | MAP_POPULATE })],
  [
    "MAP_FIXED below mmap_min_addr",
    (p, _a, k) => p.mm.mmap({ addr: (k % 16) * PAGE, length: PAGE, prot: RW, flags: PRIVATE | MAP_FIXED }),
  ],
  [
    "MAP_FIXED past TASK_SIZE",
    (p, a) => p.mm.mmap({ addr: 2 ** 48 + a, length: PAGE, prot: RW, flags: PRIVATE | MAP_FIXED }),
  ],
  ["munmap unaligned", (p, a, k) => p.mm.munmap(a + 1 + (k % 4095), PAGE)],
  ["munmap junk length", (p, a, k) => p.mm.munmap(a, junk(k) as number)],
  ["munmap past TASK_SIZE", (p, a) => p.mm.munmap(2 ** 48 + a, PAGE)],
  ["mprotect unknown bits", (p, a, k) => p.mm.mprotect(a, PAGE, RW | (0x10 << (k % 8)))],
  ["mprotect junk prot", (p, a, k) => p.mm.mprotect(a, PAGE, junk(k) as number)],
  ["madvise unknown advice", (p, a, k) => p.mm.madvise(a, PAGE, [5, 6, 7, 26, 99, -1, 1.5][k % 7])],
  ["madvise unaligned", (p, a) => p.mm.madvise(a + 8, PAGE, 4)],
  ["write at 2^48 + a", (p, a, k) => p.writeStamp(2 ** 48 + a, PAGE, k + 1)],
  ["byte write at 2^48 + a", (p, a) => p.write(2 ** 48 + a, new Uint8Array([1]))],
  ["write of a string", (p, a) => p.write(a, "str" as unknown as Uint8Array)],
  ["read junk length", (p, a, k) => p.read(a, junk(k) as number)],
  ["read at 2^48 + a", (p, a) => p.read(2 ** 48 + a, 8)],
  ["touch fractional address", (p, a) => p.touch(a + 0.5, PAGE, true)],
  [
    "migrate_vma past TASK_SIZE",
    (p, a) => new MigrateVma(p.mm, 2 ** 48 + a, 2 ** 48 + a + PAGE, 0, MIGRATE_VMA_SELECT_SYSTEM),
  ],
  [
    "migrate_vma junk end",
    (p, a, k) => new MigrateVma(p.mm, a, junk(k) as number, 0, MIGRATE_VMA_SELECT_SYSTEM),
  ],
  ["make_device_exclusive bad owner", (p, a, k) => makeDeviceExclusive(p.mm, a, [0, 256, -1, 1.5][k % 4])],
  [
    "notifier junk start",
    (p, _a, k) => p.mm.notifiers.insert(junk(k) as number, PAGE, { invalidate: () => true }),
  ],
];

interface BadOp {
  t: "bad";
  who: number;
  region: number;
  call: number;
  pick: number;
}

type FuzzOp = Op | BadOp;

const badArb: fc.Arbitrary<BadOp> = fc.record({
  t: fc.constant("bad" as const),
  who: fc.nat(2),
  region: fc.nat(15),
  call: fc.nat(BAD_CALLS.length - 1),
  pick: fc.nat(64),
});

const fuzzOpArb = (rawWrites: boolean): fc.Arbitrary<FuzzOp> =>
  fc.oneof({ weight: 3, arbitrary: opArb(rawWrites, true) }, { weight: 1, arbitrary: badArb });

/** The state every rejected call must leave alone (a SIGSEGV counts one in the stats, nothing else). */
function stateOf(run: Run): string {
  return machineState(run.machine).replace(/"segv":\d+,?/, "");
}

/** A private VMA that maps an anonymous page has an anon_vma (else fork would not copy the page). */
function checkAnonVmas(mm: Mm): void {
  const pool = mm.machine.pool;
  const cur = new PageTableCursor(mm.pt);
  for (const v of mm.vmas) {
    if (v.shared || v.anonVma !== 0) continue;
    cur.reset(v.start, v.end);
    while (cur.next()) {
      if (cur.kind !== SEG_TABLE) continue;
      for (let i = 0; i < cur.count; i++) {
        const f = mm.pt.pteFlags[cur.leafBase + cur.index + i];
        if ((f & ENTRY_KIND_MASK) === 0 || f & ENTRY_ZERO) continue;
        const pfn = mm.pt.ptePfn[cur.leafBase + cur.index + i];
        const anon = (f & ENTRY_KIND_MASK) !== ENTRY_PRESENT || pool.flags[pfn] & FRAME_ANON;
        if (anon)
          throw new Error(
            `${v.toString()} maps page ${(cur.addr + i * PAGE).toString(16)} but has no anon_vma`,
          );
      }
    }
  }
}

function applyBad(run: Run, op: BadOp): void {
  const mp: MProc = run.procs[op.who % run.procs.length];
  const reg = mp.regions.length > 0 ? mp.regions[op.region % mp.regions.length] : null;
  const a = reg?.start ?? 0x1000_0000;
  const [name, call] = BAD_CALLS[op.call];
  const before = stateOf(run);
  let error: unknown = null;
  try {
    call(mp.proc, a, op.pick);
  } catch (e) {
    error = e;
  }
  if (!(error instanceof MmError)) {
    throw new Error(
      `${name} (pick ${op.pick}) at 0x${a.toString(16)} ${error === null ? "succeeded" : `threw ${String(error)}`}`,
    );
  }
  if (stateOf(run) !== before)
    throw new Error(`${name} (pick ${op.pick}) was refused (${error.message}) but changed the machine`);
}

function runFuzz(mode: ContentMode, config: Config, ops: FuzzOp[]): Run {
  const run = new Run(mode, config);
  for (const op of ops) {
    if (op.t === "bad") applyBad(run, op);
    else {
      try {
        run.stepWatched(op);
      } catch (e) {
        // The model expects the MmErrors Linux gives; anything else is an engine error escaping.
        if (e instanceof TypeError || e instanceof RangeError) throw new Error(`${op.t} escaped with ${e}`);
        throw e;
      }
    }
    run.check();
    for (const mp of run.procs) checkAnonVmas(mp.proc.mm);
  }
  run.finish(); // every process exits; no frame may stay referenced
  return run;
}

describe(`fuzz campaigns (${LONG ? "long" : "CI-sized"}; HMMKIT_FUZZ=long for more)`, () => {
  it.each(SEEDS)(
    "valid and invalid calls keep the model, refuse only with MmError and change nothing when refused (seed %i, bytes mode)",
    (seed) => {
      fc.assert(
        fc.property(
          configArb,
          fc.array(fuzzOpArb(true), { minLength: 10, maxLength: MAX_OPS, size: "max" }),
          (config, ops) => {
            runFuzz("bytes", config, ops);
          },
        ),
        { seed, numRuns: RUNS },
      );
    },
    TIMEOUT,
  );

  it.each(SEEDS)(
    "the same sequences give the same digests after every step in bytes and tag mode (seed %i)",
    (seed) => {
      fc.assert(
        fc.property(
          configArb,
          fc.array(fuzzOpArb(false), { minLength: 10, maxLength: MAX_OPS, size: "max" }),
          (config, ops) => {
            const bytes = runFuzz("bytes", config, ops);
            const tag = runFuzz("tag", config, ops);
            expect(tag.digests).toEqual(bytes.digests);
          },
        ),
        { seed, numRuns: Math.ceil(RUNS / 2) },
      );
    },
    TIMEOUT,
  );
});
