import { ENTRY_DEVICE_PRIVATE, ENTRY_MIGRATION, entryOwner, hex, type Mm } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { type Device, DriverError, HmmError, type HmmSystem } from "../src/index.js";
import { type HostileAct, HostileFakeDriver, PAGE, type RecordingFakeDriver } from "./fakes.js";
import {
  addFake,
  cpuEntry,
  expectBytes,
  expectCoherent,
  expectNoLeaks,
  makeSystem,
  mmapPrivate,
  randomBytes,
  thrown,
} from "./helpers.js";

const N = 16;

/** Values no message can be built from the usual way. */
export const UNPRINTABLE: Record<string, () => unknown> = {
  "an object without a prototype": () => Object.create(null),
  "an Error whose message getter throws": () => {
    const e = new Error("hidden");
    Object.defineProperty(e, "message", {
      get() {
        throw new Error("message getter");
      },
    });
    return e;
  },
  "a Symbol": () => Symbol("hostile"),
  "a Proxy that throws on every trap": () =>
    new Proxy(
      {},
      new Proxy(
        {},
        {
          get: () => () => {
            throw new Error("trap");
          },
        },
      ),
    ),
};

/** A throw of `make()`'s value. */
const throwing =
  (make: () => unknown): HostileAct =>
  () => {
    throw make();
  };

/** Recursion without end: a RangeError (maximum call stack size exceeded) inside the callback. */
const overflow: HostileAct = () => {
  const f = (n: number): number => f(n + 1) + 1;
  return f(0);
};

/**
 * gpu0 (a correct driver) mirrors pages 0-7 of a 16-page process and holds pages 8-9 in its
 * memory; gpu1 runs a HostileFakeDriver holding pages 12-15 in its memory.
 */
function setup() {
  const sys = makeSystem();
  const { core, machine } = sys;
  const { dev: good, drv: goodDrv } = addFake<RecordingFakeDriver>(core, "gpu0");
  const { dev: bad, drv } = addFake(core, "gpu1", HostileFakeDriver, {}, "hostile-fake");
  const p = machine.createProcess();
  const a = mmapPrivate(p, N * PAGE);
  const data = randomBytes(N * PAGE, 91);
  p.write(a, data);
  core.deviceFault(good, p, a, a + 8 * PAGE, true);
  expect(core.migrateToDevice(good, p, a + 8 * PAGE, a + 10 * PAGE).migrated).toBe(2);
  expect(core.migrateToDevice(bad, p, a + 12 * PAGE, a + 16 * PAGE).migrated).toBe(4);
  core.deviceFault(bad, p, a, a + 4 * PAGE, false);
  return { sys, core, machine, good, goodDrv, bad, drv, p, a, data };
}

type Setup = ReturnType<typeof setup>;

/** Trigger each callback of gpu1 in a way the callback is reached from. */
const TRIGGERS: Record<string, (s: Setup) => void> = {
  mirrorPte: (s) => s.core.deviceFault(s.bad, s.p, s.a + 4 * PAGE, s.a + 8 * PAGE, false),
  copyToDevice: (s) => s.core.migrateToDevice(s.bad, s.p, s.a, s.a + 4 * PAGE),
  invalidate: (s) => {
    const f = mmapPrivate(s.p, 2 * PAGE);
    s.p.write(f, new Uint8Array([1]));
    s.p.mm.munmap(f, 2 * PAGE);
  },
  copyFromDevice: (s) => s.p.read(s.a + 13 * PAGE, PAGE),
};

/** No page of [a, a + n pages) is left behind a migration entry (EBUSY forever). */
function expectNoMigrationEntries(mm: Mm, a: number, n: number): void {
  for (let i = 0; i < n; i++) {
    const e = cpuEntry(mm, a + i * PAGE);
    expect(e?.kind, `page ${i}`).not.toBe(ENTRY_MIGRATION);
  }
}

/** The hostile device failed, is detached and empty; data is intact; gpu0 works; nothing leaks. */
function expectContained(s: Setup, sys: HmmSystem = s.sys): DriverError {
  const { core, good, goodDrv, bad, p, a, data } = s;
  expect(bad.state).toBe("failed");
  const err = bad.failure!;
  expect(err).toBeInstanceOf(DriverError);
  expect(err.device).toBe("gpu1");
  expect(typeof err.message).toBe("string");
  // Detached right away, not at some later operation.
  expect(bad.memory.used).toBe(0);
  expect(bad.bindings.size).toBe(0);
  expect(p.mm.notifiers.size).toBe(1);
  expect(core.translations(bad)).toEqual([]);
  for (let i = 0; i < N; i++) {
    const e = cpuEntry(p.mm, a + i * PAGE);
    if (e !== null && e.kind === ENTRY_DEVICE_PRIVATE) expect(entryOwner(e.flags)).toBe(good.ownerId);
  }
  expectNoMigrationEntries(p.mm, a, N);
  expect(thrown(() => core.deviceFault(bad, p, a, a + PAGE, false))).toBe(err);
  expectCoherent(core, good);
  expectBytes(p.read(a, N * PAGE), data, "CPU view");
  expect(core.deviceFault(good, p, a, a + N * PAGE, false).pages).toBe(N);
  expectBytes(goodDrv.deviceRead(p.mm.id, a, N * PAGE), data, "gpu0's view");
  p.exit();
  expectNoLeaks(sys, [good, bad]);
  return err;
}

/** Run `trigger`; whatever escapes must be the device's DriverError (or nothing). */
function runContained(s: Setup, trigger: (s: Setup) => void): void {
  let escaped: unknown = null;
  try {
    trigger(s);
  } catch (e) {
    escaped = e;
  }
  if (escaped !== null) {
    expect(escaped).toBeInstanceOf(HmmError);
    expect(escaped).toBe(s.bad.failure);
  }
}

describe("containment holds for any thrown value", () => {
  for (const [kind, make] of Object.entries(UNPRINTABLE)) {
    for (const [cb, trigger] of Object.entries(TRIGGERS)) {
      it(`${kind} thrown from ${cb} fails the device with a DriverError and loses nothing`, () => {
        const s = setup();
        s.drv.arm(cb, throwing(make));
        runContained(s, trigger);
        const err = expectContained(s);
        expect(err.callback).toBe(cb);
        expect(err.message).toMatch(new RegExp(`^EIO: \\[driver hostile-fake on gpu1\\] ${cb} @ 0x`));
      });
    }
  }

  it("the message says what was thrown when it can, and names an unprintable value as such", () => {
    const msg = (make: () => unknown) => {
      const s = setup();
      s.drv.arm("mirrorPte", throwing(make));
      runContained(s, TRIGGERS.mirrorPte);
      return s.bad.failure!.message;
    };
    expect(msg(UNPRINTABLE["a Symbol"])).toContain("Symbol(hostile)");
    expect(msg(UNPRINTABLE["an object without a prototype"])).toContain("unprintable");
    expect(msg(UNPRINTABLE["an Error whose message getter throws"])).toContain("message cannot be read");
    expect(msg(UNPRINTABLE["a Proxy that throws on every trap"])).toContain("unprintable");
    expect(msg(() => 42)).toMatch(/mirrorPte @ 0x[0-9a-f_]+: 42$/);
  });

  for (const [cb, trigger] of Object.entries(TRIGGERS)) {
    it(`a stack overflow in ${cb} fails the device and evacuates it before the operation returns`, () => {
      const s = setup();
      s.drv.arm(cb, overflow);
      runContained(s, trigger);
      const err = expectContained(s);
      expect(err.cause).toBeInstanceOf(RangeError);
      expect(err.message).toContain("Maximum call stack size exceeded");
    });
  }

  it("a stack overflow inside a migration's invalidation rolls the migration back", () => {
    const s = setup();
    s.drv.arm("invalidate", overflow);
    const e = thrown(() => s.core.migrateToDevice(s.bad, s.p, s.a + 4 * PAGE, s.a + 8 * PAGE));
    expect(e).toBe(s.bad.failure);
    expectContained(s);
  });
});

describe("driver callbacks must be synchronous", () => {
  const ASYNC: Record<string, HostileAct> = {
    "a rejected Promise": () => Promise.reject(new Error("async failure")),
    "a resolved Promise": () => Promise.resolve(),
    // biome-ignore lint/suspicious/noThenProperty: a hand-made thenable is what this case returns
    "a thenable": () => ({ then: (_ok: unknown, fail: (e: unknown) => void) => fail(new Error("late")) }),
    "an async function's result": async () => {
      throw new Error("async throw");
    },
  };
  for (const [kind, act] of Object.entries(ASYNC)) {
    for (const [cb, trigger] of Object.entries(TRIGGERS)) {
      it(`${kind} returned from ${cb} fails the device at once, and its rejection is not left unhandled`, async () => {
        const s = setup();
        s.drv.arm(cb, act);
        runContained(s, trigger);
        const err = expectContained(s);
        expect(err.code).toBe("DRIVER_ASYNC");
        expect(err.message).toContain(`${cb} @ `);
        expect(err.message).toContain("driver callbacks must be synchronous");
        // Let the rejection surface: vitest fails the run on an unhandled one.
        await new Promise((r) => setTimeout(r, 5));
      });
    }
  }

  it("a Promise returned from translations fails the device without an unhandled rejection", async () => {
    const s = setup();
    s.drv.arm("translations", () => Promise.reject(new Error("async translations")));
    expect(s.core.translations(s.bad)).toEqual([]);
    expect(s.bad.failure!.code).toBe("DRIVER_ASYNC");
    expectContained(s);
    await new Promise((r) => setTimeout(r, 5));
  });

  it("a non-thenable return value is ignored, as the contract's 'return nothing' allows", () => {
    const s = setup();
    s.drv.arm("mirrorPte", () => 7);
    expect(s.core.deviceFault(s.bad, s.p, s.a + 4 * PAGE, s.a + 8 * PAGE, false).pages).toBe(4);
    expect(s.bad.state).toBe("active");
    expect(s.drv.mirrored(s.p.mm.id)).toBe(12);
  });
});

/** Exported for other suites: the hex form of an address in messages. */
export const at = (va: number) => hex(va);
export type { Device };
