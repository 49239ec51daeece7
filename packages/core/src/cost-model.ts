import { MmError } from "@hmmkit/mm";
import type { DeviceStats } from "./stats.js";

/** One constant of a cost profile: its value, unit, and where the number comes from. */
export interface CostConstant {
  readonly value: number;
  readonly unit: "us" | "ns" | "GB/s";
  readonly source: string;
}

/** The constants of the model, by name. */
export interface CostConstants {
  /**
   * Fixed cost of servicing one fault batch of the access path (fault buffer read, batch setup,
   * replay), or one device fault request made outside a batch.
   */
  faultServiceUs: CostConstant;
  /** Cost per page made valid for the device in a fault (lookup, map, TLB fill), amortised in a batch. */
  pageMapUs: CostConstant;
  /** Extra cost per page the CPU side had to populate on the device's behalf (allocate and zero). */
  populatePageUs: CostConstant;
  /** A CPU fault on a device-resident page: fault entry plus migration setup, excluding the copy. */
  cpuFaultOnDeviceUs: CostConstant;
  /** Host-to-device copy bandwidth for migrations. */
  hostToDeviceGBps: CostConstant;
  /** Device-to-host copy bandwidth for migrations. */
  deviceToHostGBps: CostConstant;
  /**
   * Per page invalidated in a device mirror (unmap + TLB invalidate, amortised), charged per
   * `DeviceStats.invalidatedPages`: pages the device may hold in the range, not the range's size.
   */
  invalidatePageNs: CostConstant;
  /** Per driver callback invocation (software overhead of one call into the driver). */
  callbackNs: CostConstant;
  /** Per device access completed against the device's own memory (one 4 KiB page streamed). */
  localAccessNs: CostConstant;
  /** Per device access completed against system memory over the bus (one 4 KiB page streamed). */
  remoteAccessNs: CostConstant;
}

/** A named set of constants. */
export interface CostProfile {
  readonly name: string;
  readonly description: string;
  readonly constants: CostConstants;
}

const CAL = "calibration/h100-uvm.json";

/**
 * Constants derived from phases measured on an NVIDIA H100 with the UVM driver (a driver that
 * keeps its own mirror, batches 256 faults, manages 2 MiB blocks). Each `source` names the phase.
 */
export const H100_UVM_PROFILE: CostProfile = {
  name: "h100-uvm",
  description: "NVIDIA H100 80GB HBM3 with the UVM driver (open kernel module 580.159.04, PCIe Gen5)",
  constants: {
    faultServiceUs: {
      value: 33.18,
      unit: "us",
      source: `${CAL}: 'serial GPU faults, one per 2 MiB block, CPU-populated memory' (33.18 us per fault, one fault per batch)`,
    },
    pageMapUs: {
      value: 0.535,
      unit: "us",
      source: `${CAL}: 'GPU first touch, every page, sequential, CPU-populated' (0.6375 and 0.4330 us/page, mean)`,
    },
    populatePageUs: {
      value: 0.0,
      unit: "us",
      source: `${CAL}: never-touched blocks fault faster (19.36 us) than CPU-populated ones (33.18 us): populating costs no extra per page at this granularity`,
    },
    cpuFaultOnDeviceUs: {
      value: 34.675,
      unit: "us",
      source: `${CAL}: 'serial CPU faults, one per 2 MiB block, GPU-resident memory' (34.675 us per fault)`,
    },
    hostToDeviceGBps: {
      value: 46.9,
      unit: "GB/s",
      source: `${CAL}: 'explicit migration of 1 GiB to the GPU (cudaMemPrefetchAsync)' (46.9 GB/s)`,
    },
    deviceToHostGBps: {
      value: 11.46,
      unit: "GB/s",
      source: `${CAL}: 'explicit migration of 1 GiB back to the CPU (cudaMemPrefetchAsync)' (11.46 GB/s)`,
    },
    invalidatePageNs: {
      value: 38.7,
      unit: "ns",
      source: `${CAL}: 'free of 1 GiB of GPU-resident managed memory' (10.141 ms / 262144 pages)`,
    },
    callbackNs: {
      value: 0,
      unit: "ns",
      source:
        "not measured: driver software overhead is inside pageMapUs for a real driver; set it to model a slower plugin",
    },
    localAccessNs: {
      value: 2.53,
      unit: "ns",
      source: `${CAL}: baseline 'GPU streaming read of GPU-resident managed memory' (1616-1630 GB/s: 4096 B / 1616 GB/s per page)`,
    },
    remoteAccessNs: {
      value: 74.9,
      unit: "ns",
      source: `${CAL}: baseline 'pinned host-to-device copy (cudaMemcpy)' (54.66 GB/s: 4096 B / 54.66 GB/s per page); the GPU could not access plain host memory directly in that run, so the bus bandwidth stands in for a remote access`,
    },
  },
};

/** Simulated time of a run, in nanoseconds, with the share of each term. */
export interface CostBreakdown {
  totalNs: number;
  terms: Record<string, number>;
}

/**
 * A mechanistic cost model: simulated time = sum over the counted events of (count x unit cost),
 * with copies costed by bytes over the profile's bandwidth. It never looks up known answers.
 * Constants can be overridden per run (`new CostModel(profile, { pageMapUs: 0.4 })`).
 */
export class CostModel {
  readonly constants: Readonly<Record<keyof CostConstants, number>>;

  constructor(
    readonly profile: CostProfile = H100_UVM_PROFILE,
    overrides: Partial<Record<keyof CostConstants, number>> = {},
  ) {
    const c = {} as Record<keyof CostConstants, number>;
    for (const [k, v] of Object.entries(profile.constants) as [keyof CostConstants, CostConstant][])
      c[k] = v.value;
    if (typeof overrides !== "object" || overrides === null)
      throw new MmError(
        "EINVAL",
        `cost model: overrides must be an object, got ${String(overrides)}`,
        "BAD_CONFIG",
      );
    for (const [k, v] of Object.entries(overrides) as [keyof CostConstants, number][]) {
      if (!Object.hasOwn(c, k))
        throw new MmError(
          "EINVAL",
          `cost model: unknown constant '${k}' (known: ${Object.keys(c).join(", ")})`,
          "BAD_CONFIG",
        );
      if (typeof v !== "number" || !Number.isFinite(v) || v < 0)
        throw new MmError(
          "EINVAL",
          `cost model: '${k}' must be a non-negative number, got ${v}`,
          "BAD_CONFIG",
        );
      c[k] = v;
    }
    for (const k of ["hostToDeviceGBps", "deviceToHostGBps"] as const) {
      if (!(c[k] > 0)) throw new MmError("EINVAL", `cost model: '${k}' must be positive`, "BAD_CONFIG");
    }
    this.constants = Object.freeze(c);
  }

  /** Simulated nanoseconds for the events counted in `s`. */
  estimate(s: DeviceStats): CostBreakdown {
    const c = this.constants;
    const terms: Record<string, number> = {
      faultService: (s.faultBatches + s.deviceFaults - s.batchedDeviceFaults) * c.faultServiceUs * 1000,
      pageMap: s.pagesMirrored * c.pageMapUs * 1000,
      populate: s.cpuFaultsForDevice * c.populatePageUs * 1000,
      cpuFaultOnDevice: s.cpuFaultsOnDevicePages * c.cpuFaultOnDeviceUs * 1000,
      copyToDevice: s.bytesToDevice / c.hostToDeviceGBps,
      copyToHost: s.bytesToRam / c.deviceToHostGBps,
      invalidate: s.invalidatedPages * c.invalidatePageNs,
      callbacks: (s.pteCallbacks + s.pmdCallbacks + s.arrayCallbacks) * c.callbackNs,
      localAccess: s.localAccesses * c.localAccessNs,
      remoteAccess: s.remoteAccesses * c.remoteAccessNs,
    };
    let totalNs = 0;
    for (const v of Object.values(terms)) totalNs += v;
    return { totalNs, terms };
  }
}
