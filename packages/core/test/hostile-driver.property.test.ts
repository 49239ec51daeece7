/**
 * Fuzz campaign (a): hostile drivers across random core operations and CPU accesses. A correct
 * driver (gpu0) and a HostileFakeDriver (gpu1, armed with a random act in a random callback) share
 * one process; after every operation only MmError/HmmError may escape, and at the end the CPU's
 * contents equal a shadow model, gpu1 is failed and detached (or, if its act never ran or was
 * benign, coherent), gpu0 is active and coherent, and after exit nothing leaks.
 */
import { ENTRY_MIGRATION, MADV_DONTNEED } from "@hmmkit/mm";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { DriverError } from "../src/index.js";
import { HostileFakeDriver, PAGE, type RecordingFakeDriver } from "./fakes.js";
import {
  ACT_KINDS,
  type ActKind,
  FUZZ_TIMEOUT,
  fuzzRuns,
  hostileAct,
  hostilePlan,
  isClearError,
} from "./fuzz.js";
import {
  addFake,
  cpuEntry,
  expectBytes,
  expectCoherent,
  makeSystem,
  mmapHuge,
  mmapPrivate,
} from "./helpers.js";

const SMALL = 32;
const HUGE = 512;

const page = fc.nat(511);
const region = fc.nat(1);
const dev = fc.constantFrom(0, 1, 1);
const len = (max: number) => fc.integer({ min: 1, max });
const op = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      t: fc.constant("write"),
      region,
      page,
      len: len(6),
      v: fc.integer({ min: 1, max: 255 }),
    }),
  },
  { weight: 3, arbitrary: fc.record({ t: fc.constant("read"), region, page, len: len(6) }) },
  {
    weight: 6,
    arbitrary: fc.record({ t: fc.constant("fault"), dev, region, page, len: len(64), write: fc.boolean() }),
  },
  { weight: 6, arbitrary: fc.record({ t: fc.constant("toDevice"), dev, region, page, len: len(16) }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant("toRam"), dev, region, page, len: len(16) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("dontneed"), region, page, len: len(4) }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant("exclusive"), dev, region, page, len: len(4) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("evict"), dev, n: len(8) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("translations"), dev }) },
);

const tally = {
  cases: 0,
  ops: 0,
  clearErrors: 0,
  failedDevices: 0,
  actsRun: 0,
  byKind: new Map<ActKind, number>(),
};

describe("fuzz: hostile drivers are contained", () => {
  it(
    "any act in any callback: only clear errors escape, data matches a shadow model, nothing leaks",
    () => {
      fc.assert(
        fc.property(
          hostilePlan,
          fc.constantFrom("per-pte", "array"),
          fc.array(op, { minLength: 6, maxLength: 20 }),
          (plan, mode, ops) => {
            tally.cases++;
            tally.byKind.set(plan.kind, (tally.byKind.get(plan.kind) ?? 0) + 1);
            const sys = makeSystem({ memoryBytes: 64 * 1024 * 1024 });
            const { core, machine } = sys;
            const { dev: good } = addFake<RecordingFakeDriver>(core, "gpu0", undefined, {
              memoryPages: 64,
            });
            const { dev: bad, drv } = addFake(
              core,
              "gpu1",
              HostileFakeDriver,
              { memoryPages: 64, callbackMode: mode },
              "hostile-fake",
            );
            const p = machine.createProcess();
            const regions = [mmapPrivate(p, SMALL * PAGE), mmapHuge(p, 1)];
            const sizes = [SMALL, HUGE];
            const shadow = [new Uint8Array(SMALL * PAGE), new Uint8Array(HUGE * PAGE)];
            const spare = mmapPrivate(p, PAGE);
            const fresh = mmapPrivate(p, 4 * PAGE);
            let freshUsed = 0;
            // The mirror callback of the form this device uses.
            const mirrorCb = mode === "array" ? "mirrorPtes" : "mirrorPte";
            drv.arm(
              plan.cb === "mirrorPte" || plan.cb === "mirrorPtes" ? mirrorCb : plan.cb,
              hostileAct(plan.kind, () => ({
                core,
                munmap: () => p.mm.munmap(spare, PAGE),
                cpuFault: () => p.write(fresh + (freshUsed++ % 4) * PAGE, new Uint8Array([1])),
                otherDeviceFault: () => core.deviceFault(good, p, regions[0], regions[0] + PAGE, false),
              })),
              plan.after,
            );
            const devs = [good, bad];
            // After the random operations, a sweep that reaches every callback of gpu1 a few times.
            const sweep = [
              { t: "write", region: 2, page: 0, len: 1, v: 3 },
              { t: "fault", dev: 1, region: 2, page: 8, len: 8, write: false },
              ...[0, 1, 2, 3].flatMap((k) => [
                { t: "fault", dev: 1, region: k % 2, page: k * 4, len: 4, write: k % 2 === 1 },
                { t: "toDevice", dev: 1, region: 0, page: 16 + k * 2, len: 2 },
                { t: "read", region: 0, page: 16 + k * 2, len: 2 },
                { t: "write", region: 1, page: k, len: 1, v: 9 + k },
                { t: "translations", dev: 1 },
              ]),
            ];
            for (const o of [...ops, ...sweep] as typeof ops) {
              tally.ops++;
              const r = "region" in o ? o.region : 0;
              const base = regions[r];
              const page = "page" in o ? o.page % sizes[r] : 0;
              const len = "len" in o ? Math.min(o.len, sizes[r] - page) : 0;
              const va = base + page * PAGE;
              try {
                switch (o.t) {
                  case "write": {
                    const bytes = new Uint8Array(len * PAGE).fill(o.v);
                    p.write(va, bytes);
                    shadow[r].set(bytes, page * PAGE);
                    break;
                  }
                  case "read":
                    expectBytes(
                      p.read(va, len * PAGE),
                      shadow[r].subarray(page * PAGE, (page + len) * PAGE),
                      "CPU read",
                    );
                    break;
                  case "fault":
                    core.deviceFault(devs[o.dev], p, va, va + len * PAGE, o.write);
                    break;
                  case "toDevice":
                    core.migrateToDevice(devs[o.dev], p, va, va + len * PAGE);
                    break;
                  case "toRam":
                    core.migrateToRam(devs[o.dev], p, va, va + len * PAGE);
                    break;
                  case "dontneed":
                    p.mm.madvise(va, len * PAGE, MADV_DONTNEED);
                    shadow[r].fill(0, page * PAGE, (page + len) * PAGE);
                    break;
                  case "exclusive":
                    core.makeExclusive(devs[o.dev], p, va, va + len * PAGE);
                    break;
                  case "evict":
                    core.evict(devs[o.dev], Math.min(o.n, devs[o.dev].memory.npages));
                    break;
                  case "translations":
                    core.translations(devs[o.dev]);
                    break;
                }
              } catch (e) {
                if (!isClearError(e)) throw e;
                tally.clearErrors++;
                // A device that failed reports its own DriverError.
                if (e instanceof DriverError)
                  expect(e.device === "gpu1" ? bad.failure : good.failure).toBe(e);
              }
            }
            // The correct device is never disturbed.
            expect(good.state).toBe("active");
            expectCoherent(core, good);
            const harmful = drv.acted > 0 && plan.kind !== "benign-return-value" && plan.cb !== "release";
            if (harmful) {
              tally.failedDevices++;
              expect(bad.failure).toBeInstanceOf(DriverError);
              expect(bad.state).not.toBe("active");
              expect(bad.memory.used).toBe(0);
              expect(bad.bindings.size).toBe(0);
              expect(core.translations(bad)).toEqual([]);
            } else if (bad.state === "active") {
              expect(bad.failure).toBeNull();
              expectCoherent(core, bad);
            }
            // Removal brings everything home, whatever release does.
            try {
              core.removeDevice(bad);
            } catch (e) {
              if (!isClearError(e)) throw e;
            }
            expect(bad.state).toBe("removed");
            expect(bad.memory.used).toBe(0);
            if (drv.acted > 0) tally.actsRun++;
            for (let r = 0; r < regions.length; r++) {
              for (let i = 0; i < sizes[r]; i++)
                expect(cpuEntry(p.mm, regions[r] + i * PAGE)?.kind).not.toBe(ENTRY_MIGRATION);
              expectBytes(p.read(regions[r], sizes[r] * PAGE), shadow[r], `region ${r}`);
            }
            p.exit();
            expect(machine.usedFrames).toBe(0);
            expect(good.memory.used).toBe(0);
            expect(bad.memory.used).toBe(0);
          },
        ),
        { seed: 0x4057, numRuns: fuzzRuns(40) },
      );
      if (process.env.HMMKIT_FUZZ_REPORT) {
        console.info(
          `hostile-driver campaign: ${tally.cases} cases, ${tally.ops} operations, ${tally.actsRun} with the act run, ${tally.failedDevices} devices failed, ${tally.clearErrors} clear errors; by act: ${ACT_KINDS.map((k) => `${k} ${tally.byKind.get(k) ?? 0}`).join(", ")}`,
        );
      }
    },
    FUZZ_TIMEOUT,
  );
});
