/**
 * Fuzz campaign (b): bad arguments at every public core entry. Each case builds two identical
 * systems, makes one bad call (one argument wrong, the others valid) on the first, then the same
 * valid operation on both: only MmError/HmmError may escape the bad call, and both systems must
 * end in the same state (CPU contents digest, snapshot, frames, notifiers, stats, translations).
 */
import { contentDigest, Machine, TASK_SIZE } from "@hmmkit/mm";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { createHmm, type Device, type HmmSystem, runSteps } from "../src/index.js";
import { fakePlugin, PAGE, RecordingFakeDriver as Recording, type RecordingFakeDriver } from "./fakes.js";
import { FUZZ_TIMEOUT, fuzzRuns, isClearError } from "./fuzz.js";
import { addFake, makeSystem, mmapPrivate, randomBytes } from "./helpers.js";

const N = 16;

function build() {
  const sys = makeSystem({ memoryBytes: 32 * 1024 * 1024 });
  const { core, machine } = sys;
  const { dev } = addFake<RecordingFakeDriver>(core, "gpu0", undefined, { memoryPages: 64 });
  const removed = addFake(core, "gpu9", undefined, { memoryPages: 8 }).dev;
  core.removeDevice(removed);
  const p = machine.createProcess();
  const a = mmapPrivate(p, N * PAGE);
  p.write(a, randomBytes(N * PAGE, 101));
  core.deviceFault(dev, p, a, a + 8 * PAGE, false);
  core.migrateToDevice(dev, p, a + 12 * PAGE, a + 14 * PAGE);
  const gone = machine.createProcess();
  gone.exit();
  return { sys, core, machine, dev, removed, p, a, gone };
}
type World = ReturnType<typeof build>;

function observe(sys: HmmSystem, dev: Device, w: World) {
  const snap = sys.core.snapshot(dev, w.p, w.a, w.a + N * PAGE);
  dev.stats.snapshots--; // observing is not part of the run
  return {
    digest: contentDigest(w.p.mm),
    pfns: Array.from(snap.pfns),
    flags: Array.from(snap.flags),
    frames: sys.machine.usedFrames,
    deviceFrames: dev.memory.used,
    notifiers: w.p.mm.notifiers.size,
    stats: JSON.stringify([...sys.stats.devices].map(([k, v]) => [k, v.snapshot()])),
    translations: sys.core.translations(dev).length,
    devices: [...sys.core.devices.keys()],
  };
}

// Foreign objects, built once: a process of another machine, a device of another core.
const otherMachine = new Machine({ memoryBytes: 8 * 1024 * 1024 });
const foreignProc = otherMachine.createProcess();
const foreignDev = addFake(makeSystem().core, "gpu0").dev;

type Arg = (w: World) => unknown;
const badAddress: fc.Arbitrary<Arg> = fc.constantFrom<Arg>(
  () => Number.NaN,
  () => Number.POSITIVE_INFINITY,
  () => -PAGE,
  (w) => w.a + 0.5,
  (w) => String(w.a),
  () => null,
  () => undefined,
  () => ({}),
  () => 2 ** 47,
  () => 2 ** 53,
  () => TASK_SIZE + PAGE,
  (w) => w.a + 12,
  () => 10n,
);
const badMm: fc.Arbitrary<Arg> = fc.constantFrom<Arg>(
  () => ({}),
  () => null,
  () => "p",
  () => 42,
  (w) => w.machine,
  () => foreignProc,
  () => foreignProc.mm,
  (w) => w.gone,
);
const badDev: fc.Arbitrary<Arg> = fc.constantFrom<Arg>(
  () => ({}),
  () => null,
  () => "gpu0",
  () => foreignDev,
  (w) => w.removed,
);
const badBool: fc.Arbitrary<Arg> = fc.constantFrom<Arg>(
  () => "yes",
  () => 1,
  () => null,
  () => undefined,
);
const badCount: fc.Arbitrary<Arg> = fc.constantFrom<Arg>(
  () => Number.NaN,
  () => -1,
  () => 1e9,
  () => "3",
);

/** One public entry with its valid arguments; `bad` replaces argument `i`. */
interface Entry {
  name: string;
  args: Arg[];
  call: (w: World, args: unknown[]) => unknown;
  pools: fc.Arbitrary<Arg>[];
}
const range: Arg[] = [(w) => w.dev, (w) => w.p, (w) => w.a, (w) => w.a + 4 * PAGE];
const ENTRIES: Entry[] = [
  {
    name: "deviceFault",
    args: [...range, () => true],
    call: (w, x) => w.core.deviceFault(...(x as [Device, never, number, number, boolean])),
    pools: [badDev, badMm, badAddress, badAddress, badBool],
  },
  {
    name: "deviceFaultSteps",
    args: [...range, () => false],
    call: (w, x) => runSteps(w.core.deviceFaultSteps(...(x as [Device, never, number, number, boolean]))),
    pools: [badDev, badMm, badAddress, badAddress, badBool],
  },
  {
    name: "snapshot",
    args: range,
    call: (w, x) => w.core.snapshot(...(x as [Device, never, number, number])),
    pools: [badDev, badMm, badAddress, badAddress],
  },
  {
    name: "snapshotProt",
    args: range,
    call: (w, x) => w.core.snapshotProt(...(x as [Device, never, number, number])),
    pools: [badDev, badMm, badAddress, badAddress],
  },
  {
    name: "makeExclusive",
    args: range,
    call: (w, x) => w.core.makeExclusive(...(x as [Device, never, number, number])),
    pools: [badDev, badMm, badAddress, badAddress],
  },
  {
    name: "migrateToDevice",
    args: range,
    call: (w, x) => w.core.migrateToDevice(...(x as [Device, never, number, number])),
    pools: [badDev, badMm, badAddress, badAddress],
  },
  {
    name: "migrateToDeviceSteps",
    args: range,
    call: (w, x) => runSteps(w.core.migrateToDeviceSteps(...(x as [Device, never, number, number]))),
    pools: [badDev, badMm, badAddress, badAddress],
  },
  {
    name: "migrateToRam",
    args: range,
    call: (w, x) => w.core.migrateToRam(...(x as [Device, never, number, number])),
    pools: [badDev, badMm, badAddress, badAddress],
  },
  {
    name: "migrateToRamSteps",
    args: range,
    call: (w, x) => runSteps(w.core.migrateToRamSteps(...(x as [Device, never, number, number]))),
    pools: [badDev, badMm, badAddress, badAddress],
  },
  {
    name: "evict",
    args: [(w) => w.dev, () => 2],
    call: (w, x) => w.core.evict(...(x as [Device, number])),
    pools: [badDev, badCount],
  },
  {
    name: "translations",
    args: [(w) => w.dev],
    call: (w, x) => w.core.translations(x[0] as Device),
    pools: [badDev],
  },
  {
    name: "bind",
    args: [(w) => w.dev, (w) => w.p],
    call: (w, x) => w.core.bind(...(x as [Device, never])),
    pools: [badDev, badMm],
  },
  {
    name: "unbind",
    args: [(w) => w.dev, (w) => w.p],
    call: (w, x) => w.core.unbind(...(x as [Device, never])),
    pools: [badDev, badMm],
  },
  {
    name: "removeDevice",
    args: [(w) => w.dev],
    call: (w, x) => w.core.removeDevice(x[0] as Device),
    pools: [
      fc.constantFrom<Arg>(
        () => ({}),
        () => null,
        () => foreignDev,
        () => "nope",
      ),
    ],
  },
  {
    name: "device",
    args: [() => "gpu0"],
    call: (w, x) => w.core.device(x[0] as string),
    pools: [
      fc.constantFrom<Arg>(
        () => 1,
        () => null,
        () => "nope",
        () => ({}),
      ),
    ],
  },
  {
    name: "addDevice",
    args: [() => fakePlugin(Recording), () => ({ name: "gpu1", memoryPages: 8 })],
    call: (w, x) => w.core.addDevice(x[0], x[1] as never),
    pools: [
      fc.constantFrom<Arg>(
        () => null,
        () => ({}),
        () => ({ ...fakePlugin(Recording), apiVersion: "9.0.0" }),
      ),
      fc.constantFrom<Arg>(
        () => null,
        () => ({ name: "gpu0" }),
        () => ({ name: "gpu1", memorypages: 8 }),
        () => ({ name: "gpu1", memoryPages: Number.NaN }),
        () => ({ name: "gpu1", evictOnPressure: "false" }),
        () => ({ name: "gpu1", callbackMode: "array" }),
        () => ({ name: "1bad" }),
      ),
    ],
  },
];

const caseArb = fc
  .record({ entry: fc.nat(ENTRIES.length - 1), which: fc.nat(7), follow: fc.nat(3) })
  .chain(({ entry, which, follow }) => {
    const e = ENTRIES[entry];
    const i = which % e.args.length;
    return fc.record({
      entry: fc.constant(e),
      i: fc.constant(i),
      bad: e.pools[i],
      follow: fc.constant(follow),
    });
  });

/** A valid operation run on both systems after the bad call. */
const FOLLOW: ((w: World) => unknown)[] = [
  (w) => w.core.deviceFault(w.dev, w.p, w.a, w.a + N * PAGE, true),
  (w) => w.core.migrateToDevice(w.dev, w.p, w.a + 2 * PAGE, w.a + 6 * PAGE),
  (w) => w.p.write(w.a + 5 * PAGE, new Uint8Array([1, 2, 3])),
  (w) => w.core.migrateToRam(w.dev, w.p, w.a, w.a + N * PAGE),
];

const tally = { cases: 0, clearErrors: 0, accepted: 0, byEntry: new Map<string, number>() };

describe("fuzz: bad arguments at every public core entry", () => {
  it(
    "only clear errors escape, and a rejected call changes nothing (equal to a control run)",
    () => {
      fc.assert(
        fc.property(caseArb, ({ entry, i, bad, follow }) => {
          tally.cases++;
          tally.byEntry.set(entry.name, (tally.byEntry.get(entry.name) ?? 0) + 1);
          const w = build();
          const control = build();
          const args = entry.args.map((f, k) => (k === i ? bad(w) : f(w)));
          const before = observe(w.sys, w.dev, w);
          let rejected = false;
          try {
            entry.call(w, args);
          } catch (e) {
            if (!isClearError(e)) throw e;
            rejected = true;
          }
          if (!rejected) {
            // A valid no-op (unbinding an address space that has exited): it must change nothing.
            expect(observe(w.sys, w.dev, w)).toEqual(before);
            tally.accepted++;
            if (process.env.HMMKIT_FUZZ_REPORT)
              console.info(`ACCEPTED ${entry.name} arg ${i}: ${bad.toString()}`);
            return;
          }
          tally.clearErrors++;
          expect(observe(w.sys, w.dev, w)).toEqual(before);
          FOLLOW[follow](w);
          FOLLOW[follow](control);
          expect(observe(w.sys, w.dev, w)).toEqual(observe(control.sys, control.dev, control));
        }),
        { seed: 0xbad1, numRuns: fuzzRuns(150) },
      );
      if (process.env.HMMKIT_FUZZ_REPORT)
        console.info(
          `bad-input campaign: ${tally.cases} cases, ${tally.clearErrors} clear errors, ${tally.accepted} accepted; by entry: ${[...tally.byEntry].map(([k, v]) => `${k} ${v}`).join(", ")}`,
        );
      expect(tally.clearErrors).toBeGreaterThan(tally.cases * 0.9);
    },
    FUZZ_TIMEOUT,
  );

  it("createHmm with a bad option of any kind is a BAD_CONFIG error", () => {
    const bads: Record<string, unknown>[] = [
      { machne: {} },
      { config: { evictBatchPages: 0 } },
      { config: { evictBatchPages: Number.NaN } },
      { config: null },
      { cost: { overrides: null } },
      { cost: { overrides: { toString: 1 } } },
      { cost: { profile: 3 } },
      { parent: {} },
    ];
    fc.assert(
      fc.property(fc.constantFrom(...bads), (o) => {
        let err: unknown = null;
        try {
          createHmm(o as never);
        } catch (e) {
          err = e;
        }
        expect(isClearError(err)).toBe(true);
        expect((err as { code: string }).code).toBe("BAD_CONFIG");
      }),
      { seed: 7, numRuns: bads.length * 2 },
    );
  });
});
