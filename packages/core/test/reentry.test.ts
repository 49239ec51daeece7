import { ENTRY_MIGRATION, MADV_DONTNEED, MmuNotifyEvent, PROT_READ } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { DriverError, HmmError } from "../src/index.js";
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

const N = 8;

/** gpu0 correct, gpu1 a HostileFakeDriver; a process with 8 written pages, both mirroring 0-3. */
function setup() {
  const sys = makeSystem();
  const { core, machine } = sys;
  const { dev: good, drv: goodDrv } = addFake<RecordingFakeDriver>(core, "gpu0");
  const { dev: bad, drv } = addFake(core, "gpu1", HostileFakeDriver, {}, "hostile-fake");
  const p = machine.createProcess();
  const a = mmapPrivate(p, N * PAGE);
  const data = randomBytes(N * PAGE, 95);
  p.write(a, data);
  core.deviceFault(good, p, a, a + 4 * PAGE, false);
  core.deviceFault(bad, p, a, a + 4 * PAGE, false);
  return { sys, core, machine, good, goodDrv, bad, drv, p, a, data };
}
type Setup = ReturnType<typeof setup>;

/** Re-entries a driver may try from inside a callback, each with what it calls. */
function reentries(s: Setup): Record<string, () => unknown> {
  const { core, p, a, good, bad } = s;
  const other = s.machine.createProcess();
  const fresh = mmapPrivate(p, PAGE);
  return {
    munmap: () => p.mm.munmap(a + 6 * PAGE, PAGE),
    exit: () => p.exit(),
    mmap: () => mmapPrivate(p, PAGE),
    mprotect: () => p.mm.mprotect(a + 6 * PAGE, PAGE, PROT_READ),
    madvise: () => p.mm.madvise(a + 6 * PAGE, PAGE, MADV_DONTNEED),
    fork: () => p.fork(),
    "munmap of another address space": () => other.mm.munmap(0x1000_0000, PAGE),
    "a faulting CPU write": () => p.write(fresh, new Uint8Array([1])),
    "deviceFault on its own device": () => core.deviceFault(bad, p, a + 4 * PAGE, a + 5 * PAGE, false),
    "deviceFault on another device": () => core.deviceFault(good, p, a + 4 * PAGE, a + 5 * PAGE, false),
    migrateToDevice: () => core.migrateToDevice(good, p, a + 5 * PAGE, a + 6 * PAGE),
    snapshot: () => core.snapshot(bad, p, a, a + PAGE),
    removeDevice: () => core.removeDevice(good),
    reap: () => core.reap(),
  };
}

const TRIGGERS: Record<string, (s: Setup) => void> = {
  mirrorPte: (s) => s.core.deviceFault(s.bad, s.p, s.a + 4 * PAGE, s.a + 5 * PAGE, false),
  invalidate: (s) => s.p.mm.munmap(s.a + 3 * PAGE, PAGE),
  copyToDevice: (s) => s.core.migrateToDevice(s.bad, s.p, s.a, s.a + PAGE),
  translations: (s) => s.core.translations(s.bad),
};

/** The re-entry was refused: EDEADLK, device failed and detached, nothing else disturbed. */
function expectRefused(s: Setup, cb: string, what: string, seen: unknown[]) {
  const { core, bad, good, p, a, data } = s;
  expect(seen).toHaveLength(1);
  expect(seen[0]).toBeInstanceOf(HmmError);
  expect((seen[0] as HmmError).errno).toBe("EDEADLK");
  expect((seen[0] as HmmError).code).toBe("DRIVER_REENTRY");
  expect(bad.state).toBe("failed");
  const err = bad.failure!;
  expect(err).toBeInstanceOf(DriverError);
  expect(err.errno).toBe("EDEADLK");
  expect(err.callback).toBe(cb);
  expect(err.message).toContain(`${cb}`);
  expect(err.message).toContain("would deadlock");
  expect(err.message, what).toContain("from inside");
  expect(bad.memory.used).toBe(0);
  expect(bad.bindings.size).toBe(0);
  expect(good.state).toBe("active");
  expect(p.exited).toBe(false);
  expect(p.mm.findVma(a + 6 * PAGE)).not.toBeNull();
  for (let i = 0; i < N; i++) expect(cpuEntry(p.mm, a + i * PAGE)?.kind).not.toBe(ENTRY_MIGRATION);
  expectCoherent(core, good);
  const expected = data.slice();
  if (cb === "invalidate") expected.fill(0, 3 * PAGE, 4 * PAGE); // the munmap itself went on
  if (cb !== "invalidate") expectBytes(p.read(a, N * PAGE), expected);
  p.exit();
  expectNoLeaks(s.sys, [good, bad]);
}

describe("re-entry from inside a driver callback is refused with EDEADLK", () => {
  for (const cb of Object.keys(TRIGGERS)) {
    for (const what of Object.keys(reentries(setup()))) {
      it(`${what} from inside ${cb} is refused, and fails the device even when the driver swallows the error`, () => {
        const s = setup();
        const calls = reentries(s);
        const seen: unknown[] = [];
        const act: HostileAct = () => {
          try {
            calls[what]();
          } catch (e) {
            seen.push(e); // a driver that catches and carries on
          }
        };
        s.drv.arm(cb, act, 0, 1);
        let escaped: unknown = null;
        try {
          TRIGGERS[cb](s);
        } catch (e) {
          escaped = e;
        }
        if (escaped !== null) expect(escaped).toBe(s.bad.failure);
        expectRefused(s, cb, what, seen);
      });
    }
  }

  it("munmap from inside mirrorPte leaves no translation to a freed frame", () => {
    const s = setup();
    s.drv.arm("mirrorPte", () => s.p.mm.munmap(s.a + 4 * PAGE, PAGE), 0, 1);
    const e = thrown(() => s.core.deviceFault(s.bad, s.p, s.a + 4 * PAGE, s.a + 5 * PAGE, false));
    expect(e).toBe(s.bad.failure);
    expect((e as DriverError).message).toMatch(
      /^EDEADLK: \[driver hostile-fake on gpu1\] mirrorPte @ 0x[0-9a-f_]+: munmap from inside mirrorPte/,
    );
    expect(s.p.mm.findVma(s.a + 4 * PAGE)).not.toBeNull();
    expect(s.core.translations(s.bad)).toEqual([]);
    expectCoherent(s.core, s.good);
  });

  it("an invalidate that unmaps the page during a CPU copy-on-write fault leaves no PTE outside a VMA and no leak", () => {
    const s = setup();
    const child = s.p.fork();
    // The parent's write breaks COW: its mirror of the page is invalidated first.
    s.drv.arm("invalidate", (_d, [, start]) => s.p.mm.munmap(start, PAGE));
    s.p.write(s.a, new Uint8Array([7]));
    s.data[0] = 7;
    expect(s.bad.state).toBe("failed");
    expect(s.bad.failure!.errno).toBe("EDEADLK");
    for (let i = 0; i < N; i++) {
      const inVma = s.p.mm.findVma(s.a + i * PAGE) !== null;
      if (!inVma) expect(cpuEntry(s.p.mm, s.a + i * PAGE)).toBeNull();
    }
    expectBytes(s.p.read(s.a, N * PAGE), s.data);
    child.exit();
    s.p.exit();
    expectNoLeaks(s.sys, [s.good, s.bad]);
  });

  it("release runs with no lock held: mm syscalls work there, and the released device refuses new work with ENODEV", () => {
    const s = setup();
    const seen: unknown[] = [];
    s.drv.arm("release", () => {
      s.p.mm.munmap(s.a + 7 * PAGE, PAGE);
      try {
        s.core.deviceFault(s.bad, s.p, s.a, s.a + PAGE, false);
      } catch (e) {
        seen.push(e);
      }
    });
    const before = s.goodDrv.invalidations.length;
    s.core.removeDevice(s.bad);
    expect(s.bad.state).toBe("removed");
    expect(s.p.mm.findVma(s.a + 7 * PAGE)).toBeNull();
    expect(s.goodDrv.invalidations.slice(before).map((i) => i.event)).toContain(MmuNotifyEvent.UNMAP);
    expect(seen).toHaveLength(1);
    expect((seen[0] as HmmError).errno).toBe("ENODEV");
    // No notifier of the removed device is left on the address space.
    expect(s.p.mm.notifiers.size).toBe(1);
    expect(s.bad.bindings.size).toBe(0);
    s.p.exit();
    expectNoLeaks(s.sys, [s.good, s.bad]);
  });

  it("a CPU access that needs no fault is allowed from inside a callback", () => {
    const s = setup();
    let read: Uint8Array | null = null;
    s.drv.arm(
      "mirrorPte",
      () => {
        read = s.p.read(s.a, 4);
      },
      0,
      1,
    );
    s.core.deviceFault(s.bad, s.p, s.a + 4 * PAGE, s.a + 5 * PAGE, false);
    expect(s.bad.state).toBe("active");
    expect(Array.from(read!)).toEqual(Array.from(s.data.subarray(0, 4)));
  });
});
