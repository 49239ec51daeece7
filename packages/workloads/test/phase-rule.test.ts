import { describe, expect, it } from "vitest";
import { PhaseRuleError } from "../src/index.js";
import {
  Region,
  USE_CPU_READ,
  USE_CPU_WRITE,
  USE_DEVICE_ATOMIC,
  USE_DEVICE_READ,
  USE_DEVICE_WRITE,
} from "../src/region.js";

/** A region of 4 pages at 0x10000 (the process is never used by mark). */
function region(): Region {
  return new Region(0, null as never, 0x10000, 4);
}

function refused(first: number, second: number): boolean {
  const r = region();
  r.mark(0, first, "p");
  try {
    r.mark(0, second, "p");
    return false;
  } catch (e) {
    expect(e).toBeInstanceOf(PhaseRuleError);
    expect((e as PhaseRuleError).code).toBe("WORKLOAD_PHASE_RULE");
    expect((e as Error).message).toMatch(/phase 'p': .* of page 0x1_0000 \(region 0\), which already has /);
    return true;
  }
}

describe("the phase rule", () => {
  it("a page one agent writes is touched by no other agent in that phase", () => {
    expect(refused(USE_DEVICE_WRITE, USE_CPU_READ)).toBe(true);
    expect(refused(USE_DEVICE_WRITE, USE_CPU_WRITE)).toBe(true);
    expect(refused(USE_CPU_WRITE, USE_DEVICE_READ)).toBe(true);
    expect(refused(USE_CPU_WRITE, USE_DEVICE_WRITE)).toBe(true);
    expect(refused(USE_CPU_READ, USE_DEVICE_ATOMIC)).toBe(true);
  });

  it("the device never reads a page it writes in the phase, and does at most one atomic per page", () => {
    expect(refused(USE_DEVICE_WRITE, USE_DEVICE_READ)).toBe(true);
    expect(refused(USE_DEVICE_READ, USE_DEVICE_WRITE)).toBe(true);
    expect(refused(USE_DEVICE_ATOMIC, USE_DEVICE_ATOMIC)).toBe(true);
  });

  it("readers share a page, the CPU may read what it wrote, and the device may rewrite its own stamp", () => {
    expect(refused(USE_CPU_READ, USE_DEVICE_READ)).toBe(false);
    expect(refused(USE_DEVICE_READ, USE_CPU_READ)).toBe(false);
    expect(refused(USE_CPU_WRITE, USE_CPU_READ)).toBe(false);
    expect(refused(USE_CPU_READ, USE_CPU_WRITE)).toBe(false);
    expect(refused(USE_DEVICE_WRITE, USE_DEVICE_WRITE)).toBe(false);
    expect(refused(USE_DEVICE_READ, USE_DEVICE_READ)).toBe(false);
  });
});
