import { stampToken } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { runWorkload } from "../src/index.js";
import { fakePlugin, mapMirrorPlugin, StaleFakeDriver, WrongFrameFakeDriver } from "./fakes.js";

const DEVICE = { memoryPages: 256 };

describe("the data oracle", () => {
  it("catches a driver whose translate gives the wrong frame while verifyTranslations is off", () => {
    const r = runWorkload({
      spec: "stream:size=256KiB,passes=1,write=0",
      plugin: fakePlugin(WrongFrameFakeDriver, "wrong-frame-fake"),
      device: DEVICE,
      verifyTranslations: false,
    });
    // Every device read saw the neighbouring frame's page; the CPU's own reads and the sweep are right.
    expect(r.failure).toBeNull();
    expect(r.checks.data.mismatches).toBe(64);
    expect(r.ok).toBe(false);
    const m = r.checks.data.first[0];
    expect(m.agent).toBe("device");
    expect(m.phase).toBe(1);
    expect(m.phaseName).toBe("pass 0");
    expect(m.process).toBe("parent");
    expect(m.address).toMatch(/^0x[0-9a-f_]+$/);
    expect(m.expected).not.toBe(m.seen);
    expect(m.expected).not.toBe(0);
    expect(r.checks.data.first).toHaveLength(16);
    expect(r.checks.data.first.map((x) => x.va)).toEqual(
      [...r.checks.data.first.map((x) => x.va)].sort((a, b) => a - b),
    );
  });

  it("with verifyTranslations on, the same driver fails its device (DRIVER_STALE) and the run reports it", () => {
    const r = runWorkload({
      spec: "stream:size=256KiB,passes=1,write=0",
      plugin: fakePlugin(WrongFrameFakeDriver, "wrong-frame-fake"),
      device: DEVICE,
    });
    expect(r.failure?.source).toBe("device");
    expect(r.failure?.code).toBe("DRIVER_STALE");
    expect(r.failure?.phaseName).toBe("pass 0");
    expect(r.checks.data.mismatches).toBe(0);
    expect(r.checks.leaks).toEqual({ frames: 0, deviceFrames: 0 });
  });

  it("expects the stamp each agent wrote: a correct run's CPU, device and sweep reads all match", () => {
    const r = runWorkload({ spec: "pingpong:size=64KiB,rounds=3", plugin: mapMirrorPlugin, device: DEVICE });
    // Rounds: 8 device atomics + 8 CPU reads each; then the sweep reads 16 pages.
    expect(r.checks.data.checked).toBe(3 * 16 + 16);
    expect(r.checks.data.mismatches).toBe(0);
    expect(stampToken(0)).not.toBe(0);
  });
});

describe("the coherence check", () => {
  it("finds translations a driver kept after the CPU page table changed", () => {
    const r = runWorkload({
      spec: "churn:size=1MiB,chunk=256KiB,ops=4",
      plugin: fakePlugin(StaleFakeDriver, "stale-fake"),
      device: DEVICE,
      verifyTranslations: false,
    });
    expect(r.checks.coherence.violations).toBeGreaterThan(0);
    expect(r.checks.coherence.first[0]).toMatch(/^phase \d+ '[a-z-]+ chunk \d+': dev0: mm \d+ va 0x/);
    expect(r.ok).toBe(false);
  });
});
