/**
 * The device designs the cross-package tests compare, each as runWorkload options (a plugin and
 * its device config, or an attach hook), and small specs of every workload kind.
 */
import gpu from "@hmmkit/driver-gpu";
import iotlb from "@hmmkit/driver-iotlb";
import { legacyAttach } from "@hmmkit/driver-legacy";
import type { RunWorkloadOptions, WorkloadKind } from "@hmmkit/workloads";

/** One design under comparison. */
export interface Design {
  /** Label in messages. */
  readonly name: string;
  /** The runWorkload options that attach it. */
  readonly options: Pick<RunWorkloadOptions, "plugin" | "device" | "attach">;
}

/** 256 pages (1 MiB) of device memory: small enough that oversub oversubscribes it. */
const MEMORY_PAGES = 256;

/**
 * What is compared: gpu (its own mirror table, first-touch migration into its memory, UVM-style
 * prefetch and eviction), iotlb (no mirror table, never migrates; the default TLB, and a small
 * one faulting 8-page windows with no huge entries) and legacy (HMM v12's shared mirror hmm_pt
 * through @hmmkit/legacy, attached with the runner's attach hook).
 */
export const DESIGNS: readonly Design[] = [
  { name: "gpu", options: { plugin: gpu, device: { memoryPages: MEMORY_PAGES } } },
  { name: "iotlb", options: { plugin: iotlb, device: { memoryPages: MEMORY_PAGES } } },
  {
    name: "iotlb (16 entries, 2 ways, window 8, no huge entries)",
    options: {
      plugin: iotlb,
      device: { memoryPages: MEMORY_PAGES, tlbEntries: 16, tlbWays: 2, faultWindow: 8, hugeEntries: false },
    },
  },
  {
    name: "legacy",
    options: {
      attach: legacyAttach({ memoryPages: MEMORY_PAGES }),
    },
  },
];

/** The design called `name`. */
export function design(name: string): Design {
  const d = DESIGNS.find((x) => x.name === name);
  if (d === undefined) throw new Error(`no design '${name}'`);
  return d;
}

/** Small specs of every kind (a few hundred pages each). */
export const SMALL_SPECS: Record<WorkloadKind, string> = {
  stream: "stream:size=1MiB,passes=2,write=0.5,cpu=0.25",
  random: "random:size=1MiB,accesses=512,passes=2,cpu=0.2",
  stencil: "stencil:size=512KiB,iters=3",
  pingpong: "pingpong:size=512KiB,rounds=4",
  fork: "fork:size=1MiB",
  churn: "churn:size=2MiB,chunk=256KiB,ops=8,huge=1",
  thp: "thp:size=4MiB,passes=2,write=0.5,cpu=0.1",
  oversub: "oversub:factor=1.5,passes=2",
};
