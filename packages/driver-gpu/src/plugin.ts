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
  // A fault reaches the table a leaf run at a time: two typed copies per run instead of a call
  // per page (about 2x the whole fault's rate on 1 GiB; see the README). `callbackMode:
  // "per-pte"` in a device config still picks mirrorPte.
  callbackMode: "array",
};

export default plugin;
