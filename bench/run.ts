import "reflect-metadata";
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { createHmm, type DeviceTranslation, HMM_API_VERSION, type HmmDriver } from "@hmmkit/core";
import {
  ENTRY_KIND_MASK,
  HPAGE_PMD_SIZE,
  MADV_HUGEPAGE,
  MADV_NOHUGEPAGE,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  PageTableCursor,
  PROT_READ,
  PROT_WRITE,
  SEG_TABLE,
} from "@hmmkit/mm";
import { addFaultCases, FAULT_CASES } from "./fault-bench.js";
import { addGpuCases, GPU_CASES, gpuSink } from "./gpu-bench.js";
import { BENCH_ROUNDS, Bench, fmtRate, type Measurement, rate } from "./harness.js";
import { addIotlbCases, IOTLB_CASES } from "./iotlb-bench.js";
import { addLegacyCases, LEGACY_CASES } from "./legacy-bench.js";
import { addThpMigrationCases, THP_MIGRATION_CASES } from "./thp-migration-bench.js";
import { addVmaCase, buildVmas, VMA_OPS_PER_CALL } from "./vma-bench.js";

let results = new Map<string, Measurement>();

const GiB = 1024 ** 3;
const PTES = 262_144;

/** One result row of bench/results.json. */
interface Row {
  name: string;
  value: number;
  unit: string;
  baseline: string;
  baselineValue: number;
  ratio: number;
  target?: string;
  met?: boolean;
}

const rows: Row[] = [];
const bench = new Bench();
function row(mName: string, baseName: string, target?: { min?: number; max?: number; text: string }): void {
  const m = results.get(mName)!;
  const base = results.get(baseName)!;
  const ratio = rate(m) / rate(base);
  const met =
    target === undefined
      ? undefined
      : (target.min === undefined || ratio >= target.min) &&
        (target.max === undefined || ratio <= target.max);
  rows.push({
    name: m.name,
    value: rate(m),
    unit: "items/s",
    baseline: base.name,
    baselineValue: rate(base),
    ratio,
    ...(target ? { target: target.text, met } : {}),
  });
  const mark =
    target === undefined ? "" : met ? `  [target ${target.text}: met]` : `  [target ${target.text}: MISSED]`;
  console.log(
    `${m.name.padEnd(58)} ${fmtRate(rate(m)).padStart(11)}   ${ratio.toFixed(3)}x ${base.name}${mark}`,
  );
}

// ---- baselines ----------------------------------------------------------------------------------
const arr = new Int32Array(PTES);
for (let i = 0; i < PTES; i++) arr[i] = (i * 2654435761) | 1;
let sink = 0;
const scan = "scan: typed-array scan of 262,144 entries";
bench.add(scan, PTES, () => {
  let s = 0;
  for (let i = 0; i < PTES; i++) s = (s + arr[i]) | 0;
  sink ^= s;
});
function visit(x: number): void {
  sink = (sink + x) | 0;
}
const scanCall = "scan+call: same scan, a monomorphic call per entry";
bench.add(scanCall, PTES, () => {
  for (let i = 0; i < PTES; i++) visit(arr[i]);
});

// ---- machine ------------------------------------------------------------------------------------
class NoopFakeDriver implements HmmDriver {
  ptes = 0;
  arrays = 0;
  huge = 0;
  mirrorPte(_mm: number, _va: number, _pfn: number, _flags: number): void {
    this.ptes++;
  }
  invalidate(): void {}
  copyToDevice(): void {}
  copyFromDevice(): void {}
  *translations(): Iterable<DeviceTranslation> {}
}
class NoopArrayFakeDriver extends NoopFakeDriver {
  mirrorPtes(_mm: number, _va: number, count: number, _p: Int32Array, _f: Int32Array): void {
    this.arrays += count;
  }
}
class NoopHugeFakeDriver extends NoopFakeDriver {
  mirrorPmd(): void {
    this.huge++;
  }
}
const plugin = (name: string, driver: new () => HmmDriver) => ({
  name,
  apiVersion: HMM_API_VERSION,
  design: "per-pte" as const,
  driver,
});

const { core, machine } = createHmm({ machine: { contentMode: "tag", memoryBytes: 3 * GiB } });
const proc = machine.createProcess();
const mm = proc.mm;
const flags = MAP_PRIVATE | MAP_ANONYMOUS;
const small = mm.mmap({ length: GiB, prot: PROT_READ | PROT_WRITE, flags });
mm.madvise(small, GiB, MADV_NOHUGEPAGE);
const huge = mm.mmap({ length: GiB, prot: PROT_READ | PROT_WRITE, flags });
mm.madvise(huge, GiB, MADV_HUGEPAGE);
proc.touch(small, GiB, true, 1);
proc.touch(huge, GiB, true, 2);
if (huge % HPAGE_PMD_SIZE !== 0) throw new Error("THP range not aligned");

// ---- walker (issue: mm) -------------------------------------------------------------------------
const cur = new PageTableCursor(mm.pt);
const walk = "mm walker: PageTableCursor over 1 GiB of 4 KiB PTEs";
bench.add(walk, PTES, () => {
  let s = 0;
  cur.reset(small, small + GiB);
  const pt = mm.pt;
  while (cur.next()) {
    if (cur.kind !== SEG_TABLE) continue;
    const f = pt.pteFlags;
    for (let i = cur.leafBase + cur.index, n = i + cur.count; i < n; i++)
      s = (s + (f[i] & ENTRY_KIND_MASK)) | 0;
  }
  sink ^= s;
});

// ---- device fault path (issue: core) ------------------------------------------------------------
const pteDev = core.addDevice(plugin("noop-pte", NoopFakeDriver), { name: "pte0", pmdCallback: false });
const arrDev = core.addDevice(plugin("noop-array", NoopArrayFakeDriver), {
  name: "arr0",
  callbackMode: "array",
  pmdCallback: false,
});
const hugeDev = core.addDevice(plugin("noop-huge", NoopHugeFakeDriver), { name: "huge0" });
const faultPte = "core: device fault, 1 GiB populated, no-op per-PTE driver";
bench.add(faultPte, PTES, () => {
  core.deviceFault(pteDev, mm, small, small + GiB, false);
});
const faultPteWrite = "core: write device fault, 1 GiB populated, no-op per-PTE driver";
bench.add(faultPteWrite, PTES, () => {
  core.deviceFault(pteDev, mm, small, small + GiB, true);
});
const faultArr = "core: device fault, 1 GiB populated, no-op array driver";
bench.add(faultArr, PTES, () => {
  core.deviceFault(arrDev, mm, small, small + GiB, false);
});
const hugeDrv = hugeDev.driver as NoopHugeFakeDriver;
const before = hugeDrv.huge;
core.deviceFault(hugeDev, mm, huge, huge + GiB, false);
const hugeCalls = hugeDrv.huge - before;
const faultHuge = "core: device fault, 1 GiB THP-backed, mirrorPmd callback";
bench.add(faultHuge, PTES, () => {
  core.deviceFault(hugeDev, mm, huge, huge + GiB, false);
});
const faultPteAgain = "core: device fault, 1 GiB 4 KiB-backed, same driver";
bench.add(faultPteAgain, PTES, () => {
  core.deviceFault(hugeDev, mm, small, small + GiB, false);
});

// ---- CPU fault path (issue: mm) -----------------------------------------------------------------
// Baselines (bench/fault-bench.ts): first touch is a typed-array loop doing only what a fault must:
// pop a frame from a free stack, set its refcount and mapcount, stamp its content token, write the
// PTE's pfn and flags words, count RSS. COW is the same plus reading the old PTE, copying the old
// frame's token (tag mode's 4 KiB copy) and dropping the old frame's refcount and mapcount.
addFaultCases(bench);

// ---- THP migration round trips (issue: core, device-private THP) --------------------------------
addThpMigrationCases(bench);
addLegacyCases(bench, core, mm, small, huge);

// ---- the device access path through the iotlb driver's TLB (issue: devices) ----------------------
const iotlbWarm = addIotlbCases(bench);
// ---- the gpu driver's hot paths (issue: driver-gpu) ---------------------------------------------
// Baselines (bench/gpu-bench.ts): an Int32Array lookup loop summing one entry per page, and a
// typed copy loop into a Float64Array, over the 262,144 pages of 1 GiB.
const gpuMirror = addGpuCases(bench);

// ---- VMA operations at 10k..100k mappings (issue: mm) ----------------------------------------------
// No baseline loop: the per-op cost at 10,000 mappings is the reference for 40,000 and 100,000.
const vmaCounts = (process.env.BENCH_VMA_COUNTS ?? "10000,40000,100000").split(",").map(Number);
const vmaSetups = vmaCounts.map(buildVmas);
const vmaName = (n: number) => `mm: munmap/mmap/mprotect among ${n.toLocaleString("en-US")} mappings`;
for (const s of vmaSetups) addVmaCase(bench, vmaName(s.count), s);

results = bench.run();
console.log(
  `\nhmmkit benchmarks (node ${process.version}); best of ${BENCH_ROUNDS} interleaved rounds; ratios are rates relative to a baseline measured in this run\n`,
);
row(scan, scan);
row(scanCall, scan);
row(walk, scan);
row(faultPte, scanCall, { min: 0.5, text: ">= 0.5x scan+call" });
row(faultPteWrite, scanCall);
row(faultArr, scanCall);
row(faultHuge, faultPteAgain, { min: 50, text: ">= 50x the 4 KiB-backed fault" });
row(THP_MIGRATION_CASES.compound, THP_MIGRATION_CASES.split, { min: 2, text: ">= 2x the split round trip" });
// Device access throughput (issue: devices): a streaming read of 1 GiB through HmmCore.runDevice,
// every access a translation hit, against the access baseline (bench/iotlb-bench.ts: per access,
// a typed-array lookup of the frame, its content token into `seen`, `done` set).
row(IOTLB_CASES.lookup, IOTLB_CASES.lookup);
row(GPU_CASES.runDevice, IOTLB_CASES.lookup, { min: 0.3, text: ">= 0.3x the lookup loop" });
row(GPU_CASES.runDeviceHuge, IOTLB_CASES.lookup, { min: 0.3, text: ">= 0.3x the lookup loop" });
row(IOTLB_CASES.hits, IOTLB_CASES.lookup, { min: 0.3, text: ">= 0.3x the lookup loop" });
console.log(`iotlb: page requests to warm the 1 GiB THP stream: ${iotlbWarm.faults}`);
// The gpu's translate alone, called from a plain loop, against a loop summing an Int32Array.
row(GPU_CASES.translate, GPU_CASES.lookupBase);
row(GPU_CASES.translateHuge, GPU_CASES.lookupBase);
// HMM v12's shared mirror against per-PTE drivers on the same 1 GiB fault (bench/legacy-bench.ts).
row(LEGACY_CASES.legacy, LEGACY_CASES.gpu);
row(LEGACY_CASES.legacy, LEGACY_CASES.flat);
row(LEGACY_CASES.gpu, LEGACY_CASES.flat);
row(LEGACY_CASES.legacyHuge, LEGACY_CASES.gpuHuge);
// A per-PTE fault into the gpu's table (issue: driver-gpu): the array form, as the core calls it,
// against a typed copy loop; the per-page form and the whole fault for comparison.
row(GPU_CASES.mirrorPtes, GPU_CASES.copyBase, { min: 0.5, text: ">= 0.5x the typed copy loop" });
row(GPU_CASES.mirrorPtesAgain, GPU_CASES.copyBase);
row(GPU_CASES.mirrorPte, GPU_CASES.copyBase);
row(GPU_CASES.mirrorPteAgain, GPU_CASES.copyBase);
row(GPU_CASES.deviceFaultArray, faultArr);
row(GPU_CASES.deviceFault, faultPte);
row(GPU_CASES.deviceFaultArray, GPU_CASES.deviceFault);
for (const [name, bytes, limit, text] of [
  ["gpu: mirror bytes per GiB mirrored at 4 KiB", gpuMirror.mirrorBytes4k, 2.1 * 1024 * 1024, "<= 2.1 MiB"],
  ["gpu: mirror bytes per GiB mirrored with 2 MiB entries", gpuMirror.mirrorBytes2m, 16 * 1024, "<= 16 KiB"],
  [
    "iotlb: mirror bytes after 1 GiB faulted at 4 KiB",
    iotlbWarm.mirrorBytes4k,
    2.1 * 1024 * 1024,
    "<= 2.1 MiB",
  ],
  ["iotlb: mirror bytes after 1 GiB of THP streamed", iotlbWarm.mirrorBytes2m, 16 * 1024, "<= 16 KiB"],
] as const) {
  const met = bytes <= limit;
  rows.push({
    name,
    value: bytes,
    unit: "bytes",
    baseline: "limit",
    baselineValue: limit,
    ratio: bytes / limit,
    target: text,
    met,
  });
  console.log(
    `${name.padEnd(58)} ${String(bytes).padStart(11)} bytes  [target ${text}: ${met ? "met" : "MISSED"}]`,
  );
}
console.log(
  `mirrorPmd callbacks per 1 GiB THP fault: ${hugeCalls} (target <= 512: ${hugeCalls <= 512 ? "met" : "MISSED"})`,
);
rows.push({
  name: "mirrorPmd callbacks per 1 GiB THP fault",
  value: hugeCalls,
  unit: "calls",
  baseline: "limit",
  baselineValue: 512,
  ratio: hugeCalls / 512,
  target: "<= 512",
  met: hugeCalls <= 512,
});
console.log(
  `walker: ${fmtRate(rate(results.get(walk)!))} PTEs; scan: ${fmtRate(rate(results.get(scan)!))} entries`,
);

/** ns per page of a fault case and its ratio to its baseline (time over baseline time). */
function faultRow(mName: string, baseName: string, maxNs: number): void {
  const m = results.get(mName)!;
  const base = results.get(baseName)!;
  const ns = (m.seconds / m.items) * 1e9;
  const baseNs = (base.seconds / base.items) * 1e9;
  const met = ns <= maxNs;
  rows.push({
    name: m.name,
    value: ns,
    unit: "ns/page",
    baseline: base.name,
    baselineValue: baseNs,
    ratio: ns / baseNs,
    target: `<= ${maxNs} ns/page`,
    met,
  });
  console.log(
    `${m.name.padEnd(58)} ${ns.toFixed(1).padStart(7)} ns/page   ${(ns / baseNs).toFixed(2)}x the time of ${base.name} (${baseNs.toFixed(1)} ns/page)  [target <= ${maxNs} ns/page: ${met ? "met" : "MISSED"}]`,
  );
}
console.log("");
faultRow(FAULT_CASES.touch, FAULT_CASES.touchBase, 60);
faultRow(FAULT_CASES.cow, FAULT_CASES.cowBase, 100);

console.log("");
const first = vmaSetups[0];
for (const s of vmaSetups) {
  const m = results.get(vmaName(s.count))!;
  const buildRate = s.count / s.buildSeconds;
  const perOp = (m.seconds / VMA_OPS_PER_CALL) * 1e9;
  const firstPerOp = (results.get(vmaName(first.count))!.seconds / VMA_OPS_PER_CALL) * 1e9;
  const ratio = perOp / firstPerOp;
  const isLast = s === vmaSetups[vmaSetups.length - 1] && s !== first;
  rows.push({
    name: m.name,
    value: rate(m),
    unit: "ops/s",
    baseline: vmaName(first.count),
    baselineValue: rate(results.get(vmaName(first.count))!),
    ratio,
    ...(isLast ? { target: "per-op cost <= 2x that at the first count", met: ratio <= 2 } : {}),
  });
  rows.push({
    name: `mm: mmap of ${s.count.toLocaleString("en-US")} separate mappings (one run)`,
    value: buildRate,
    unit: "ops/s",
    baseline: "none",
    baselineValue: 0,
    ratio: 0,
  });
  console.log(
    `${m.name.padEnd(58)} ${fmtRate(rate(m)).padStart(11)} ops  ${perOp.toFixed(0)} ns/op  ${ratio.toFixed(2)}x the per-op cost at ${first.count}${isLast ? `  [target <= 2x: ${ratio <= 2 ? "met" : "MISSED"}]` : ""}; building it: ${fmtRate(buildRate)} mmaps (${s.buildSeconds.toFixed(2)} s)`,
  );
}

const out = fileURLToPath(new URL("./results.json", import.meta.url));
writeFileSync(
  out,
  `${JSON.stringify({ node: process.version, date: new Date().toISOString(), rows }, null, 2)}\n`,
);
console.log(`\nwrote ${out}`);
if (sink === 42 || gpuSink() === 42) console.log("");
