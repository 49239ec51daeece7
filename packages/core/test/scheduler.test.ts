import { SegvError } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { cpuOpSteps, cpuTouchSteps, runSteps, Scheduler, type Steps } from "../src/index.js";
import { PAGE, type RecordingFakeDriver } from "./fakes.js";
import { addFake, expectErrno, makeSystem, mmapPrivate, randomBytes } from "./helpers.js";

function* counter(name: string, n: number, log: string[]): Steps<number> {
  for (let i = 0; i < n; i++) {
    log.push(`${name}${i}`);
    yield `step${i}`;
  }
  return n;
}

function* failing(after: number): Steps<never> {
  for (let i = 0; i < after; i++) yield "ok";
  throw new Error("task failed");
}

describe("the deterministic scheduler", () => {
  it("runSteps runs a step generator to completion on the calling thread", () => {
    const log: string[] = [];
    expect(runSteps(counter("a", 3, log))).toBe(3);
    expect(log).toEqual(["a0", "a1", "a2"]);
  });

  it("interleaves tasks by seed: the same seed gives the same trace, the trace names every step", () => {
    const trace = (seed: number) => {
      const log: string[] = [];
      const s = new Scheduler(seed).spawn("a", counter("a", 5, log)).spawn("b", counter("b", 5, log));
      s.run();
      expect(s.result("a")).toBe(5);
      expect(s.result("b")).toBe(5);
      expect(s.trace.filter((t) => t.startsWith("a@"))).toEqual([
        "a@step0",
        "a@step1",
        "a@step2",
        "a@step3",
        "a@step4",
        "a@done",
      ]);
      expect(s.results.get("a")!.steps).toBe(6);
      return s.trace.join(",");
    };
    expect(trace(7)).toBe(trace(7));
    const distinct = new Set(Array.from({ length: 16 }, (_, i) => trace(i + 1)));
    expect(distinct.size).toBeGreaterThan(4);
  });

  it("a task that throws ends with its error recorded while the others finish", () => {
    const log: string[] = [];
    const s = new Scheduler(3).spawn("bad", failing(2)).spawn("good", counter("g", 4, log));
    s.run();
    expect(s.trace).toContain("bad@throw");
    expect((s.results.get("bad")!.error as Error).message).toBe("task failed");
    expect(() => s.result("bad")).toThrow("task failed");
    expect(s.result("good")).toBe(4);
    expect(() => s.result("nobody")).toThrow(/no finished task 'nobody'/);
  });

  it("task names are unique, and tasks still running after maxSteps are abandoned with an error", () => {
    const s = new Scheduler(1).spawn("a", counter("a", 100, []));
    expect(() => s.spawn("a", counter("a", 1, []))).toThrow(/already exists/);
    s.run(10);
    expect(() => s.result("a")).toThrow(/did not finish in 10 steps \(seed 1\)/);
    expect(() => s.spawn("a", counter("a", 1, []))).toThrow(/already exists/);
  });

  it("a CPU thread touching an unmapped page ends with SIGSEGV; a CPU op runs as one step", () => {
    const { machine } = makeSystem();
    const p = machine.createProcess();
    const a = mmapPrivate(p, PAGE);
    const s = new Scheduler(5).spawn("touch", cpuTouchSteps(p, a + PAGE, PAGE, false)).spawn(
      "op",
      cpuOpSteps("mmap", () => mmapPrivate(p, PAGE)),
    );
    s.run();
    expect(s.results.get("touch")!.error).toBeInstanceOf(SegvError);
    expect(typeof s.result<number>("op")).toBe("number");
    expect(s.trace.filter((t) => t.startsWith("op@"))).toEqual(["op@cpu:mmap", "op@done"]);
  });

  it("a synchronous device fault meeting a migration in flight is EBUSY; its step form waits instead", () => {
    const { core, machine } = makeSystem();
    const { dev: gpu0 } = addFake<RecordingFakeDriver>(core, "gpu0");
    const { dev: gpu1 } = addFake<RecordingFakeDriver>(core, "gpu1");
    const p = machine.createProcess();
    const a = mmapPrivate(p, 4 * PAGE);
    p.write(a, randomBytes(4 * PAGE, 111));
    const mig = core.migrateToDeviceSteps(gpu0, p, a, a + 4 * PAGE);
    expect(mig.next().value).toBe("migrate:collected");
    expectErrno(() => core.deviceFault(gpu1, p, a, a + 4 * PAGE, false), "EBUSY");
    const fault = core.deviceFaultSteps(gpu1, p, a, a + 4 * PAGE, false);
    expect(fault.next().value).toBe("fault:wait-migration");
    expect(fault.next().value).toBe("fault:wait-migration");
    expect(runSteps(mig).migrated).toBe(4);
    expect(runSteps(fault).pages).toBe(4);
    expect(gpu1.stats.retries).toBeGreaterThanOrEqual(2);
  });
});
