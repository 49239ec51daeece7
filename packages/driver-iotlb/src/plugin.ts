import type { HmmPlugin } from "@hmmkit/core";
import { IotlbDriver } from "./driver.js";
import { IOTLB_CONFIG_KEYS } from "./options.js";

/** The iotlb plugin: a per-PTE driver whose device keeps only a small TLB (ATS/PRI, RDMA ODP). */
export const plugin: HmmPlugin = Object.freeze({
  name: "iotlb",
  apiVersion: "^1.0.0",
  design: "per-pte",
  driver: IotlbDriver,
  description:
    "no mirror table: a set-associative device TLB (LRU) filled per PTE; misses are page requests of one page or a small window",
  configKeys: IOTLB_CONFIG_KEYS,
});
