import { createHmm } from "@hmmkit/core";
import { sharedMirrorBytes } from "@hmmkit/legacy";
import {
  MADV_HUGEPAGE,
  MADV_NOHUGEPAGE,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  PROT_READ,
  PROT_WRITE,
} from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { attachLegacy } from "../src/index.js";

const GiB = 1024 ** 3;
const DIR = 4096;
const ROOT = 2048;
/** One GiB mirrored in one tree: 512 leaves, a level-2 and a level-1 directory, the root array. */
const TREE_PER_GIB = 512 * DIR + 2 * DIR + ROOT;

/** Mirror 1 GiB (4 KiB pages or THPs) on `devices` legacy devices; the bytes each structure takes. */
function measure(huge: boolean, devices: number, sharedDirectories: boolean) {
  const { core, machine } = createHmm({
    machine: { contentMode: "tag", memoryBytes: GiB + 64 * 1024 * 1024 },
  });
  const proc = machine.createProcess();
  // A 1 GiB-aligned GiB: one level-2 directory covers it (an unaligned one needs a second).
  const raw = proc.mm.mmap({
    length: 2 * GiB,
    prot: PROT_READ | PROT_WRITE,
    flags: MAP_PRIVATE | MAP_ANONYMOUS,
  });
  const base = raw % GiB === 0 ? raw : raw - (raw % GiB) + GiB;
  proc.mm.madvise(base, GiB, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  proc.touch(base, GiB, true, 1);
  const sms = [];
  let driverTables = 0;
  let reported = 0;
  for (let d = 0; d < devices; d++) {
    const { device, mirror } = attachLegacy(
      core,
      { name: `legacy${d}`, memoryPages: 16 },
      { sharedDirectories },
    );
    expect(mirror.register(proc.mm).fault(base, base + GiB, false)).toBe(0);
    sms.push(mirror);
    driverTables += mirror.stats().driverTableBytes;
    reported += device.stats.mirrorBytes;
  }
  return {
    hmmPt: sharedMirrorBytes(sms),
    driverTables,
    reported,
    leaf: sms[0].stats().sharedMirrorLeafBytes,
  };
}

describe("mirror memory per GiB mirrored (the seed: 2 MB per GB)", () => {
  it("one device: hmm_pt is 2 MiB of leaves plus 10 KiB of directories, 4 KiB pages or THP alike; its own table the same again", () => {
    for (const huge of [false, true]) {
      const m = measure(huge, 1, false);
      expect(m.leaf).toBe(2 * 1024 * 1024);
      expect(m.hmmPt).toBe(TREE_PER_GIB);
      expect(m.driverTables).toBe(TREE_PER_GIB);
      expect(m.reported).toBe(2 * TREE_PER_GIB);
    }
  });

  it("four devices: four hmm_pt trees, or one with sharedDirectories; four driver tables either way", () => {
    const apart = measure(false, 4, false);
    expect(apart.hmmPt).toBe(4 * TREE_PER_GIB);
    expect(apart.driverTables).toBe(4 * TREE_PER_GIB);
    const shared = measure(true, 4, true);
    expect(shared.hmmPt).toBe(TREE_PER_GIB);
    expect(shared.driverTables).toBe(4 * TREE_PER_GIB);
  });
});
