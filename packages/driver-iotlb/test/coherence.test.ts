import { DeviceAccesses } from "@hmmkit/core";
import { MADV_DONTNEED, PROT_READ, stampToken } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { addIotlb, expectCoherent, makeSystem, mmapHuge, mmapPrivate, PAGE, RW } from "./helpers.js";

function setup() {
  const sys = makeSystem();
  const p = sys.machine.createProcess();
  const base = mmapPrivate(p, 32 * PAGE);
  const huge = mmapHuge(p, 1);
  const { dev, drv } = addIotlb(sys.core, { faultWindow: 4 });
  const touchAll = (mmId = p) => {
    const acc = new DeviceAccesses();
    for (let i = 0; i < 32; i++) acc.write(base + i * PAGE, 100 + i);
    for (let i = 0; i < 512; i += 37) acc.read(huge + i * PAGE);
    return sys.core.runDevice(dev, mmId.mm, acc);
  };
  return { ...sys, p, base, huge, dev, drv, touchAll };
}

describe("iotlb translations agree with the CPU page table", () => {
  it("after munmap", () => {
    const s = setup();
    s.touchAll();
    expect(s.drv.tlb.used).toBeGreaterThan(0);
    s.p.mm.munmap(s.base + 4 * PAGE, 8 * PAGE);
    s.p.mm.munmap(s.huge + 16 * PAGE, PAGE);
    expect(
      s.core.translations(s.dev).some((t) => t.va >= s.base + 4 * PAGE && t.va < s.base + 12 * PAGE),
    ).toBe(false);
    expectCoherent(s.core, s.dev);
  });

  it("after mprotect: no writable translation of a read-only page survives", () => {
    const s = setup();
    s.touchAll();
    s.p.mm.mprotect(s.base, 32 * PAGE, PROT_READ);
    expect(s.core.translations(s.dev).some((t) => t.writable)).toBe(false);
    expectCoherent(s.core, s.dev);
    // Reads fault back read-only; writes are refused.
    const acc = new DeviceAccesses();
    acc.read(s.base);
    acc.write(s.base + PAGE, 1);
    const r = s.core.runDevice(s.dev, s.p.mm, acc);
    expect(r.errors.map((e) => e.errno)).toEqual(["EPERM"]);
    s.p.mm.mprotect(s.base, 32 * PAGE, RW);
    expectCoherent(s.core, s.dev);
  });

  it("after fork: COW makes the parent's entries read-only, and each side's device writes stay its own", () => {
    const s = setup();
    s.touchAll();
    const child = s.p.fork();
    expectCoherent(s.core, s.dev);
    expect(s.core.translations(s.dev).some((t) => t.writable && t.mmId === s.p.mm.id)).toBe(false);
    // The child's device writes break COW in the child only.
    const acc = new DeviceAccesses();
    acc.write(s.base, 555);
    s.core.runDevice(s.dev, child.mm, acc);
    expect(child.readPageHash(s.base)).toBe(stampToken(555));
    expect(s.p.readPageHash(s.base)).toBe(stampToken(100));
    // The parent's device write breaks COW in the parent.
    const acc2 = new DeviceAccesses();
    acc2.write(s.base + PAGE, 777);
    acc2.read(s.base);
    s.core.runDevice(s.dev, s.p.mm, acc2);
    expect(acc2.seen[1]).toBe(stampToken(100));
    expect(child.readPageHash(s.base + PAGE)).toBe(stampToken(101));
    expect(s.p.readPageHash(s.base + PAGE)).toBe(stampToken(777));
    expectCoherent(s.core, s.dev);
    child.exit();
    expectCoherent(s.core, s.dev);
  });

  it("after MADV_DONTNEED: the device reads zeros, as the CPU does", () => {
    const s = setup();
    s.touchAll();
    s.p.mm.madvise(s.base, 8 * PAGE, MADV_DONTNEED);
    expectCoherent(s.core, s.dev);
    const acc = new DeviceAccesses();
    acc.read(s.base + 3 * PAGE);
    acc.read(s.base + 9 * PAGE);
    s.core.runDevice(s.dev, s.p.mm, acc);
    expect(acc.seen[0]).toBe(0);
    expect(acc.seen[1]).toBe(stampToken(109));
    expectCoherent(s.core, s.dev);
  });

  it("after exit the TLB holds nothing of the address space (RELEASE covers all of user space)", () => {
    const s = setup();
    s.touchAll();
    const flushes = s.dev.stats.tlbFlushes;
    s.p.exit();
    expect(s.drv.tlb.used).toBe(0);
    expect(s.dev.stats.tlbFlushes).toBeGreaterThan(flushes);
    expect(s.core.translations(s.dev)).toEqual([]);
    expect(s.machine.usedFrames).toBe(0);
  });

  it("after unbind the TLB holds nothing of that address space", () => {
    const s = setup();
    s.touchAll();
    s.core.unbind(s.dev, s.p);
    expect(s.drv.tlb.used).toBe(0);
    expect(s.core.translations(s.dev)).toEqual([]);
  });
  it("one TLB serves two address spaces: an invalidation in one leaves the other's entries", () => {
    const s = setup();
    const q = s.machine.createProcess();
    const qbase = mmapPrivate(q, 32 * PAGE);
    s.touchAll();
    const acc = new DeviceAccesses();
    for (let i = 0; i < 8; i++) acc.write(qbase + i * PAGE, 900 + i);
    s.core.runDevice(s.dev, q.mm, acc);
    const mine = () => s.core.translations(s.dev).filter((t) => t.mmId === q.mm.id).length;
    expect(mine()).toBe(8);
    s.p.mm.munmap(s.base, 32 * PAGE);
    expect(mine()).toBe(8);
    q.mm.mprotect(qbase, 4 * PAGE, PROT_READ);
    expect(mine()).toBe(4);
    expectCoherent(s.core, s.dev);
    expect(q.readPageHash(qbase + 5 * PAGE)).toBe(stampToken(905));
  });
});
