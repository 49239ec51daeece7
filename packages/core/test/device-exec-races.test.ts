import { MADV_DONTNEED } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { DeviceAccesses, type DeviceRunResult, Scheduler } from "../src/index.js";
import { PAGE, TranslatingFakeDriver } from "./fakes.js";
import { addFake, makeSystem, mmapPrivate } from "./helpers.js";

/**
 * Two devices run accesses on one address space while a CPU thread forks (write-protecting every
 * private page for COW) and zaps memory nobody else touches. Every translation is checked against
 * the CPU page table at every access, so a stale one fails its device; every write must land.
 */
describe("device access path under the seeded scheduler", () => {
  for (const seed of [1, 2, 3, 5, 8, 13, 21, 34]) {
    it(`seed ${seed}: two devices and a forking CPU thread, no stale translation, every write lands`, () => {
      const sys = makeSystem({ contentMode: seed % 2 === 0 ? "bytes" : "tag" });
      const p = sys.machine.createProcess();
      const base = mmapPrivate(p, 96 * PAGE);
      for (let i = 32; i < 96; i++) p.writeStamp(base + i * PAGE, PAGE, 7000 + i);
      const a = addFake(sys.core, "devA", TranslatingFakeDriver).dev;
      const b = addFake(sys.core, "devB", TranslatingFakeDriver).dev;
      const wa = new DeviceAccesses();
      for (let round = 0; round < 3; round++)
        for (let i = 0; i < 32; i++) wa.write(base + i * PAGE, round * 100 + i);
      const rb = new DeviceAccesses();
      for (let round = 0; round < 3; round++) for (let i = 32; i < 64; i++) rb.read(base + i * PAGE);
      const sched = new Scheduler(seed);
      sched.spawn("devA", sys.core.runDeviceSteps(a, p.mm, wa, { wave: 8 }));
      sched.spawn("devB", sys.core.runDeviceSteps(b, p.mm, rb, { wave: 16 }));
      sched.spawn(
        "cpu",
        (function* () {
          for (let k = 0; k < 4; k++) {
            const child = p.fork();
            yield "cpu:fork";
            child.exit();
            yield "cpu:exit";
            p.mm.madvise(base + (64 + k * 8) * PAGE, 8 * PAGE, MADV_DONTNEED);
            yield "cpu:madvise";
          }
        })(),
      );
      sched.run();
      const ra = sched.result<DeviceRunResult>("devA");
      const rbr = sched.result<DeviceRunResult>("devB");
      expect(ra.deviceFailure).toBeNull();
      expect(rbr.deviceFailure).toBeNull();
      expect(ra.completed).toBe(96);
      // The forks reached the devices (COW write-protection is a PROTECTION_PAGE invalidation).
      expect(a.stats.invalidations).toBeGreaterThan(0);
      const lastA = sched.trace.map((t) => t.startsWith("devA@")).lastIndexOf(true);
      expect(sched.trace.findIndex((t) => t.startsWith("cpu@"))).toBeLessThan(lastA);
      expect(rbr.completed).toBe(96);
      for (let j = 0; j < rb.count; j++) expect(rb.seen[j]).toBe(p.readPageHash(rb.va[j]));
      // Within a wave the order of writes to one page is the wave's order: the last round wins.
      const q = mmapPrivate(p, PAGE);
      for (let i = 0; i < 32; i++) {
        p.writeStamp(q, PAGE, 200 + i);
        expect(p.readPageHash(base + i * PAGE)).toBe(p.readPageHash(q));
      }
      p.exit();
      expect(sys.machine.usedFrames).toBe(0);
    });
  }
});
