/**
 * hmm-tests.c, ported: device reads and writes through the mirror's fault loop (anon_*), snapshots,
 * two devices on the same pages, and what closing the file does.
 */
import {
  cpuOpSteps,
  HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL,
  HMM_DMIRROR_PROT_ERROR,
  HMM_DMIRROR_PROT_NONE,
  HMM_DMIRROR_PROT_READ,
  HMM_DMIRROR_PROT_WRITE,
  HMM_DMIRROR_PROT_ZERO,
  Scheduler,
} from "@hmmkit/core";
import { MADV_HUGEPAGE, PROT_NONE, PROT_READ } from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import {
  EFAULT,
  EPERM,
  HMM_DMIRROR_MIGRATE_TO_DEV,
  HMM_DMIRROR_READ,
  HMM_DMIRROR_SNAPSHOT,
  HMM_DMIRROR_WRITE,
  hmmDmirrorCmd,
  PAGE_SIZE,
} from "./dmirror-fake.js";
import {
  align,
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
  PMD,
  RW,
  SHARED,
  SIZE,
} from "./selftest-helpers.js";

describe("hmm-tests.c on a DEVICE_PRIVATE dmirror: device access", () => {
  it("anon_read: the device reads a pte_none page and a zero page as zeros, in one fault round", () => {
    const { p, fd } = fixture();
    const ptr = mmap(p, SIZE, RW);
    const first = (2 * PAGE_SIZE) / 4;
    p.write(
      ptr + 2 * PAGE_SIZE,
      ints(SIZE / 4 - first, (i) => i + first),
    );
    p.mm.mprotect(ptr, SIZE, PROT_READ);
    expect(cpuInts(p, ptr + PAGE_SIZE, 4)[0]).toBe(0);
    const buf = newBuffer(ptr, SIZE);
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_READ, buf, NPAGES)).toBe(0);
    expect(buf.cpages).toBe(NPAGES);
    expect(buf.faults).toBe(1);
    expectInts(asInts(buf.mirror), (i) => (i < first ? 0 : i), "mirror");
  });
  it("anon_read_prot: reading PROT_NONE memory is -EFAULT and copies nothing out", () => {
    const { p, fd } = fixture();
    const ptr = mmap(p, SIZE, RW);
    initInts(p, ptr, SIZE, (i) => i);
    const buf = newBuffer(ptr, SIZE);
    buf.mirror.set(ints(SIZE / 4, (i) => -i));
    p.mm.mprotect(ptr, SIZE, PROT_NONE);
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_READ, buf, NPAGES)).toBe(-EFAULT);
    p.mm.mprotect(ptr, SIZE, PROT_READ);
    expectInts(cpuInts(p, ptr, SIZE), (i) => i, "ptr");
    expectInts(asInts(buf.mirror), (i) => -i, "mirror");
  });
  it("anon_write: the device writes never-touched memory in one fault round", () => {
    const { p, fd } = fixture();
    const ptr = mmap(p, SIZE, RW);
    const buf = newBuffer(ptr, SIZE);
    buf.mirror.set(ints(SIZE / 4, (i) => i));
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_WRITE, buf, NPAGES)).toBe(0);
    expect(buf.cpages).toBe(NPAGES);
    expect(buf.faults).toBe(1);
    expectInts(cpuInts(p, ptr, SIZE), (i) => i, "ptr");
  });
  it("anon_write_prot: a write to a read-only mapping is -EPERM; after mprotect(RW) it replaces the zero page", () => {
    const { p, fd } = fixture();
    const ptr = mmap(p, SIZE, PROT_READ);
    const buf = newBuffer(ptr, SIZE);
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_READ, buf, 1)).toBe(0);
    expect(buf.cpages).toBe(1);
    expect(buf.faults).toBe(1);
    buf.mirror.set(ints(SIZE / 4, (i) => i));
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_WRITE, buf, NPAGES)).toBe(-EPERM);
    expectInts(cpuInts(p, ptr, SIZE), () => 0, "ptr");
    p.mm.mprotect(ptr, SIZE, RW);
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_WRITE, buf, NPAGES)).toBe(0);
    expect(buf.cpages).toBe(NPAGES);
    expect(buf.faults).toBe(1);
    expectInts(cpuInts(p, ptr, SIZE), (i) => i, "ptr");
  });
  for (const migrate of [false, true]) {
    for (const thp of [false, true]) {
      it(`anon_write_child (migrate=${+migrate}, thp=${+thp}): the child's device write is copy-on-write, the parent keeps its data`, () => {
        const { p, fd, open } = fixture();
        const size = thp ? PMD : SIZE;
        const npages = size / PAGE_SIZE;
        const raw = mmap(p, 2 * size, RW);
        let ptr = raw;
        if (thp) {
          ptr = align(raw, size);
          p.mm.madvise(ptr, size, MADV_HUGEPAGE);
        }
        initInts(p, ptr, size, (i) => i);
        const buf = newBuffer(ptr, size);
        buf.mirror.set(ints(size / 4, (i) => -i));
        if (migrate) {
          expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, npages)).toBe(0);
          expect(buf.cpages).toBe(npages);
        }
        const child = p.fork();
        // The child sees the parent's values and opens its own mirror of its own mm.
        expectInts(cpuInts(child, ptr, size), (i) => i, "child ptr");
        if (!migrate) expectInts(asInts(buf.mirror), (i) => -i, "mirror");
        const childFd = open(0, child);
        expect(hmmDmirrorCmd(childFd, HMM_DMIRROR_WRITE, buf, npages)).toBe(0);
        expect(buf.cpages).toBe(npages);
        expect(buf.faults).toBe(1);
        if (!migrate) expectInts(cpuInts(child, ptr, size), (i) => -i, "child ptr after");
        childFd.close();
        child.exit();
        expectInts(cpuInts(p, ptr, size), (i) => i, "parent ptr");
      });
    }
  }
  it("anon_write_child_shared: the child's device write to MAP_SHARED memory is seen by the parent", () => {
    const { p, open } = fixture();
    const ptr = mmap(p, SIZE, RW, SHARED);
    initInts(p, ptr, SIZE, (i) => i);
    const buf = newBuffer(ptr, SIZE);
    buf.mirror.set(ints(SIZE / 4, (i) => -i));
    const child = p.fork();
    expectInts(cpuInts(child, ptr, SIZE), (i) => i, "child ptr");
    const childFd = open(0, child);
    expect(hmmDmirrorCmd(childFd, HMM_DMIRROR_WRITE, buf, NPAGES)).toBe(0);
    expect(buf.cpages).toBe(NPAGES);
    expect(buf.faults).toBe(1);
    expectInts(cpuInts(child, ptr, SIZE), (i) => -i, "child ptr after");
    childFd.close();
    child.exit();
    expectInts(cpuInts(p, ptr, SIZE), (i) => -i, "parent ptr");
  });
  it("anon_write_huge: the device writes a whole THP in one fault round", () => {
    const { p, fd } = fixture();
    const raw = mmap(p, 2 * PMD, RW);
    const ptr = align(raw, PMD);
    p.mm.madvise(ptr, PMD, MADV_HUGEPAGE);
    const npages = PMD / PAGE_SIZE;
    const buf = newBuffer(ptr, PMD);
    buf.mirror.set(ints(PMD / 4, (i) => i));
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_WRITE, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    expect(buf.faults).toBe(1);
    expectInts(cpuInts(p, ptr, PMD), (i) => i, "ptr");
  });
  it("anon_read_multiple: ten fresh buffers each read in one fault round", () => {
    const { p, fd } = fixture();
    for (let c = 0; c < NTIMES; c++) {
      const ptr = mmap(p, SIZE, RW);
      initInts(p, ptr, SIZE, (i) => i + c);
      const buf = newBuffer(ptr, SIZE);
      expect(hmmDmirrorCmd(fd, HMM_DMIRROR_READ, buf, NPAGES)).toBe(0);
      expect(buf.cpages).toBe(NPAGES);
      expect(buf.faults).toBe(1);
      expectInts(asInts(buf.mirror), (i) => i + c, `round ${c} mirror`);
      p.mm.munmap(ptr, SIZE);
    }
  });
  it("anon_teardown: a device read racing an munmap of the second half succeeds with the kernel's counters or fails cleanly (seeds 1-10)", () => {
    const { p, fd } = fixture();
    const outcomes: number[] = [];
    for (let c = 0; c < NTIMES; c++) {
      const ptr = mmap(p, SIZE, RW);
      initInts(p, ptr, SIZE, (i) => i + c);
      const buf = newBuffer(ptr, SIZE);
      const sched = new Scheduler(c + 1);
      const delay = (c * 7) % 6; // hmm_nanosleep(hmm_random() % 32000), in preemption points
      sched.spawn("read", fd.accessSteps(false, buf, NPAGES));
      sched.spawn(
        "unmap",
        (function* () {
          for (let i = 0; i < delay; i++) yield "unmap:sleep";
          return yield* cpuOpSteps("munmap", () => p.mm.munmap(ptr + SIZE / 2, SIZE / 2), {
            mm: p.mm,
            mode: "write",
          });
        })(),
      );
      sched.run();
      sched.result("unmap");
      const rc = sched.result<number>("read");
      outcomes.push(rc);
      if (rc === 0) {
        expect(buf.cpages).toBe(NPAGES);
        expect(buf.faults).toBe(1);
        expectInts(asInts(buf.mirror), (i) => i + c, `round ${c} mirror`);
      } else expect(rc).toBe(-EFAULT);
      // Nothing the device still mirrors points at the unmapped half.
      for (let a = ptr + SIZE / 2; a < ptr + SIZE; a += PAGE_SIZE)
        expect(fd.drv.entry(p.mm.id, a / PAGE_SIZE)).toBeUndefined();
      p.mm.munmap(ptr, SIZE / 2);
    }
    // The seeds cover both sides of the race.
    expect(outcomes).toContain(0);
    expect(outcomes).toContain(-EFAULT);
  });
  it("snapshot: ERROR for no-read and holes, ZERO|READ, READ, WRITE, DEV_PRIVATE_LOCAL|WRITE, and NONE for the other device's page", () => {
    const { p, open } = fixture();
    const fd0 = open(0);
    const fd1 = open(1);
    const npages = 7;
    const base = mmap(p, npages * PAGE_SIZE, PROT_NONE);
    p.mm.munmap(base + PAGE_SIZE, PAGE_SIZE);
    p.mm.mprotect(base + 2 * PAGE_SIZE, PAGE_SIZE, PROT_READ);
    const val = cpuInts(p, base + 2 * PAGE_SIZE, 4)[0] + 3;
    expect(val).toBe(3);
    p.mm.mprotect(base + 3 * PAGE_SIZE, PAGE_SIZE, RW);
    p.write(
      base + 3 * PAGE_SIZE,
      ints(1, () => val),
    );
    p.mm.mprotect(base + 3 * PAGE_SIZE, PAGE_SIZE, PROT_READ);
    p.mm.mprotect(base + 4 * PAGE_SIZE, 3 * PAGE_SIZE, RW);
    p.write(
      base + 4 * PAGE_SIZE,
      ints(1, () => val),
    );
    const buf = newBuffer(base + 5 * PAGE_SIZE, npages * PAGE_SIZE);
    expect(hmmDmirrorCmd(fd0, HMM_DMIRROR_MIGRATE_TO_DEV, buf, 1)).toBe(0);
    expect(buf.cpages).toBe(1);
    buf.ptr = base + 6 * PAGE_SIZE;
    expect(hmmDmirrorCmd(fd1, HMM_DMIRROR_MIGRATE_TO_DEV, buf, 1)).toBe(0);
    expect(buf.cpages).toBe(1);
    buf.ptr = base;
    expect(hmmDmirrorCmd(fd0, HMM_DMIRROR_SNAPSHOT, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    expect(Array.from(buf.mirror.subarray(0, npages))).toEqual([
      HMM_DMIRROR_PROT_ERROR,
      HMM_DMIRROR_PROT_ERROR,
      HMM_DMIRROR_PROT_ZERO | HMM_DMIRROR_PROT_READ,
      HMM_DMIRROR_PROT_READ,
      HMM_DMIRROR_PROT_WRITE,
      HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE,
      HMM_DMIRROR_PROT_NONE,
    ]);
  });
  it("double_map: two devices read the same read-only pages; after device 1 migrates them, device 0 reads them in one fault round", () => {
    const { p, open } = fixture();
    const fd0 = open(0);
    const fd1 = open(1);
    const npages = 6;
    const size = npages * PAGE_SIZE;
    const ptr = mmap(p, size, RW);
    initInts(p, ptr, size, (i) => i);
    p.mm.mprotect(ptr, size, PROT_READ);
    const buf = newBuffer(ptr, size);
    for (const fd of [fd0, fd1]) {
      expect(hmmDmirrorCmd(fd, HMM_DMIRROR_READ, buf, npages)).toBe(0);
      expect(buf.cpages).toBe(npages);
      expect(buf.faults).toBe(1);
      expectInts(asInts(buf.mirror), (i) => i, "mirror");
    }
    expect(hmmDmirrorCmd(fd1, HMM_DMIRROR_MIGRATE_TO_DEV, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    buf.mirror.fill(0);
    expect(hmmDmirrorCmd(fd0, HMM_DMIRROR_READ, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    expect(buf.faults).toBe(1);
    expectInts(asInts(buf.mirror), (i) => i, "mirror after migrate");
  });
  it("beyond the selftest: a device write to its own pages shared after fork is -EFAULT (dmirror_do_fault) and they stay on the device", () => {
    const { p, fd, devices } = fixture();
    const npages = 8;
    const size = npages * PAGE_SIZE;
    const ptr = mmap(p, size, RW);
    initInts(p, ptr, size, (i) => i);
    const buf = newBuffer(ptr, size);
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, npages)).toBe(0);
    const child = p.fork();
    buf.mirror.set(ints(size / 4, (i) => -i));
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_WRITE, buf, npages)).toBe(-EFAULT);
    expect(devices[0].memory.used).toBe(npages);
    // A read is fine: the pages are reported readable, still on the device.
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_READ, buf, npages)).toBe(0);
    expect(buf.faults).toBe(0);
    expectInts(asInts(buf.mirror), (i) => i, "mirror");
    expectInts(cpuInts(child, ptr, size), (i) => i, "child");
    child.exit();
  });
  it("closing the file unbinds the mirror: the device's pages stay and still fault home with their data", () => {
    const { p, fd, devices } = fixture();
    const ptr = mmap(p, SIZE, RW);
    initInts(p, ptr, SIZE, (i) => i);
    const buf = newBuffer(ptr, SIZE);
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, NPAGES)).toBe(0);
    fd.close();
    expect(fd.drv.pt.has(p.mm.id)).toBe(false);
    expect(devices[0].memory.used).toBe(NPAGES);
    expectInts(cpuInts(p, ptr, SIZE), (i) => i, "ptr");
    expect(devices[0].memory.used).toBe(0);
  });
});
