import {
  checkCoherence,
  DEVICE_READ,
  DEVICE_WRITE,
  type Device,
  type DeviceRunResult,
  describeThrown,
  type HmmSystem,
  runSteps,
  Scheduler,
  type Steps,
} from "@hmmkit/core";
import {
  HPAGE_PMD_SIZE,
  hex,
  MADV_HUGEPAGE,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  MmError,
  PAGE_SIZE,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  type Process,
  stampToken,
} from "@hmmkit/mm";
import { CpuScript, cpuScriptSteps } from "./cpu-script.js";
import { DeviceStream } from "./device-stream.js";
import { DataOracle, MAX_REPORTED } from "./oracle.js";
import { PhaseBuilder, type PhaseSink } from "./phase.js";
import { Region } from "./region.js";
import type { CancelledAccess, RunFailure } from "./report.js";
import { hash5 } from "./seeded.js";

/** Scheduler steps one phase may take before it counts as hung. */
const MAX_PHASE_STEPS = 2 ** 40;

/** When translations are checked against the CPU page table. */
export type CoherenceChecks = "phases" | "end" | "off";

/** How a run executes its phases. */
export interface WorkloadRunSettings {
  readonly seed: number;
  /** Device accesses in flight together (0: a phase's whole stream). */
  readonly wave: number;
  readonly verifyTranslations: boolean;
  readonly coherence: CoherenceChecks;
}

/**
 * One workload running on one device: its processes, regions and shadows, the oracle, and the
 * phase loop. A generator describes each phase through a PhaseBuilder; `phase` then runs the
 * device stream and the CPU threads together under a Scheduler seeded from (seed, phase), checks
 * every read against the shadow, applies the device's completed writes to it, and checks
 * coherence at the barrier. A device failure or a CPU thread error stops the run: later phases
 * are skipped (`phase` returns false) and the report carries the failure.
 */
export class WorkloadRun implements PhaseSink {
  readonly oracle = new DataOracle();
  readonly regions: Region[] = [];
  /** The processes: the parent, then the child once it forked. */
  readonly procs: Process[];
  private readonly streams: DeviceStream[] = [];
  private readonly scripts: CpuScript[] = [];
  private readonly children = new Map<Region, Region>();
  /** Phases run. */
  phases = 0;
  failure: RunFailure | null = null;
  cancelled = 0;
  readonly errors: CancelledAccess[] = [];
  coherenceChecks = 0;
  coherencePages = 0;
  coherenceViolations = 0;
  readonly coherenceProblems: string[] = [];

  constructor(
    readonly system: HmmSystem,
    readonly dev: Device,
    proc: Process,
    readonly settings: WorkloadRunSettings,
  ) {
    this.procs = [proc];
    this.streams.push(new DeviceStream());
    this.scripts.push(new CpuScript());
  }

  get seed(): number {
    return this.settings.seed;
  }

  /** The parent process. */
  get proc(): Process {
    return this.procs[0];
  }

  /** Device memory in pages. */
  get devicePages(): number {
    return this.dev.memory.npages;
  }

  /** True once a failure stopped the run. */
  get stopped(): boolean {
    return this.failure !== null;
  }

  procIndex(proc: Process): number {
    const k = this.procs.indexOf(proc);
    if (k < 0) throw new MmError("EINVAL", `workload: process ${proc.pid} is not part of this run`);
    return k;
  }

  stream(k: number): DeviceStream {
    return this.streams[k];
  }

  script(k: number): CpuScript {
    return this.scripts[k];
  }

  // ---- memory ------------------------------------------------------------------------------

  /** A private anonymous read-write buffer of `pages` pages; `huge`: 2 MiB aligned with MADV_HUGEPAGE. */
  alloc(pages: number, huge = false): Region {
    const mm = this.proc.mm;
    const len = pages * PAGE_SIZE;
    const flags = MAP_PRIVATE | MAP_ANONYMOUS;
    let base: number;
    if (huge) {
      const raw = mm.mmap({ length: len + HPAGE_PMD_SIZE, prot: PROT_READ | PROT_WRITE, flags });
      base = Math.ceil(raw / HPAGE_PMD_SIZE) * HPAGE_PMD_SIZE;
      if (base > raw) mm.munmap(raw, base - raw);
      if (raw + HPAGE_PMD_SIZE > base) mm.munmap(base + len, raw + HPAGE_PMD_SIZE - base);
      mm.madvise(base, len, MADV_HUGEPAGE);
    } else base = mm.mmap({ length: len, prot: PROT_READ | PROT_WRITE, flags });
    const r = new Region(this.regions.length, this.proc, base, pages);
    this.regions.push(r);
    return r;
  }

  /** A PROT_NONE reservation of `pages` pages (a place to mremap to); no frames. */
  reserve(pages: number): number {
    return this.proc.mm.mmap({
      length: pages * PAGE_SIZE,
      prot: PROT_NONE,
      flags: MAP_PRIVATE | MAP_ANONYMOUS,
    });
  }

  /** fork(): the child gets a copy of every region and its shadow (call it from a CPU operation). */
  fork(): Process {
    if (this.procs.length > 1) throw new MmError("EINVAL", "workload: the run has forked already");
    const child = this.proc.fork();
    this.procs.push(child);
    this.streams.push(new DeviceStream());
    this.scripts.push(new CpuScript());
    for (const r of [...this.regions]) {
      const c = new Region(this.regions.length, child, r.base, r.pages, r.shadow.slice());
      this.regions.push(c);
      this.children.set(r, c);
    }
    return child;
  }

  /** The child's copy of region `r` (after fork). */
  childOf(r: Region): Region {
    const c = this.children.get(r);
    if (c === undefined)
      throw new MmError("EINVAL", `workload: region ${r.id} has no child copy (no fork yet)`);
    return c;
  }

  // ---- phases ------------------------------------------------------------------------------

  /**
   * Describe a phase with `build`, then run it to its barrier. Returns false if the run stopped
   * (before or during this phase): generators end there.
   */
  phase(name: string, build: (p: PhaseBuilder) => void): boolean {
    if (this.stopped) return false;
    const index = this.phases++;
    this.oracle.phase = index;
    this.oracle.phaseName = name;
    for (const r of this.regions) r.use.fill(0);
    for (const s of this.streams) s.clear();
    for (const s of this.scripts) s.clear();
    build(new PhaseBuilder(this, name, index));
    this.execute(index, name);
    if (!this.stopped && this.settings.coherence === "phases") this.checkCoherence();
    return !this.stopped;
  }

  private execute(index: number, name: string): void {
    const tasks: { name: string; steps: Steps }[] = [];
    const results: (DeviceRunResult | null)[] = this.streams.map(() => null);
    if (this.streams.some((s) => s.count > 0) && this.dev.state === "active")
      tasks.push({ name: "device", steps: this.deviceSteps(results) });
    for (let k = 0; k < this.procs.length; k++) {
      if (this.scripts[k].count === 0) continue;
      const agent = k === 0 ? "cpu" : "child";
      tasks.push({ name: agent, steps: cpuScriptSteps(this.procs[k], this.scripts[k], this.oracle, agent) });
    }
    let error: { task: string; error: unknown } | null = null;
    if (tasks.length === 1) {
      try {
        runSteps(tasks[0].steps);
      } catch (e) {
        error = { task: tasks[0].name, error: e };
      }
    } else if (tasks.length > 1) {
      const sched = new Scheduler(hash5(this.seed, index, 0x5c4ed, 0, 0));
      for (const t of tasks) sched.spawn(t.name, t.steps);
      sched.run(MAX_PHASE_STEPS);
      for (const t of tasks) {
        const r = sched.results.get(t.name);
        if (r?.error !== undefined && error === null) error = { task: t.name, error: r.error };
      }
    }
    // `results` has a slot per stream at the phase's start (a fork during the phase adds one).
    for (let k = 0; k < results.length; k++) {
      const r = results[k];
      if (r !== null) this.settle(this.streams[k], r, k === 1, index, name);
    }
    if (this.dev.state !== "active" && this.failure === null) {
      const f = this.dev.failure;
      this.failure = {
        source: "device",
        message: f === null ? `device ${this.dev.name} is ${this.dev.state}` : f.message,
        code: f?.code ?? "DEVICE_GONE",
        errno: f?.errno ?? "ENODEV",
        phase: index,
        phaseName: name,
      };
    }
    if (error !== null && this.failure === null) {
      const e = error.error;
      this.failure = {
        source: error.task === "device" ? "device" : "cpu",
        message: `${error.task} thread: ${describeThrown(e)}`,
        code: e instanceof MmError ? e.code : "THREW",
        errno: e instanceof MmError ? e.errno : "EIO",
        phase: index,
        phaseName: name,
      };
    }
  }

  /** The device's task: each process's stream in turn (one launch each). */
  private *deviceSteps(results: (DeviceRunResult | null)[]): Steps<void> {
    const options = {
      ...(this.settings.wave > 0 ? { wave: this.settings.wave } : {}),
      verifyTranslations: this.settings.verifyTranslations,
    };
    for (let k = 0; k < this.streams.length; k++) {
      const s = this.streams[k];
      if (s.count === 0) continue;
      if (this.dev.state !== "active") return;
      results[k] = yield* this.system.core.runDeviceSteps(this.dev, this.procs[k].mm, s.acc, options);
    }
  }

  /** After a stream ran: check its reads, apply its completed writes to the shadow, collect cancellations. */
  private settle(s: DeviceStream, r: DeviceRunResult, child: boolean, phase: number, name: string): void {
    const acc = s.acc;
    const oracle = this.oracle;
    for (let i = 0; i < acc.count; i++) {
      if (acc.done[i] !== 1) continue;
      const kind = acc.kind[i];
      const region = s.regions[s.region[i]];
      const page = s.page[i];
      if (kind !== DEVICE_WRITE) oracle.check(region, page, acc.seen[i], "device", child);
      if (kind !== DEVICE_READ) region.shadow[page] = stampToken(acc.stamp[i]);
    }
    this.cancelled += r.cancelled;
    for (const e of r.errors) {
      if (this.errors.length >= MAX_REPORTED) break;
      this.errors.push({
        phase,
        phaseName: name,
        process: child ? "child" : "parent",
        index: e.index,
        va: e.va,
        address: hex(e.va),
        kind: e.kind === DEVICE_READ ? "read" : e.kind === DEVICE_WRITE ? "write" : "atomic",
        errno: e.errno,
      });
    }
  }

  /** Check every translation against the CPU page table (skipped once the device is not active). */
  checkCoherence(): void {
    if (this.dev.state !== "active") return;
    const c = checkCoherence(this.system.core, this.dev, MAX_REPORTED);
    this.coherenceChecks++;
    this.coherencePages += c.pages;
    this.coherenceViolations += c.violations;
    for (const p of c.problems) {
      if (this.coherenceProblems.length >= MAX_REPORTED) break;
      this.coherenceProblems.push(`phase ${this.oracle.phase} '${this.oracle.phaseName}': ${p}`);
    }
  }

  /**
   * The final sweep: the CPU reads every page of every region of the live processes and the
   * oracle checks it (after the digest was taken; it brings device pages home).
   */
  sweep(): void {
    this.oracle.phase = this.phases;
    this.oracle.phaseName = "final";
    for (const r of this.regions) {
      if (r.proc.exited) continue;
      const child = r.proc !== this.proc;
      for (let p = 0; p < r.pages; p++) this.oracle.check(r, p, r.proc.readPageHash(r.va(p)), "final", child);
    }
  }
}
