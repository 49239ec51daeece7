import { PROT_READ } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import {
  EPERM,
  HMM_DMIRROR_CHECK_EXCLUSIVE,
  HMM_DMIRROR_EXCLUSIVE,
  HMM_DMIRROR_WRITE,
  hmmDmirrorCmd,
} from "./dmirror-fake.js";
import {
  asInts,
  cpuInts,
  expectInts,
  fixture,
  incrementInts,
  initInts,
  mmap,
  NPAGES,
  newBuffer,
  RW,
  SIZE,
} from "./selftest-helpers.js";

describe("hmm-tests.c on a DEVICE_PRIVATE dmirror: exclusive access", () => {
  it("exclusive: the device gets exclusive access; CPU increments revoke it and CHECK_EXCLUSIVE finds no atomic entry", () => {
    const { p, fd } = fixture();
    const ptr = mmap(p, SIZE, RW);
    initInts(p, ptr, SIZE, (i) => i);
    const buf = newBuffer(ptr, SIZE);
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_EXCLUSIVE, buf, NPAGES)).toBe(0);
    expect(buf.cpages).toBe(NPAGES);
    expectInts(asInts(buf.mirror), (i) => i, "mirror");
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_CHECK_EXCLUSIVE, buf, NPAGES)).toBe(-EPERM);
    incrementInts(p, ptr, SIZE, (i) => i);
    expectInts(cpuInts(p, ptr, SIZE), (i) => i + 1, "ptr");
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_CHECK_EXCLUSIVE, buf, NPAGES)).toBe(0);
  });
  it("exclusive_mprotect: after mprotect(PROT_READ) of exclusive pages a device write is -EPERM", () => {
    const { p, fd } = fixture();
    const ptr = mmap(p, SIZE, RW);
    initInts(p, ptr, SIZE, (i) => i);
    const buf = newBuffer(ptr, SIZE);
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_EXCLUSIVE, buf, NPAGES)).toBe(0);
    expect(buf.cpages).toBe(NPAGES);
    expectInts(asInts(buf.mirror), (i) => i, "mirror");
    p.mm.mprotect(ptr, SIZE, PROT_READ);
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_WRITE, buf, NPAGES)).toBe(-EPERM);
  });
  it("exclusive_cow: after fork the child and the parent each increment their own copy of exclusive pages", () => {
    const { p, fd } = fixture();
    const ptr = mmap(p, SIZE, RW);
    initInts(p, ptr, SIZE, (i) => i);
    const buf = newBuffer(ptr, SIZE);
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_EXCLUSIVE, buf, NPAGES)).toBe(0);
    expect(buf.cpages).toBe(NPAGES);
    const child = p.fork();
    incrementInts(child, ptr, SIZE, (i) => i);
    expectInts(cpuInts(child, ptr, SIZE), (i) => i + 1, "child");
    child.exit();
    incrementInts(p, ptr, SIZE, (i) => i);
    expectInts(cpuInts(p, ptr, SIZE), (i) => i + 1, "parent");
  });
});
