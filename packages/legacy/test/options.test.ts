import { MADV_DONTNEED } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { HMM_PT_DIRECTORY_BYTES, HMM_PT_PGD_BYTES, sharedMirrorBytes } from "../src/index.js";
import { attachFake, makeSystem, mmapPrivate, PAGE, PMD } from "./helpers.js";

/** A device faulting a range, the CPU discarding it, the device faulting it again, 8 times. */
function churn(options: { delayedPruning?: number }) {
  const sys = makeSystem();
  const { proc } = sys;
  const va = mmapPrivate(proc, 4 * PMD);
  const { mirror } = attachFake(sys, proc, "legacy0", options);
  for (let r = 0; r < 8; r++) {
    proc.touch(va, 4 * PMD, true);
    expect(mirror.fault(va, va + 4 * PMD, false)).toBe(0);
    proc.mm.madvise(va, 4 * PMD, MADV_DONTNEED);
  }
  return mirror.pt.stats;
}

describe("options", () => {
  it("delayed pruning, off by default, saves the directory re-allocations of fault/discard churn", () => {
    const eager = churn({});
    const delayed = churn({ delayedPruning: 16 });
    expect(eager.directoriesPruned).toBe(8 * 6);
    expect(eager.directoriesReallocatedSoon).toBe(7 * 6);
    expect(delayed.directoriesAllocated).toBe(6);
    // Only the four leaves are queued: their parents keep a reference for them and stay.
    expect(delayed.directoriesRevived).toBe(7 * 4);
    expect(delayed.directoriesReallocatedSoon).toBe(0);
  });

  it("shared directories: four devices mirroring the same range share one tree instead of four", () => {
    const bytes: number[] = [];
    for (const shared of [false, true]) {
      const sys = makeSystem();
      const { proc } = sys;
      const va = mmapPrivate(proc, 8 * PMD);
      proc.touch(va, 8 * PMD, true);
      const sms = [];
      for (let d = 0; d < 4; d++) {
        const { sm, mirror } = attachFake(sys, proc, `legacy${d}`, { sharedDirectories: shared });
        expect(mirror.fault(va, va + 8 * PMD, d % 2 === 1)).toBe(0);
        sms.push(sm);
      }
      bytes.push(sharedMirrorBytes(sms));
      if (shared) {
        // One tree: the later devices found every entry already valid and wrote none.
        expect(sms[0].mirrors.get(proc.mm.id)!.pt).toBe(sms[3].mirrors.get(proc.mm.id)!.pt);
        expect(sms[0].stats().entriesWritten).toBe(8 * 512);
        // Invalidation still reaches every device's driver.
        proc.mm.madvise(va, PAGE, MADV_DONTNEED);
        for (const sm of sms) expect((sm.driver as unknown as { updates: unknown[] }).updates.length).toBe(2);
      }
    }
    const tree = 8 * HMM_PT_DIRECTORY_BYTES + 2 * HMM_PT_DIRECTORY_BYTES + HMM_PT_PGD_BYTES;
    expect(bytes[0]).toBe(4 * tree);
    expect(bytes[1]).toBe(tree);
  });
});
