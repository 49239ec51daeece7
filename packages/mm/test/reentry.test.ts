import { describe, expect, it } from "vitest";
import { describeReentry, hex, Machine, setReentryGuard } from "../src/index.js";
import { mmapPrivate, PAGE } from "./helpers.js";

/** A fake re-entry guard that records what it was asked about and refuses while `refusing`. */
class RecordingFakeGuard {
  ops: string[] = [];
  refusing = false;
  readonly guard = (op: string, va?: number): void => {
    const what = describeReentry(op, va);
    this.ops.push(what);
    if (this.refusing) throw new Error(`refused: ${what}`);
  };
}

function setup() {
  const m = new Machine({ contentMode: "tag" });
  const p = m.createProcess();
  const fake = new RecordingFakeGuard();
  setReentryGuard(m, fake.guard);
  return { m, p, fake };
}

describe("the re-entry guard on CPU accesses", () => {
  it("is asked once per fault of a touch, naming the access and the page, and not for accesses that need none", () => {
    const { p, fake } = setup();
    const a = mmapPrivate(p, 4 * PAGE);
    p.touch(a, 2 * PAGE, true, 1);
    fake.ops = [];
    expect(p.touch(a, 4 * PAGE, false).faults).toBe(2);
    expect(fake.ops).toEqual([
      `a CPU read fault at ${hex(a + 2 * PAGE)}`,
      `a CPU read fault at ${hex(a + 3 * PAGE)}`,
    ]);
  });

  it("refuses a touch at its first fault, after the accesses that needed none", () => {
    const { p, fake } = setup();
    const a = mmapPrivate(p, 4 * PAGE);
    p.touch(a, 2 * PAGE, true, 1);
    const faults = p.minorFaults;
    fake.refusing = true;
    expect(() => p.touch(a, 4 * PAGE, true, 7)).toThrow(`refused: a CPU write fault at ${hex(a + 2 * PAGE)}`);
    expect(p.minorFaults).toBe(faults);
    expect(p.mm.rssAnon).toBe(2);
  });
});
