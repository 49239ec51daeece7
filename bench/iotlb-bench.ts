import { createHmm, DeviceAccesses } from "@hmmkit/core";
import iotlb from "@hmmkit/driver-iotlb";
import { type Bench, populatedGiB } from "./harness.js";

const GiB = 1024 ** 3;
const PAGES = GiB / 4096;

/** Names of the cases. */
export const IOTLB_CASES = {
  hits: "iotlb: streaming device read of 1 GiB THP, TLB hit path",
  lookup: "baseline: typed-array lookup loop, 262,144 accesses (frame, token, seen, done)",
};

/**
 * The iotlb driver's hit path: a streaming read of 1 GiB of THP through a 512-entry TLB holding
 * its 512 2 MiB entries (faulted once before timing), through HmmCore.runDevice with
 * verifyTranslations off. Baseline: what the access path must do per access at the least, as a
 * plain loop over the same stream's arrays: the page number of the access, a typed-array lookup
 * of its frame, the frame's content token stored in `seen`, `done` set. Own machine, tag mode.
 * Items are accesses.
 */
export function addIotlbCases(bench: Bench): {
  faults: number;
  mirrorBytes4k: number;
  mirrorBytes2m: number;
} {
  const { core, machine } = createHmm({
    machine: { contentMode: "tag", memoryBytes: 2 * GiB + 256 * 1024 * 1024 },
  });
  const p = machine.createProcess();
  const base = populatedGiB(p, true, 1);
  const dev = core.addDevice(iotlb, { name: "iotlb0", memoryPages: 16, tlbEntries: 512, tlbWays: 4 });
  const acc = new DeviceAccesses(PAGES);
  for (let i = 0; i < PAGES; i++) acc.read(base + i * 4096);
  core.runDevice(dev, p.mm, acc);
  const faults = dev.stats.deviceFaults;
  const mirrorBytes2m = dev.stats.mirrorBytes;
  // The same TLB after a whole 1 GiB of 4 KiB pages went through it (not timed).
  const small = populatedGiB(p, false, 3);
  const dev4k = core.addDevice(iotlb, { name: "iotlb1", memoryPages: 16, tlbEntries: 512, tlbWays: 4 });
  core.deviceFault(dev4k, p.mm, small, small + GiB, false);
  const mirrorBytes4k = dev4k.stats.mirrorBytes;
  core.removeDevice(dev4k);
  p.mm.munmap(small, GiB);
  bench.add(IOTLB_CASES.hits, PAGES, () => {
    core.runDevice(dev, p.mm, acc, { verifyTranslations: false });
  });

  const table = new Int32Array(PAGES);
  for (let i = 0; i < PAGES; i++) table[i] = (i * 7919) % PAGES;
  const tokens = new Uint32Array(PAGES);
  const va = acc.va;
  const seen = acc.seen;
  const done = acc.done;
  const first = base / 4096;
  bench.add(IOTLB_CASES.lookup, PAGES, () => {
    for (let i = 0; i < PAGES; i++) {
      seen[i] = tokens[table[va[i] / 4096 - first]];
      done[i] = 1;
    }
  });
  return { faults, mirrorBytes4k, mirrorBytes2m };
}
