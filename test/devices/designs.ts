/**
 * The device designs the cross-package tests compare, each as runWorkload options (a plugin and
 * its device config, or an attach hook), and small specs of every workload kind.
 */
import iotlb from "@hmmkit/driver-iotlb";
import { legacyAttach } from "@hmmkit/driver-legacy";
import type { RunWorkloadOptions, WorkloadKind } from "@hmmkit/workloads";
import { mapMirrorPlugin, migratingPlugin } from "../../packages/workloads/test/fakes.js";

/** One design under comparison. */
export interface Design {
  /** Label in messages. */
  readonly name: string;
  /** The runWorkload options that attach it. */
  readonly options: Pick<RunWorkloadOptions, "plugin" | "device" | "attach">;
  /** It is a real driver package (not a stand-in fake of the workloads package's tests). */
  readonly real: boolean;
}

/** 256 pages (1 MiB) of device memory: small enough that oversub oversubscribes it. */
const MEMORY_PAGES = 256;

/**
 * What is compared: iotlb (default TLB, and a small TLB with an 8-page window and no huge
 * entries), against the workloads package's mirror-table fakes (one mapping system memory
 * remotely, one migrating every faulted page) standing in for a GPU-style driver with its own
 * mirror.
 */
export const DESIGNS: readonly Design[] = [
  { name: "iotlb", real: true, options: { plugin: iotlb, device: { memoryPages: MEMORY_PAGES } } },
  {
    name: "iotlb (16 entries, 2 ways, window 8, no huge entries)",
    real: true,
    options: {
      plugin: iotlb,
      device: { memoryPages: MEMORY_PAGES, tlbEntries: 16, tlbWays: 2, faultWindow: 8, hugeEntries: false },
    },
  },
  {
    name: "map-mirror-fake",
    real: false,
    options: { plugin: mapMirrorPlugin, device: { memoryPages: MEMORY_PAGES } },
  },
  {
    name: "migrating-fake",
    real: false,
    options: { plugin: migratingPlugin, device: { memoryPages: MEMORY_PAGES } },
  },
  {
    name: "legacy (HMM v12 shared mirror)",
    real: true,
    options: { attach: legacyAttach({ memoryPages: MEMORY_PAGES }) },
  },
];

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
