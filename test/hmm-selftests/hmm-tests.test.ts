/**
 * tools/testing/selftests/mm/hmm-tests.c, ported: the tests that apply to anonymous memory and a
 * DEVICE_PRIVATE dmirror, each with the kernel's expected return codes and cpages / faults
 * counters. Device units 0 and 1 are two devices (the hmm2 fixture); a child process opens its
 * own file, as the selftest's child does with hmm_open(0).
 */
import {
  cpuOpSteps,
  createHmm,
  type Device,
  HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL,
  Scheduler,
} from "@hmmkit/core";
import {
  HPAGE_PMD_SIZE,
  MADV_HUGEPAGE,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  MAP_SHARED,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  type Process,
} from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import {
  DmirrorFile,
  dmirrorFakePlugin,
  EFAULT,
  EINVAL,
  ENOENT,
  EPERM,
  HMM_DMIRROR_CHECK_EXCLUSIVE,
  HMM_DMIRROR_EXCLUSIVE,
  HMM_DMIRROR_FLAG_FAIL_ALLOC,
  HMM_DMIRROR_FLAGS,
  HMM_DMIRROR_MIGRATE_TO_DEV,
  HMM_DMIRROR_MIGRATE_TO_SYS,
  HMM_DMIRROR_READ,
  HMM_DMIRROR_RELEASE,
  HMM_DMIRROR_SNAPSHOT,
  HMM_DMIRROR_WRITE,
  type HmmBuffer,
  hmmDmirrorCmd,
  PAGE_SIZE,
} from "./dmirror-fake.js";

const MiB = 1024 * 1024;
/** HMM_BUFFER_SIZE: 4 MiB, 1024 pages. */
const NPAGES = 1024;
const SIZE = NPAGES * PAGE_SIZE;
const NTIMES = 10;
const PMD = HPAGE_PMD_SIZE;
const RW = PROT_READ | PROT_WRITE;
const PRIVATE = MAP_PRIVATE | MAP_ANONYMOUS;
const SHARED = MAP_SHARED | MAP_ANONYMOUS;

const HMM_DMIRROR_PROT_ERROR = 0xff;
const HMM_DMIRROR_PROT_NONE = 0x00;
const HMM_DMIRROR_PROT_READ = 0x01;
const HMM_DMIRROR_PROT_WRITE = 0x02;
const HMM_DMIRROR_PROT_ZERO = 0x10;

/** Two dmirror devices on one machine and a process: FIXTURE(hmm) and FIXTURE(hmm2). */
function fixture() {
  const sys = createHmm({ machine: { memoryBytes: 256 * MiB, zeroPage: true, thp: "madvise" } });
  const devices: Device[] = [0, 1].map((u) =>
    sys.core.addDevice(dmirrorFakePlugin, { name: `hmm_dmirror${u}`, memoryPages: 4096 }),
  );
  const p = sys.machine.createProcess();
  const open = (unit = 0, proc: Process = p) => new DmirrorFile(sys.core, devices[unit], proc);
  const fd = open(0);
  return { ...sys, devices, p, open, fd };
}

function mmap(p: Process, length: number, prot: number, flags = PRIVATE): number {
  return p.mm.mmap({ length, prot, flags });
}

/** ALIGN(x, a). */
function align(x: number, a: number): number {
  return Math.ceil(x / a) * a;
}

function newBuffer(ptr: number, size: number): HmmBuffer {
  return { ptr, mirror: new Uint8Array(size), cpages: 0, faults: 0 };
}

/** `count` 32-bit ints f(i), as bytes (the selftest's `ptr[i] = ...` loops). */
function ints(count: number, f: (i: number) => number): Uint8Array {
  const v = new Int32Array(count);
  for (let i = 0; i < count; i++) v[i] = f(i);
  return new Uint8Array(v.buffer);
}

/** The ints of a byte array. */
function asInts(bytes: Uint8Array): Int32Array {
  return new Int32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
}

/** The CPU reads `size` bytes at `ptr` as ints. */
function cpuInts(p: Process, ptr: number, size: number): Int32Array {
  return asInts(p.read(ptr, size));
}

/** Every int of `v` equals f(i) (reports the first mismatch). */
function expectInts(v: Int32Array, f: (i: number) => number, what: string): void {
  for (let i = 0; i < v.length; i++) {
    if (v[i] !== f(i)) expect.fail(`${what}: int ${i} is ${v[i]}, expected ${f(i)}`);
  }
}

/** CPU `ptr[i]++` over the range, checking the old value is f(i). */
function incrementInts(p: Process, ptr: number, size: number, f: (i: number) => number): void {
  const v = cpuInts(p, ptr, size);
  expectInts(v, f, "before ++");
  for (let i = 0; i < v.length; i++) v[i]++;
  p.write(ptr, new Uint8Array(v.buffer));
}

describe("hmm-tests.c on a DEVICE_PRIVATE dmirror", () => {
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
    p.write(
      ptr,
      ints(SIZE / 4, (i) => i),
    );
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
        p.write(
          ptr,
          ints(size / 4, (i) => i),
        );
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
    p.write(
      ptr,
      ints(SIZE / 4, (i) => i),
    );
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

  it("migrate: every page moves to the device and reads back through the mirror", () => {
    const { p, fd } = fixture();
    const ptr = mmap(p, SIZE, RW);
    p.write(
      ptr,
      ints(SIZE / 4, (i) => i),
    );
    const buf = newBuffer(ptr, SIZE);
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, NPAGES)).toBe(0);
    expect(buf.cpages).toBe(NPAGES);
    expectInts(asInts(buf.mirror), (i) => i, "mirror");
  });

  it("migrate_fault: after the CPU faults half back, migrating again counts every page (those still on the device too)", () => {
    const { p, fd } = fixture();
    const ptr = mmap(p, SIZE, RW);
    p.write(
      ptr,
      ints(SIZE / 4, (i) => i),
    );
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
    p.write(
      ptr,
      ints(SIZE / 4, (i) => i),
    );
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
      p.write(
        ptr,
        ints(SIZE / 4, (i) => i),
      );
      const buf = newBuffer(ptr, SIZE);
      expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, NPAGES)).toBe(0);
      expect(buf.cpages).toBe(NPAGES);
      expectInts(asInts(buf.mirror), (i) => i, `round ${c} mirror`);
      expectInts(cpuInts(p, ptr, SIZE), (i) => i, `round ${c} ptr`);
      p.mm.munmap(ptr, SIZE);
    }
  });

  it("anon_read_multiple: ten fresh buffers each read in one fault round", () => {
    const { p, fd } = fixture();
    for (let c = 0; c < NTIMES; c++) {
      const ptr = mmap(p, SIZE, RW);
      p.write(
        ptr,
        ints(SIZE / 4, (i) => i + c),
      );
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
      p.write(
        ptr,
        ints(SIZE / 4, (i) => i + c),
      );
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
    p.write(
      ptr,
      ints(size / 4, (i) => i),
    );
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

  it("exclusive: the device gets exclusive access; CPU increments revoke it and CHECK_EXCLUSIVE finds no atomic entry", () => {
    const { p, fd } = fixture();
    const ptr = mmap(p, SIZE, RW);
    p.write(
      ptr,
      ints(SIZE / 4, (i) => i),
    );
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
    p.write(
      ptr,
      ints(SIZE / 4, (i) => i),
    );
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
    p.write(
      ptr,
      ints(SIZE / 4, (i) => i),
    );
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

  it("hmm_cow_in_device: the parent's write to device pages shared after fork leaves plain writable system pages", () => {
    const { p, fd } = fixture();
    const npages = 4;
    const size = npages * PAGE_SIZE;
    const ptr = mmap(p, size, RW);
    p.write(
      ptr,
      ints(size / 4, (i) => i),
    );
    const buf = newBuffer(ptr, size);
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    const child = p.fork();
    p.write(
      ptr,
      ints(size / 4, (i) => i),
    );
    child.exit(); // SIGKILL
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_SNAPSHOT, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    expect(Array.from(buf.mirror.subarray(0, npages))).toEqual(Array(npages).fill(HMM_DMIRROR_PROT_WRITE));
  });

  it("migrate_anon_huge_empty: an untouched read-only THP window migrates as zero-filled device pages", () => {
    const { p, fd } = fixture();
    const raw = mmap(p, 2 * PMD, PROT_READ);
    const ptr = align(raw, PMD);
    p.mm.madvise(ptr, PMD, MADV_HUGEPAGE);
    const npages = PMD / PAGE_SIZE;
    const buf = newBuffer(ptr, PMD);
    buf.mirror.fill(0xff);
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    expectInts(asInts(buf.mirror), () => 0, "mirror");
  });

  it("migrate_anon_huge_zero: a huge zero page migrates as zero-filled device pages and faults back as zeros", () => {
    const { p, fd } = fixture();
    const raw = mmap(p, 2 * PMD, PROT_READ);
    const ptr = align(raw, PMD);
    p.mm.madvise(ptr, PMD, MADV_HUGEPAGE);
    const npages = PMD / PAGE_SIZE;
    const buf = newBuffer(ptr, PMD);
    buf.mirror.fill(0xff);
    expect(cpuInts(p, ptr, 4)[0]).toBe(0);
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    expectInts(asInts(buf.mirror), () => 0, "mirror");
    expectInts(cpuInts(p, ptr, PMD), () => 0, "ptr");
  });

  it("migrate_anon_huge_err (what holds with or without compound migration): FAIL_ALLOC loses no data and clears itself", () => {
    const { p, fd, devices } = fixture();
    const raw = mmap(p, 2 * PMD, RW);
    const ptr = align(raw, PMD);
    p.mm.madvise(ptr, PMD, MADV_HUGEPAGE);
    const npages = PMD / PAGE_SIZE;
    p.write(
      ptr,
      ints(PMD / 4, (i) => i),
    );
    const buf = newBuffer(ptr, PMD);
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_FLAGS, buf, HMM_DMIRROR_FLAG_FAIL_ALLOC)).toBe(0);
    const rc = hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, npages);
    // With base-page migration the failed page stays behind (the read-back is -ENOENT); with
    // compound migration the failed huge allocation falls back to base pages (0).
    expect([0, -ENOENT]).toContain(rc);
    expect(cpuInts(p, ptr + 2048 * 4, 4)[0]).toBe(2048);
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, npages)).toBe(0);
    expect(buf.cpages).toBe(npages);
    expectInts(asInts(buf.mirror), (i) => i, "mirror");
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_FLAGS, buf, HMM_DMIRROR_FLAG_FAIL_ALLOC)).toBe(0);
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_SYS, buf, npages)).toBe(0);
    expect(cpuInts(p, ptr + 2048 * 4, 4)[0]).toBe(2048);
    expectInts(cpuInts(p, ptr, PMD), (i) => i, "ptr");
    expect(devices[0].memory.used).toBe(0);
  });

  it("beyond the selftest: a device write to its own pages shared after fork is -EFAULT (dmirror_do_fault) and they stay on the device", () => {
    const { p, fd, devices } = fixture();
    const npages = 8;
    const size = npages * PAGE_SIZE;
    const ptr = mmap(p, size, RW);
    p.write(
      ptr,
      ints(size / 4, (i) => i),
    );
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
    p.write(
      ptr,
      ints(SIZE / 4, (i) => i),
    );
    const buf = newBuffer(ptr, SIZE);
    expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, NPAGES)).toBe(0);
    fd.close();
    expect(fd.drv.pt.has(p.mm.id)).toBe(false);
    expect(devices[0].memory.used).toBe(NPAGES);
    expectInts(cpuInts(p, ptr, SIZE), (i) => i, "ptr");
    expect(devices[0].memory.used).toBe(0);
  });
});
