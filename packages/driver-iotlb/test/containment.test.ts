import { DeviceAccesses, type DeviceContext, DriverError, type HmmCore, TOKENS } from "@hmmkit/core";
import { stampToken } from "@hmmkit/mm";
import { inject, injectable } from "tsyringe";
import { describe, expect, it } from "vitest";
import { IotlbDriver, plugin } from "../src/index.js";
import { addIotlb, expectCoherent, makeSystem, mmapPrivate, PAGE } from "./helpers.js";

/** A deliberately broken iotlb driver: its 100th mirrorPte throws, in the middle of a fault batch. */
@injectable()
class ThrowingMidBatchIotlbFakeDriver extends IotlbDriver {
  ptes = 0;
  constructor(@inject(TOKENS.DeviceContext) ctx: DeviceContext, @inject(TOKENS.HmmCore) core: HmmCore) {
    super(ctx, core);
  }
  override mirrorPte(mmId: number, va: number, pfn: number, flags: number): void {
    if (++this.ptes === 100) throw new Error("deliberate failure of the fake in the middle of a batch");
    super.mirrorPte(mmId, va, pfn, flags);
  }
}

const brokenPlugin = { ...plugin, name: "throwing-iotlb-fake", driver: ThrowingMidBatchIotlbFakeDriver };

describe("a driver failure in the middle of a fault batch is contained", () => {
  it("the failing device is detached, its run ends with the rest cancelled, and no data is lost", () => {
    const sys = makeSystem();
    const p = sys.machine.createProcess();
    const base = mmapPrivate(p, 512 * PAGE);
    for (let i = 0; i < 256; i++) p.writeStamp(base + i * PAGE, PAGE, 10 + i);
    const { dev: bad } = addIotlb(sys.core, {}, "broken0", brokenPlugin);
    const { dev: good } = addIotlb(sys.core, {}, "good0");
    const acc = new DeviceAccesses();
    for (let i = 0; i < 256; i++) acc.write(base + (256 + i) * PAGE, 5000 + i);
    for (let i = 0; i < 256; i++) acc.read(base + i * PAGE);
    const r = sys.core.runDevice(bad, p.mm, acc);
    expect(r.deviceFailure).toBeInstanceOf(DriverError);
    expect(r.deviceFailure?.message).toMatch(/mirrorPte/);
    expect(r.deviceFailure?.message).toMatch(/deliberate failure/);
    expect(bad.state).toBe("failed");
    expect(r.completed + r.cancelled).toBe(512);
    expect(r.cancelled).toBeGreaterThan(0);
    expect(sys.core.translations(good)).toEqual([]);
    // Nothing lost: each device write happened if and only if its access completed.
    for (let i = 0; i < 256; i++) {
      const va = base + (256 + i) * PAGE;
      const want = acc.done[i] === 1 ? stampToken(5000 + i) : 0;
      expect(p.readPageHash(va)).toBe(want);
    }
    for (let i = 0; i < 256; i++) expect(p.readPageHash(base + i * PAGE)).toBe(stampToken(10 + i));
    // The other device goes on and reads everything right.
    const again = new DeviceAccesses();
    for (let i = 0; i < 256; i++) again.read(base + i * PAGE);
    const r2 = sys.core.runDevice(good, p.mm, again);
    expect(r2.completed).toBe(256);
    for (let i = 0; i < 256; i++) expect(again.seen[i]).toBe(stampToken(10 + i));
    expectCoherent(sys.core, good);
    p.exit();
    expect(sys.machine.usedFrames).toBe(0);
  });
});
