import { describe, expect, it } from "vitest";
import { hex, Machine, setReentryGuard } from "../src/index.js";
import { mmapPrivate, PAGE } from "./helpers.js";

/** A fake re-entry guard that records what it was asked about and refuses while `refusing`. */
class RecordingFakeGuard {
  ops: string[] = [];
  refusing = false;
  readonly guard = (op: string): void => {
    this.ops.push(op);
    if (this.refusing) throw new Error(`refused: ${op}`);
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
  it("is asked once for a touch of many pages, naming the access and its range, not once per fault", () => {
    const { p, fake } = setup();
    const a = mmapPrivate(p, 8 * PAGE);
    fake.ops = [];
    expect(p.touch(a, 8 * PAGE, true, 1).faults).toBe(8);
    expect(fake.ops).toEqual([`a CPU write (touch) of [${hex(a)}, +0x8000)`]);
  });

  it("refuses a touch before any page is accessed", () => {
    const { p, fake, m } = setup();
    const a = mmapPrivate(p, 4 * PAGE);
    p.touch(a, 2 * PAGE, false);
    const faults = p.minorFaults;
    fake.refusing = true;
    expect(() => p.touch(a, 4 * PAGE, true, 7)).toThrow(/refused: a CPU write \(touch\)/);
    expect(p.minorFaults).toBe(faults);
    expect(m.pool.usedFrames).toBe(0);
  });

  it("is asked on every fault of a direct accessPage, with the fault's address, and not on a hit", () => {
    const { p, fake } = setup();
    const a = mmapPrivate(p, 2 * PAGE);
    fake.ops = [];
    p.accessPage(a, true);
    p.accessPage(a, true);
    p.accessPage(a + PAGE, false);
    expect(fake.ops.length).toBe(2);
    expect(fake.ops[0]).toMatch(/^a CPU write fault at 0x/);
    expect(fake.ops[1]).toMatch(/^a CPU read fault at 0x/);
  });
});
