/**
 * What the ported tools/testing/selftests/mm/hmm-tests.c shares: the fixtures, the selftest's
 * constants, and its idioms (the `ptr[i] = i` fill loops, the mirror checks, ALIGN). Each test
 * keeps the kernel's name, steps and expected return codes and cpages / faults counters; device
 * units 0 and 1 are two devices (the hmm2 fixture), and a child process opens its own file, as
 * the selftest's child does with hmm_open(0). Tests that need files, hugetlbfs, GUP or a device
 * mmap (file_*, *_hugetlbfs, compound, mixedmap, hmm_gup_test) have no counterpart here.
 */
import { createHmm, type Device } from "@hmmkit/core";
import {
  HPAGE_PMD_SIZE,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  MAP_SHARED,
  PROT_READ,
  PROT_WRITE,
  type Process,
} from "@hmmkit/mm";
import { expect } from "vitest";
import { DmirrorFile, dmirrorFakePlugin, type HmmBuffer, PAGE_SIZE } from "./dmirror-fake.js";

export const MiB = 1024 * 1024;
/** HMM_BUFFER_SIZE: 4 MiB, 1024 pages. */
export const NPAGES = 1024;
export const SIZE = NPAGES * PAGE_SIZE;
export const NTIMES = 10;
export const PMD = HPAGE_PMD_SIZE;
export const RW = PROT_READ | PROT_WRITE;
export const PRIVATE = MAP_PRIVATE | MAP_ANONYMOUS;
export const SHARED = MAP_SHARED | MAP_ANONYMOUS;

/**
 * Two dmirror devices on one machine and a process: FIXTURE(hmm) and FIXTURE(hmm2). The devices
 * migrate whole THPs as the current dmirror does (MIGRATE_VMA_SELECT_COMPOUND) unless `compound`
 * is false (the base-page dmirror of kernels before the THP series).
 */
export function fixture(compound = true) {
  const sys = createHmm({ machine: { memoryBytes: 256 * MiB, zeroPage: true, thp: "madvise" } });
  const devices: Device[] = [0, 1].map((u) =>
    sys.core.addDevice(dmirrorFakePlugin, {
      name: `hmm_dmirror${u}`,
      memoryPages: 4096,
      compoundMigration: compound,
    }),
  );
  const p = sys.machine.createProcess();
  const open = (unit = 0, proc: Process = p) => new DmirrorFile(sys.core, devices[unit], proc);
  const fd = open(0);
  return { ...sys, devices, p, open, fd };
}

export function mmap(p: Process, length: number, prot: number, flags = PRIVATE): number {
  return p.mm.mmap({ length, prot, flags });
}

/** ALIGN(x, a). */
export function align(x: number, a: number): number {
  return Math.ceil(x / a) * a;
}

export function newBuffer(ptr: number, size: number): HmmBuffer {
  return { ptr, mirror: new Uint8Array(size), cpages: 0, faults: 0 };
}

/** `count` 32-bit ints f(i), as bytes (the selftest's `ptr[i] = ...` loops). */
export function ints(count: number, f: (i: number) => number): Uint8Array {
  const v = new Int32Array(count);
  for (let i = 0; i < count; i++) v[i] = f(i);
  return new Uint8Array(v.buffer);
}

/** The selftests' "init" loop: the CPU writes `ptr[i] = f(i)` over the ints of [ptr, ptr + size). */
export function initInts(p: Process, ptr: number, size: number, f: (i: number) => number): void {
  p.write(ptr, ints(size / 4, f));
}

/** The ints of a byte array. */
export function asInts(bytes: Uint8Array): Int32Array {
  return new Int32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
}

/** The CPU reads `size` bytes at `ptr` as ints. */
export function cpuInts(p: Process, ptr: number, size: number): Int32Array {
  return asInts(p.read(ptr, size));
}

/** Every int of `v` equals f(i) (reports the first mismatch). */
export function expectInts(v: Int32Array, f: (i: number) => number, what: string): void {
  for (let i = 0; i < v.length; i++) {
    if (v[i] !== f(i)) expect.fail(`${what}: int ${i} is ${v[i]}, expected ${f(i)}`);
  }
}

/** CPU `ptr[i]++` over the range, checking the old value is f(i). */
export function incrementInts(p: Process, ptr: number, size: number, f: (i: number) => number): void {
  const v = cpuInts(p, ptr, size);
  expectInts(v, f, "before ++");
  for (let i = 0; i < v.length; i++) v[i]++;
  p.write(ptr, new Uint8Array(v.buffer));
}
