import { type CreateHmmOptions, createHmm, Device, describeThrown, type HmmSystem } from "@hmmkit/core";
import { contentDigest, HPAGE_PMD_SIZE, MmError, PAGE_SIZE } from "@hmmkit/mm";
import { badConfig } from "./errors.js";
import { GENERATORS } from "./kinds/index.js";
import { parseRunOptions, type RunWorkloadOptions } from "./options.js";
import type { WorkloadReport } from "./report.js";
import { resolveWorkloadSpec } from "./spec.js";
import { WorkloadRun } from "./workload-run.js";

/** The core's device memory when neither the device config nor the core config says (1 GiB). */
const CORE_DEFAULT_DEVICE_PAGES = 262_144;
const MiB = 1024 * 1024;

/** RAM for a footprint of `pages`: a quarter more and 16 MiB, in whole 2 MiB blocks. */
export function defaultMemoryBytes(pages: number): number {
  const bytes = pages * PAGE_SIZE * 1.25 + 16 * MiB;
  return Math.ceil(bytes / HPAGE_PMD_SIZE) * HPAGE_PMD_SIZE;
}

function attachDevice(o: RunWorkloadOptions, system: HmmSystem): Device {
  if (o.attach === undefined) return system.core.addDevice(o.plugin, { name: "dev0", ...o.device });
  const dev = o.attach(system);
  if (!(dev instanceof Device) || system.core.devices.get(dev.name) !== dev)
    throw badConfig(
      `'attach' must add a device to the system it is given and return it, got ${dev instanceof Device ? `device ${dev.name} of another core` : String(dev)}`,
    );
  return dev;
}

/**
 * Run one workload on one device and report what happened. Builds a machine and an HMM core,
 * attaches the device (the runner adds it from `plugin` and `device`, or `attach` does), runs the
 * workload's phases, and then, in this order: takes the counters, the simulated time and the
 * digest (before any process exits), sweeps every page with the CPU against the shadow, exits
 * the processes, removes the device and counts the frames still in use. A driver that fails
 * mid-run does not throw: the report carries the failure, and the sweep and the leak counts show
 * whether what was written before it survived. Bad options throw (BAD_CONFIG), a bad spec throws
 * (WorkloadSpecError, BAD_SPEC).
 */
export function runWorkload(options: RunWorkloadOptions): WorkloadReport {
  const o = parseRunOptions(options);
  const spec = resolveWorkloadSpec(o.spec);
  const gen = GENERATORS[spec.kind];
  const seed = o.seed ?? 1;
  // Device memory before the device exists (oversub's size); a malformed value is left for the
  // core to refuse with its own message when it adds the device.
  const pagesOr = (v: unknown, d: number) =>
    Number.isSafeInteger(v) && (v as number) > 0 ? (v as number) : d;
  const guessPages = pagesOr(
    o.device?.memoryPages,
    pagesOr(o.hmm?.config?.defaultDeviceMemoryPages, CORE_DEFAULT_DEVICE_PAGES),
  );
  const memoryBytes =
    o.machine?.memoryBytes ?? defaultMemoryBytes(gen.footprintPages(spec.params, guessPages));
  const hmmOptions: CreateHmmOptions = {
    machine: { contentMode: "tag", ...o.machine, memoryBytes },
    ...(o.hmm?.config !== undefined ? { config: o.hmm.config } : {}),
    ...(o.hmm?.cost !== undefined ? { cost: o.hmm.cost as CreateHmmOptions["cost"] } : {}),
  };
  const system = createHmm(hmmOptions);
  const { machine, core } = system;
  const dev = attachDevice(o, system);
  const footprint = gen.footprintPages(spec.params, dev.memory.npages);
  if (footprint > machine.pool.nframes)
    throw badConfig(
      `'machine.memoryBytes' ${memoryBytes} is too small for ${spec.text}: it needs up to ${footprint} frames (${(footprint * PAGE_SIZE) / MiB} MiB), the machine has ${machine.pool.nframes}`,
    );
  const proc = machine.createProcess();
  const run = new WorkloadRun(system, dev, proc, {
    seed,
    wave: spec.params.wave ?? 0,
    verifyTranslations: o.verifyTranslations ?? true,
    coherence: o.coherence ?? "phases",
  });
  const t0 = performance.now();
  gen.run(run, spec.params);
  const wallMs = performance.now() - t0;
  if (o.coherence === "end" && !run.stopped) run.checkCoherence();

  const deviceStats = dev.stats.snapshot();
  let minorFaults = 0;
  for (const p of run.procs) minorFaults += p.minorFaults;
  const cpuStats = { ...machine.stats.snapshot(), minorFaults };
  const cost = system.cost.estimate(dev.stats);
  const digest = run.procs.map((p) => contentDigest(p.mm)).join("+");
  try {
    run.sweep();
  } catch (e) {
    run.failure ??= {
      source: "cpu",
      message: `final sweep: ${describeThrown(e)}`,
      code: e instanceof MmError ? e.code : "THREW",
      errno: e instanceof MmError ? e.errno : "EIO",
      phase: run.phases,
      phaseName: "final",
    };
  }
  for (let k = run.procs.length - 1; k >= 0; k--) run.procs[k].exit();
  let removeError: string | null = null;
  try {
    core.removeDevice(dev);
  } catch (e) {
    removeError = describeThrown(e);
  }
  const leaks = { frames: machine.usedFrames, deviceFrames: dev.memory.used };
  if (removeError !== null)
    run.failure ??= {
      source: "device",
      message: `removeDevice: ${removeError}`,
      code: "REMOVE_FAILED",
      errno: "EBUSY",
      phase: run.phases,
      phaseName: "teardown",
    };
  const o2 = run.oracle;
  const ok =
    run.failure === null &&
    run.cancelled === 0 &&
    o2.mismatches === 0 &&
    run.coherenceViolations === 0 &&
    leaks.frames === 0 &&
    leaks.deviceFrames === 0;
  return {
    spec: spec.text,
    kind: spec.kind,
    seed,
    driver: dev.plugin.name,
    device: dev.name,
    machine: { memoryBytes: machine.config.memoryBytes, contentMode: machine.config.contentMode },
    phases: run.phases,
    pages: gen.pages(spec.params, dev.memory.npages),
    deviceStats,
    cpuStats,
    simulatedNs: cost.totalNs,
    simulatedTerms: cost.terms,
    wallMs,
    digest,
    checks: {
      data: { checked: o2.checked, mismatches: o2.mismatches, first: o2.first },
      coherence: {
        checks: run.coherenceChecks,
        pages: run.coherencePages,
        violations: run.coherenceViolations,
        first: run.coherenceProblems,
      },
      leaks,
    },
    errors: { cancelled: run.cancelled, first: run.errors },
    failure: run.failure,
    ok,
  };
}
