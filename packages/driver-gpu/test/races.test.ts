import { cpuOpSteps, cpuTouchSteps, DeviceAccesses, Scheduler } from "@hmmkit/core";
import { MADV_DONTNEED } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { expectCoherent, hashOfStamp, makeGpu, mmapSmall, PAGE } from "./helpers.js";

const PAGES = 1024;

/**
 * The device writes the even pages while a CPU thread writes the pages 3 mod 4 and drops the
 * pages 1 mod 4 (MADV_DONTNEED), all in the same 2 MiB blocks, interleaved by the scheduler at
 * every preemption point of the fault path (between batches, inside deviceFault and migration).
 */
function race(seed: number, config: Record<string, unknown>): void {
  const s = makeGpu({ memoryPages: 512, ...config });
  const base = mmapSmall(s.p, PAGES * PAGE);
  const acc = new DeviceAccesses();
  for (let i = 0; i < PAGES; i += 2) acc.write(base + i * PAGE, 40_000 + i);
  function* cpu() {
    for (let i = 3; i < PAGES; i += 4) {
      yield* cpuTouchSteps(s.p, base + i * PAGE, PAGE, true, 70_000 + i);
      const j = i - 2;
      if (j % 16 === 1)
        yield* cpuOpSteps("dontneed", () => s.p.mm.madvise(base + j * PAGE, PAGE, MADV_DONTNEED), {
          mm: s.p.mm,
          mode: "read",
        });
    }
  }
  const sched = new Scheduler(seed)
    .spawn("device", s.core.runDeviceSteps(s.dev, s.p, acc, { wave: 32 }))
    .spawn("cpu", cpu());
  const results = sched.run();
  // The two threads really interleaved: CPU steps ran between the device's.
  const firstCpu = sched.trace.findIndex((t) => t.startsWith("cpu@"));
  const lastDevice = sched.trace.map((t) => t.startsWith("device@")).lastIndexOf(true);
  expect(firstCpu, `seed ${seed}`).toBeLessThan(lastDevice);
  expect(results.get("cpu")?.error, `seed ${seed}`).toBeUndefined();
  expect(results.get("device")?.error, `seed ${seed}`).toBeUndefined();
  expect(s.dev.state, `seed ${seed}: ${String(s.dev.failure)}`).toBe("active");
  expect(
    acc.done.subarray(0, acc.count).every((d) => d === 1),
    `seed ${seed}`,
  ).toBe(true);
  expectCoherent(s.core, s.dev);
  for (let i = 0; i < PAGES; i++) {
    const want =
      i % 2 === 0 ? hashOfStamp(40_000 + i) >>> 0 : i % 4 === 3 ? hashOfStamp(70_000 + i) >>> 0 : null;
    if (want !== null) expect(s.p.readPageHash(base + i * PAGE), `seed ${seed} page ${i}`).toBe(want);
  }
}

describe("gpu fault servicing interleaved with CPU threads by the scheduler", () => {
  for (const migrate of ["first-touch", "none", "access-counter"] as const) {
    it(`migrate "${migrate}": every seed ends coherent with every write where it belongs`, () => {
      for (let seed = 1; seed <= 6; seed++) race(seed, { migrate, accessThreshold: 4 });
    });
  }
  it("with eviction under pressure and thrashing detection on", () => {
    for (let seed = 11; seed <= 14; seed++)
      race(seed, { migrate: "first-touch", memoryPages: 256, thrashing: true });
  });
});
