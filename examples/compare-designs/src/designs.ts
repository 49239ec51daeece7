/**
 * The designs compared: each a name and the runWorkload options that attach it. Every design gets
 * the same device memory, so `oversub` oversubscribes them alike.
 */
import gpu from "@hmmkit/driver-gpu";
import iotlb from "@hmmkit/driver-iotlb";
import { legacyAttach } from "@hmmkit/driver-legacy";
import type { RunWorkloadOptions } from "@hmmkit/workloads";

/** One design: a driver (and its settings) under a short name. */
export interface Design {
  readonly name: string;
  /** One line saying what it is. */
  readonly description: string;
  readonly options: Pick<RunWorkloadOptions, "plugin" | "device" | "attach">;
}

/** Device memory of every design: 512 pages (2 MiB). */
export const DEVICE_MEMORY_PAGES = 512;

/** Every design this example knows, by name. */
export const DESIGNS: readonly Design[] = [
  {
    name: "gpu",
    description:
      "own device page table (4 KiB and 2 MiB entries), first-touch migration into device memory, UVM-style prefetch and eviction",
    options: { plugin: gpu, device: { memoryPages: DEVICE_MEMORY_PAGES } },
  },
  {
    name: "iotlb",
    description: "no mirror table: a 64-entry 4-way device TLB, one page per fault (ATS/PRI)",
    options: { plugin: iotlb, device: { memoryPages: DEVICE_MEMORY_PAGES } },
  },
  {
    name: "iotlb-odp",
    description: "the same TLB faulting an aligned 16-page window per miss (RDMA ODP prefetch)",
    options: { plugin: iotlb, device: { memoryPages: DEVICE_MEMORY_PAGES, faultWindow: 16 } },
  },
  {
    name: "legacy",
    description:
      "HMM v12's shared mirror: hmm_pt filled by hmm_mirror_fault, the driver's own table programmed from it",
    options: {
      attach: legacyAttach({ memoryPages: DEVICE_MEMORY_PAGES }),
    },
  },
];
