/**
 * Helpers for the core's tests: building a system, mapping memory, reading CPU entries straight
 * from the page table, seeded random data, and the coherence check every race test ends with.
 */
import {
  ENTRY_DEVICE_EXCLUSIVE,
  ENTRY_DEVICE_PRIVATE,
  ENTRY_KIND_MASK,
  ENTRY_NONE,
  ENTRY_PRESENT,
  ENTRY_PROTNONE,
  ENTRY_WRITE,
  entryOwner,
  HPAGE_PMD_SIZE,
  MADV_HUGEPAGE,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  MAP_SHARED,
  type MachineConfig,
  type Mm,
  type MmError,
  PROT_READ,
  PROT_WRITE,
  type Process,
} from "@hmmkit/mm";
import { expect } from "vitest";
import {
  type CreateHmmOptions,
  createHmm,
  type Device,
  type HmmCore,
  HmmError,
  type HmmSystem,
} from "../src/index.js";
import { fakePlugin, type MirrorCall, type MirrorFakeBase, PAGE, RecordingFakeDriver } from "./fakes.js";

export const MiB = 1024 * 1024;
export const RW = PROT_READ | PROT_WRITE;
export const PRIVATE = MAP_PRIVATE | MAP_ANONYMOUS;
export const SHARED = MAP_SHARED | MAP_ANONYMOUS;

/** A machine (64 MiB, bytes content, zero page on unless told) with an HMM core. */
export function makeSystem(
  machine: Partial<MachineConfig> = {},
  options: Omit<CreateHmmOptions, "machine"> = {},
): HmmSystem {
  return createHmm({ ...options, machine: { memoryBytes: 64 * MiB, zeroPage: true, ...machine } });
}

/** Add a device driven by a fake class; returns the device and its driver instance. */
export function addFake<T extends MirrorFakeBase>(
  core: HmmCore,
  name: string,
  driver: new (...args: never[]) => T = RecordingFakeDriver as never,
  config: Record<string, unknown> = {},
  pluginName = "recording-fake",
): { dev: Device; drv: T } {
  const dev = core.addDevice(fakePlugin(driver, pluginName), { name, memoryPages: 256, ...config });
  return { dev, drv: dev.driver as T };
}

/** A private anonymous mapping. */
export function mmapPrivate(p: Process, length: number, prot = RW): number {
  return p.mm.mmap({ length, prot, flags: PRIVATE });
}

/** A 2 MiB-aligned MADV_HUGEPAGE window of `pmds` PMDs inside a private RW mapping. */
export function mmapHuge(p: Process, pmds = 1): number {
  const len = pmds * HPAGE_PMD_SIZE;
  const raw = p.mm.mmap({ length: len + HPAGE_PMD_SIZE, prot: RW, flags: PRIVATE });
  const base = raw - (raw % HPAGE_PMD_SIZE) + (raw % HPAGE_PMD_SIZE === 0 ? 0 : HPAGE_PMD_SIZE);
  p.mm.madvise(base, len, MADV_HUGEPAGE);
  return base;
}

/** mulberry32 bytes from a fixed seed. */
export function randomBytes(n: number, seed: number): Uint8Array {
  let a = seed >>> 0;
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    out[i] = (t ^ (t >>> 14)) & 0xff;
  }
  return out;
}

/** The CPU entry mapping `va` as the page table holds it (a huge PMD gives the subpage's frame). */
export interface CpuEntry {
  kind: number;
  pfn: number;
  flags: number;
  huge: boolean;
}

/** Read the entry for `va` straight from the page table; null if nothing is mapped there. */
export function cpuEntry(mm: Mm, va: number): CpuEntry | null {
  const pt = mm.pt;
  const slot = pt.pmdSlot(va);
  if (slot < 0) return null;
  const leaf = pt.leafAt(slot);
  if (leaf < 0) {
    const f = pt.pmdFlags[slot];
    if ((f & ENTRY_KIND_MASK) === ENTRY_NONE) return null;
    const idx = Math.floor(va / PAGE) & 511;
    return { kind: f & ENTRY_KIND_MASK, pfn: pt.pmdPfn[slot] + idx, flags: f, huge: true };
  }
  const pos = leaf * 512 + (Math.floor(va / PAGE) & 511);
  const f = pt.pteFlags[pos];
  if ((f & ENTRY_KIND_MASK) === ENTRY_NONE) return null;
  return { kind: f & ENTRY_KIND_MASK, pfn: pt.ptePfn[pos], flags: f, huge: false };
}

/**
 * The invariant of the whole design: every translation the driver reports matches the CPU page
 * table now. Same frame; never writable where the CPU entry is not; device-private only for a
 * device-private entry of this device; a system frame only for a present (or this device's
 * exclusive) entry. Returns how many pages were checked.
 */
export function expectCoherent(core: HmmCore, dev: Device): number {
  const mms = new Map<number, Mm>();
  for (const mm of core.machine.mms) mms.set(mm.id, mm);
  const problems: string[] = [];
  let checked = 0;
  for (const t of core.translations(dev)) {
    const mm = mms.get(t.mmId);
    if (mm === undefined) {
      problems.push(`translation for mm ${t.mmId}, which has exited`);
      continue;
    }
    for (let i = 0; i < 2 ** t.order; i++) {
      const va = t.va + i * PAGE;
      const e = cpuEntry(mm, va);
      const bad = (why: string) => problems.push(`${dev.name}: mm ${t.mmId} va 0x${va.toString(16)}: ${why}`);
      checked++;
      if (e === null) {
        bad("the CPU entry is none");
        continue;
      }
      if (e.pfn !== t.pfn + i) bad(`frame ${t.pfn + i} but the CPU maps ${e.pfn}`);
      if (t.devicePrivate) {
        if (e.kind !== ENTRY_DEVICE_PRIVATE)
          bad(`device-private translation on a CPU entry of kind ${e.kind}`);
        else if (entryOwner(e.flags) !== dev.ownerId)
          bad(`device-private page of owner ${entryOwner(e.flags)}`);
      } else if (e.kind === ENTRY_DEVICE_EXCLUSIVE) {
        if (entryOwner(e.flags) !== dev.ownerId) bad(`exclusive to owner ${entryOwner(e.flags)}`);
      } else if (e.kind !== ENTRY_PRESENT) bad(`system translation on a CPU entry of kind ${e.kind}`);
      else if (e.flags & ENTRY_PROTNONE) bad("PROT_NONE entry mirrored");
      if (t.writable && !(e.flags & ENTRY_WRITE)) bad("writable on the device but not on the CPU");
    }
  }
  expect(problems.slice(0, 10)).toEqual([]);
  return checked;
}

/** After every process exited: no frame and no device frame is left in use. */
export function expectNoLeaks(sys: HmmSystem, devices: Device[]): void {
  expect(sys.machine.usedFrames).toBe(0);
  for (const d of devices) expect(d.memory.used, `${d.name} memory`).toBe(0);
}

/** The error `fn` throws (fails the test if it does not throw). */
export function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error("expected the call to throw");
}

/** `fn` throws an HmmError (or `cls`) with errno `errno`; returns it. */
export function expectErrno<E extends MmError = HmmError>(
  fn: () => unknown,
  errno: string,
  cls: abstract new (...args: never[]) => E = HmmError as never,
): E {
  const e = thrown(fn);
  expect(e).toBeInstanceOf(cls);
  expect((e as MmError).errno).toBe(errno);
  return e as E;
}

/** One page as a mirror callback reported it. */
export interface ReportedPage {
  cb: MirrorCall["cb"];
  va: number;
  pfn: number;
  flags: number;
}

/** Every page the recorded mirror calls reported, in call order (a PMD or an array expanded). */
export function reportedPages(calls: readonly MirrorCall[]): ReportedPage[] {
  const out: ReportedPage[] = [];
  for (const c of calls) {
    if (c.cb === "mirrorPte") out.push({ cb: c.cb, va: c.va, pfn: c.pfn, flags: c.flags });
    else if (c.cb === "mirrorPmd")
      for (let i = 0; i < 512; i++)
        out.push({ cb: c.cb, va: c.va + i * PAGE, pfn: c.pfn + i, flags: c.flags });
    else
      for (let i = 0; i < c.count; i++)
        out.push({ cb: c.cb, va: c.va + i * PAGE, pfn: c.pfns[i], flags: c.flagList[i] });
  }
  return out;
}

/** `actual` holds exactly the bytes of `expected` (fast; vitest's deep equality is slow on big arrays). */
export function expectBytes(actual: Uint8Array, expected: Uint8Array, what = "bytes"): void {
  expect(actual.length, `${what}: length`).toBe(expected.length);
  if (Buffer.compare(actual, expected) === 0) return;
  let i = 0;
  while (actual[i] === expected[i]) i++;
  expect.fail(
    `${what}: first difference at byte ${i} (page ${Math.floor(i / PAGE)}): ${actual[i]} != ${expected[i]}`,
  );
}

/** Every byte of `actual` is zero. */
export function expectZeros(actual: Uint8Array, what = "bytes"): void {
  expectBytes(actual, new Uint8Array(actual.length), what);
}
