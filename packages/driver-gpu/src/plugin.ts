import { HMM_API_VERSION, type HmmPlugin } from "@hmmkit/core";
import { GpuDriver } from "./gpu-driver.js";
import { GPU_CONFIG_KEYS } from "./options.js";

/** The gpu plugin: a GPU-like device with its own mirror, VRAM, fault batching, migration and eviction. */
export const plugin: HmmPlugin = {
  name: "gpu",
  apiVersion: HMM_API_VERSION,
  design: "per-pte",
  driver: GpuDriver,
  description:
    "GPU-like device: own device page table (4 KiB and 2 MiB entries), fault batches per 2 MiB VA block, UVM-style prefetch, migration policies, LRU/clock eviction, thrashing pins",
  configKeys: GPU_CONFIG_KEYS,
};

export default plugin;
