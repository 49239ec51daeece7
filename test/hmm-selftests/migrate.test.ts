/**
 * hmm-tests.c, ported: migration of 4 KiB pages to the device and back.
 */
import { HMM_DMIRROR_PROT_WRITE } from "@hmmkit/core";
import { PROT_NONE, PROT_READ } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import {
  EINVAL,
  ENOENT,
  HMM_DMIRROR_MIGRATE_TO_DEV,
  HMM_DMIRROR_RELEASE,
  HMM_DMIRROR_SNAPSHOT,
  hmmDmirrorCmd,
  PAGE_SIZE,
} from "./dmirror-fake.js";
import {
  asInts,
  cpuInts,
  expectInts,
  fixture,
  initInts,
  ints,
  mmap,
  NPAGES,
  NTIMES,
  newBuffer,
  RW,
  SHARED,
  SIZE,
} from "./selftest-helpers.js";

describe("hmm-tests.c on a DEVICE_PRIVATE dmirror: migration", () => {
  it("migrate: every page moves to the device and reads back through the mirror", () => {
    const { p, fd } = fixture();
    const ptr = mmap(p, SIZE, RW);
    initInts(p, ptr, SIZE, (i) => i);
    const buf = newBuffer(ptr, SIZE);
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, NPAGES)).toBe(0);
    expect(buf.cpages).toBe(NPAGES);
    expectInts(asInts(buf.mirror), (i) => i, "mirror");
  });
  it("migrate_fault: after the CPU faults half back, migrating again counts every page (those still on the device too)", () => {
    const { p, fd } = fixture();
    const ptr = mmap(p, SIZE, RW);
    initInts(p, ptr, SIZE, (i) => i);
    const buf = newBuffer(ptr, SIZE);
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, NPAGES)).toBe(0);
    expect(buf.cpages).toBe(NPAGES);
    expectInts(asInts(buf.mirror), (i) => i, "mirror");
    expectInts(cpuInts(p, ptr, SIZE / 2), (i) => i, "first half");
    buf.mirror.fill(0);
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, NPAGES)).toBe(0);
    expect(buf.cpages).toBe(NPAGES);
    expectInts(asInts(buf.mirror), (i) => i, "mirror again");
  });
  it("migrate_release: after RELEASE evicts the device's memory the CPU reads its data", () => {
    const { p, fd, devices } = fixture();
    const ptr = mmap(p, SIZE, RW);
    initInts(p, ptr, SIZE, (i) => i);
    const buf = newBuffer(ptr, SIZE);
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, NPAGES)).toBe(0);
    expect(buf.cpages).toBe(NPAGES);
    expectInts(asInts(buf.mirror), (i) => i, "mirror");
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_RELEASE, buf, NPAGES)).toBe(0);
    expect(devices[0].memory.used).toBe(0);
    expectInts(cpuInts(p, ptr, SIZE / 2), (i) => i, "first half");
  });
  it("migrate_shared: MAP_SHARED memory is not migrated, so the read-back is -ENOENT", () => {
    const { p, fd } = fixture();
    const ptr = mmap(p, SIZE, RW, SHARED);
    const buf = newBuffer(ptr, SIZE);
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, NPAGES)).toBe(-ENOENT);
  });
  it("migrate_mixed: PROT_NONE and holes are -EINVAL, readable pages migrate, another device's page is -ENOENT", () => {
    const { p, open } = fixture();
    const fd0 = open(0);
    const fd1 = open(1);
    const npages = 6;
    const base = mmap(p, npages * PAGE_SIZE, PROT_NONE);
    const buf = newBuffer(base, npages * PAGE_SIZE);
    expect(hmmDmirrorCmd(fd1, HMM_DMIRROR_MIGRATE_TO_DEV, buf, npages)).toBe(-EINVAL);
    p.mm.munmap(base + PAGE_SIZE, PAGE_SIZE);
    expect(hmmDmirrorCmd(fd1, HMM_DMIRROR_MIGRATE_TO_DEV, buf, 3)).toBe(-EINVAL);
    p.mm.mprotect(base + 2 * PAGE_SIZE, PAGE_SIZE, PROT_READ);
    const val = cpuInts(p, base + 2 * PAGE_SIZE, 4)[0] + 3;
    expect(val).toBe(3);
    p.mm.mprotect(base + 3 * PAGE_SIZE, PAGE_SIZE, RW);
    p.write(
      base + 3 * PAGE_SIZE,
      ints(1, () => val),
    );
    p.mm.mprotect(base + 3 * PAGE_SIZE, PAGE_SIZE, PROT_READ);
    p.mm.mprotect(base + 4 * PAGE_SIZE, 2 * PAGE_SIZE, RW);
    p.write(
      base + 4 * PAGE_SIZE,
      ints(1, () => val),
    );
    p.write(
      base + 5 * PAGE_SIZE,
      ints(1, () => val),
    );
    buf.ptr = base + 2 * PAGE_SIZE;
    expect(hmmDmirrorCmd(fd1, HMM_DMIRROR_MIGRATE_TO_DEV, buf, 4)).toBe(0);
    expect(buf.cpages).toBe(4);
    buf.ptr = base + 5 * PAGE_SIZE;
    expect(hmmDmirrorCmd(fd0, HMM_DMIRROR_MIGRATE_TO_DEV, buf, 1)).toBe(-ENOENT);
  });
  it("migrate_multiple: ten rounds of migrating a fresh buffer and faulting it back keep the data", () => {
    const { p, fd } = fixture();
    for (let c = 0; c < NTIMES; c++) {
      const ptr = mmap(p, SIZE, RW);
      initInts(p, ptr, SIZE, (i) => i);
      const buf = newBuffer(ptr, SIZE);
      expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, NPAGES)).toBe(0);
      expect(buf.cpages).toBe(NPAGES);
      expectInts(asInts(buf.mirror), (i) => i, `round ${c} mirror`);
      expectInts(cpuInts(p, ptr, SIZE), (i) => i, `round ${c} ptr`);
      p.mm.munmap(ptr, SIZE);
    }
  });
  it("hmm_cow_in_device: the parent's write to device pages shared after fork leaves plain writable system pages", () => {
    const { p, fd } = fixture();
    const npages = 4;
    const size = npages * PAGE_SIZE;
    const ptr = mmap(p, size, RW);
    initInts(p, ptr, size, (i) => i);
    const buf = newBuffer(ptr, size);
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    const child = p.fork();
    initInts(p, ptr, size, (i) => i);
    child.exit(); // SIGKILL
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_SNAPSHOT, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    expect(Array.from(buf.mirror.subarray(0, npages))).toEqual(Array(npages).fill(HMM_DMIRROR_PROT_WRITE));
  });
});
