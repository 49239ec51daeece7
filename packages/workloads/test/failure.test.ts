import { describe, expect, it } from "vitest";
import { runWorkload } from "../src/index.js";
import { fakePlugin, ThrowingFakeDriver, ThrowingMigratingFakeDriver } from "./fakes.js";

describe("a driver that fails mid-run", () => {
  it("gives a report with the device failure, the data written before it intact, and nothing leaked", () => {
    // 64 pages: the CPU writes them all, then the device writes about half and reads the rest,
    // in waves of 16 accesses; its 41st mirrorPte throws, in the third wave of the first pass.
    const r = runWorkload({
      spec: "stream:size=256KiB,passes=2,write=0.5,wave=16",
      plugin: fakePlugin(ThrowingFakeDriver, "throwing-fake"),
      device: { memoryPages: 64, throwAfter: 40 },
    });
    expect(r.failure).not.toBeNull();
    expect(r.failure!.source).toBe("device");
    expect(r.failure!.code).toBe("DRIVER_FAILED");
    expect(r.failure!.message).toContain("fake mirrorPte failure after 40 calls");
    expect(r.failure!.phaseName).toBe("pass 0");
    expect(r.phases).toBe(2); // init, pass 0; pass 1 never ran
    // Two waves completed before the failure (the device wrote some of their pages)...
    expect(r.deviceStats.accesses).toBe(32);
    expect(r.errors.cancelled).toBe(32);
    expect(r.errors.cancelled).toBeGreaterThan(0);
    expect(r.errors.first[0].errno).toBe("ENODEV");
    // ... and the final sweep found every page as the shadow of the completed writes says.
    expect(r.checks.data.checked).toBeGreaterThanOrEqual(64);
    expect(r.checks.data.mismatches).toBe(0);
    expect(r.checks.leaks).toEqual({ frames: 0, deviceFrames: 0 });
    expect(r.ok).toBe(false);
  });
});

describe("a migrating driver that fails mid-run", () => {
  it("has its pages brought home by the core: the sweep finds what the device wrote in its memory", () => {
    const r = runWorkload({
      spec: "pingpong:size=256KiB,rounds=4,wave=16",
      plugin: fakePlugin(ThrowingMigratingFakeDriver, "throwing-migrating-fake"),
      device: { memoryPages: 64, throwAfter: 70 },
      machine: { contentMode: "bytes" },
    });
    expect(r.failure?.source).toBe("device");
    expect(r.failure?.phaseName).toBe("round 1");
    expect(r.deviceStats.migratedToDevice).toBeGreaterThan(0);
    expect(r.deviceStats.localAccesses).toBeGreaterThan(0);
    expect(r.checks.data.mismatches).toBe(0);
    expect(r.checks.data.checked).toBeGreaterThanOrEqual(64);
    expect(r.checks.leaks).toEqual({ frames: 0, deviceFrames: 0 });
  });
});
