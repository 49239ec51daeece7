/** The side-by-side table: one row per counter, one column per design. */
import type { WorkloadReport } from "@hmmkit/workloads";

/** A row: its label and how to read it from a report. */
interface RowDef {
  readonly label: string;
  readonly value: (r: WorkloadReport) => string;
}

const n = (x: number) => x.toLocaleString("en-US");
const s = (r: WorkloadReport, k: string) => r.deviceStats[k] ?? 0;

/** The rows, in order (labels are what the table prints). */
export const ROWS: readonly RowDef[] = [
  { label: "device accesses", value: (r) => n(s(r, "accesses")) },
  { label: "device faults raised", value: (r) => n(s(r, "accessFaults")) },
  { label: "deviceFault calls", value: (r) => n(s(r, "deviceFaults")) },
  { label: "fault batches", value: (r) => n(s(r, "faultBatches")) },
  { label: "per-PTE callbacks", value: (r) => n(s(r, "pteCallbacks")) },
  { label: "array callbacks (runs)", value: (r) => n(s(r, "arrayCallbacks")) },
  { label: "huge (PMD) callbacks", value: (r) => n(s(r, "pmdCallbacks")) },
  { label: "migrations to device", value: (r) => n(s(r, "migratedToDevice")) },
  { label: "migrations to RAM", value: (r) => n(s(r, "migratedToRam")) },
  { label: "evictions", value: (r) => n(s(r, "evictions")) },
  { label: "invalidations", value: (r) => n(s(r, "invalidations")) },
  { label: "TLB/mirror flushes", value: (r) => n(s(r, "tlbFlushes")) },
  { label: "mirror bytes peak", value: (r) => n(s(r, "mirrorBytesPeak")) },
  { label: "simulated time (ms)", value: (r) => (r.simulatedNs / 1e6).toFixed(3) },
  { label: "wall time (ms)", value: (r) => r.wallMs.toFixed(1) },
  { label: "checks ok", value: (r) => (r.ok ? "yes" : "NO") },
];

/** Label of the last row: whether each design's digest equals the first design's. */
export const DIGEST_ROW = "digest equal";

/** The table for one workload's reports (one per design, first design as reference). */
export function formatTable(
  spec: string,
  names: readonly string[],
  reports: readonly WorkloadReport[],
): string[] {
  const cells: string[][] = ROWS.map((row) => [row.label, ...reports.map(row.value)]);
  cells.push([DIGEST_ROW, ...reports.map((r) => (r.digest === reports[0].digest ? "yes" : "NO"))]);
  const header = ["", ...names];
  const widths = header.map((h, c) => Math.max(h.length, ...cells.map((row) => row[c].length)));
  const line = (row: readonly string[]) =>
    row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join("  ");
  return [
    `${spec}  (digest ${reports[0].digest})`,
    line(header),
    widths.map((w) => "-".repeat(w)).join("  "),
    ...cells.map(line),
  ];
}
