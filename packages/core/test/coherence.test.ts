import { MADV_DONTNEED } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { checkCoherence } from "../src/index.js";
import {
  ExclusiveClaimingFakeDriver,
  PAGE,
  RecordingFakeDriver,
  StaleTranslatingFakeDriver,
} from "./fakes.js";
import { addFake, makeSystem, mmapPrivate } from "./helpers.js";

describe("checkCoherence", () => {
  it("finds nothing wrong with a driver that drops what invalidations cover", () => {
    const sys = makeSystem();
    const p = sys.machine.createProcess();
    const base = mmapPrivate(p, 16 * PAGE);
    const { dev } = addFake(sys.core, "dev0", RecordingFakeDriver);
    sys.core.deviceFault(dev, p.mm, base, base + 16 * PAGE, true);
    p.mm.madvise(base, 4 * PAGE, MADV_DONTNEED);
    expect(checkCoherence(sys.core, dev)).toEqual({ pages: 12, violations: 0, problems: [] });
    p.fork(); // PROTECTION_PAGE over the VMA: this fake drops the rest
    expect(checkCoherence(sys.core, dev)).toEqual({ pages: 0, violations: 0, problems: [] });
  });

  it("names every page a broken driver (one that ignores invalidate) still translates", () => {
    const sys = makeSystem();
    const p = sys.machine.createProcess();
    const base = mmapPrivate(p, 16 * PAGE);
    const { dev } = addFake(sys.core, "dev0", StaleTranslatingFakeDriver as never);
    sys.core.deviceFault(dev, p.mm, base, base + 16 * PAGE, true);
    p.mm.madvise(base, 4 * PAGE, MADV_DONTNEED); // 4 pages gone
    p.fork(); // 12 pages write-protected, still writable in the broken mirror
    const r = checkCoherence(sys.core, dev, 3);
    expect(r.pages).toBe(16);
    expect(r.violations).toBe(16);
    expect(r.problems).toHaveLength(3);
    expect(r.problems[0]).toMatch(/^dev0: mm \d+ va 0x[\da-f_]+: .*no entry/);
    p.exit();
    const after = checkCoherence(sys.core, dev);
    expect(after.problems[0]).toMatch(/exited/);
  });

  it("refuses a translation reported exclusive over a plain present entry", () => {
    const sys = makeSystem();
    const p = sys.machine.createProcess();
    const base = mmapPrivate(p, 4 * PAGE);
    const { dev } = addFake(sys.core, "dev0", ExclusiveClaimingFakeDriver as never);
    sys.core.deviceFault(dev, p.mm, base, base + 4 * PAGE, true);
    const r = checkCoherence(sys.core, dev);
    expect(r.violations).toBe(4);
    expect(r.problems[0]).toMatch(/reported exclusive/);
  });

  it("accepts exclusive translations made by makeExclusive", () => {
    const sys = makeSystem();
    const p = sys.machine.createProcess();
    const base = mmapPrivate(p, 4 * PAGE);
    p.touch(base, 4 * PAGE, true, 1);
    const { dev } = addFake(sys.core, "dev0", RecordingFakeDriver);
    sys.core.makeExclusive(dev, p.mm, base, base + 4 * PAGE);
    expect(checkCoherence(sys.core, dev)).toEqual({ pages: 4, violations: 0, problems: [] });
  });
});
