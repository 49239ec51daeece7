import {
  createHmm,
  type Device,
  DeviceAccesses,
  HMM_PFN_VALID,
  HMM_PFN_WRITE,
  type HmmCore,
  MmuNotifyEvent,
} from "@hmmkit/core";
import gpu, { type GpuDriver } from "@hmmkit/driver-gpu";
import type { Process } from "@hmmkit/mm";
import { type Bench, populatedGiB } from "./harness.js";

const GiB = 1024 ** 3;
/** 4 KiB pages in 1 GiB. */
export const GPU_PAGES = GiB / 4096;

/** Names of the gpu cases, for the result rows. */
export const GPU_CASES = {
  lookupBase: "baseline: Int32Array lookup loop summing one entry per page, 262,144 pages",
  translate: "gpu: translate hits, streaming read of 1 GiB (4 KiB entries)",
  translateHuge: "gpu: translate hits, streaming read of 1 GiB (2 MiB entries)",
  runDevice: "gpu: core.runDevice streaming read of 1 GiB, all hits, 4 KiB entries",
  runDeviceHuge: "gpu: core.runDevice streaming read of 1 GiB THP, all hits, 2 MiB entries",
  copyBase: "baseline: typed copy loop into a Float64Array, 262,144 entries",
  mirrorPte: "gpu: mirrorPte calls for a populated 1 GiB, into an empty table",
  mirrorPteAgain: "gpu: mirrorPte calls for a populated 1 GiB, entries already there",
  mirrorPtes:
    "gpu: mirrorPtes (array form), one call per 512-page leaf, populated 1 GiB, into an empty table",
  mirrorPtesAgain: "gpu: mirrorPtes (array form), populated 1 GiB, entries already there",
  deviceFault: "gpu: core.deviceFault of a populated 1 GiB (walk + mirrorPte)",
  deviceFaultArray: "gpu: core.deviceFault of a populated 1 GiB, array form (walk + mirrorPtes)",
} as const;

let sink = 0;

/**
 * The gpu driver's hot paths on one machine (tag mode): a gpu device mirroring a populated 1 GiB
 * of 4 KiB pages remotely (migrate "none", so the translation hit path counts remote accesses).
 * Baselines: the best plain loop for the same work, over the same number of pages.
 */
export function addGpuCases(bench: Bench): { mirrorBytes4k: number; mirrorBytes2m: number } {
  const n = GPU_PAGES;
  // ---- baselines --------------------------------------------------------------------------------
  const table = new Int32Array(n);
  for (let i = 0; i < n; i++) table[i] = (i * 2654435761) | 1;
  bench.add(GPU_CASES.lookupBase, n, () => {
    let s = 0;
    for (let i = 0; i < n; i++) s = (s + table[i]) | 0;
    sink ^= s;
  });
  const src = new Int32Array(n);
  for (let i = 0; i < n; i++) src[i] = i + 17;
  const dst = new Float64Array(n);
  bench.add(GPU_CASES.copyBase, n, () => {
    for (let i = 0; i < n; i++) dst[i] = src[i];
    sink ^= dst[n - 1];
  });

  // ---- the driver ---------------------------------------------------------------------------------
  // Each access-path case runs on a device of its own: the cases that call the driver directly
  // (translate, mirrorPte) and the fault case leave its table as they found it, but not its
  // caches and leaf order, and a run is measured on a device only runs touch.
  const t4k = gpuOnGiB(false, { callbackMode: "per-pte" });
  const { drv, mmId, base } = t4k;
  bench.add(GPU_CASES.translate, n, () => {
    let s = 0;
    for (let i = 0; i < n; i++) s = (s + drv.translate(mmId, base + i * 4096, false)) | 0;
    sink ^= s;
  });
  for (const [name, huge] of [
    [GPU_CASES.runDevice, false],
    [GPU_CASES.runDeviceHuge, true],
  ] as const) {
    const r = gpuOnGiB(huge);
    const acc = new DeviceAccesses(n);
    for (let i = 0; i < n; i++) acc.read(r.base + i * 4096);
    bench.add(name, n, () => {
      r.core.runDevice(r.dev, r.p, acc, { verifyTranslations: false });
    });
  }

  // mirrorPte with the frames the CPU maps, as the core would report them.
  const pfns = new Int32Array(n);
  for (let i = 0; i < n; i++) pfns[i] = (drv.translate(mmId, base + i * 4096, false) | 0) >>> 0;
  const flags = HMM_PFN_VALID | HMM_PFN_WRITE;
  const mirror = () => {
    for (let i = 0; i < n; i++) drv.mirrorPte(mmId, base + i * 4096, pfns[i], flags);
  };
  bench.addWithSetup(
    GPU_CASES.mirrorPte,
    n,
    () => drv.invalidate(mmId, base, base + GiB, MmuNotifyEvent.CLEAR, null),
    mirror,
  );
  bench.add(GPU_CASES.mirrorPteAgain, n, mirror);
  bench.add(GPU_CASES.deviceFault, n, () => {
    t4k.core.deviceFault(t4k.dev, t4k.p, base, base + GiB, false);
  });

  // The array form as the core calls it: one call per leaf, with the core's two scratch arrays,
  // refilled before each call (the refill, a 2 KiB typed copy, is timed with the call).
  const arr = gpuOnGiB(false, { callbackMode: "array" });
  const leafFrames: Int32Array[] = [];
  for (let b = 0; b < n / 512; b++) {
    const f = new Int32Array(512);
    for (let i = 0; i < 512; i++)
      f[i] = (arr.drv.translate(arr.mmId, arr.base + (b * 512 + i) * 4096, false) | 0) >>> 0;
    leafFrames.push(f);
  }
  const scratchPfns = new Int32Array(512);
  const scratchFlags = new Int32Array(512).fill(flags);
  const mirrorArray = () => {
    for (let b = 0; b < leafFrames.length; b++) {
      scratchPfns.set(leafFrames[b]);
      arr.drv.mirrorPtes(arr.mmId, arr.base + b * 512 * 4096, 512, scratchPfns, scratchFlags);
    }
  };
  bench.addWithSetup(
    GPU_CASES.mirrorPtes,
    n,
    () => arr.drv.invalidate(arr.mmId, arr.base, arr.base + GiB, MmuNotifyEvent.CLEAR, null),
    mirrorArray,
  );
  bench.add(GPU_CASES.mirrorPtesAgain, n, mirrorArray);
  const arrFault = gpuOnGiB(false, { callbackMode: "array" });
  bench.add(GPU_CASES.deviceFaultArray, n, () => {
    arrFault.core.deviceFault(arrFault.dev, arrFault.p, arrFault.base, arrFault.base + GiB, false);
  });
  const thp = gpuOnGiB(true);
  bench.add(GPU_CASES.translateHuge, n, () => {
    let s = 0;
    for (let i = 0; i < n; i++) s = (s + thp.drv.translate(thp.mmId, thp.base + i * 4096, false)) | 0;
    sink ^= s;
  });
  return { mirrorBytes4k: t4k.bytes, mirrorBytes2m: thp.bytes };
}

/**
 * A gpu device (migrate "none": every hit is a remote access) on a machine of its own that
 * faulted a populated 1 GiB, of 4 KiB pages or (`huge`) of THPs (512 2 MiB entries), and its
 * mirror bytes.
 */
function gpuOnGiB(
  huge: boolean,
  config: Record<string, unknown> = {},
): {
  bytes: number;
  core: HmmCore;
  dev: Device;
  p: Process;
  drv: GpuDriver;
  mmId: number;
  base: number;
} {
  const { core, machine } = createHmm({ machine: { contentMode: "tag", memoryBytes: 1.25 * GiB } });
  const dev = core.addDevice(gpu, {
    name: "gpu0",
    memoryPages: 512,
    migrate: "none",
    prefetch: false,
    ...config,
  });
  const p = machine.createProcess();
  const base = populatedGiB(p, huge, huge ? 2 : 1);
  core.deviceFault(dev, p, base, base + GiB, false);
  return { bytes: dev.stats.mirrorBytes, core, dev, p, drv: dev.driver as GpuDriver, mmId: p.mm.id, base };
}

/** Keeps the baselines' results alive. */
export function gpuSink(): number {
  return sink;
}
