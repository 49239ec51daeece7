/**
 * The shadow model of the mm property tests: random operation sequences (opArb), a runner that
 * applies each to a machine and to a model of what every page should hold (Run), and the checks
 * after every step (data, protections, COW isolation, frame accounting, invalidation before every
 * change). The model test and the fuzz campaigns share it.
 */
import fc from "fast-check";
import { expect } from "vitest";
import {
  type ContentMode,
  contentDigest,
  ENTRY_KIND_MASK,
  ENTRY_PRESENT,
  ENTRY_PROTNONE,
  ENTRY_WRITE,
  ENTRY_ZERO,
  FRAME_FREE,
  FRAME_RESERVED,
  FRAME_SHMEM,
  HPAGE_PMD_NR,
  MADV_DONTNEED,
  MADV_HUGEPAGE,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_PRIVATE,
  MAP_SHARED,
  Machine,
  MIGRATE_PFN_MIGRATE,
  MIGRATE_PFN_VALID,
  MIGRATE_VMA_SELECT_SYSTEM,
  MigrateVma,
  type Mm,
  MmError,
  type MmuIntervalNotifier,
  type MmuIntervalNotifierOps,
  type MmuNotifierRange,
  migrateVmaFinalize,
  migrateVmaPages,
  migrateVmaSetup,
  PageTableCursor,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  type Process,
  SEG_HUGE,
  SEG_TABLE,
  SegvError,
  type ShmemObject,
  stampToken,
  TASK_SIZE,
} from "../src/index.js";
import { expectNoFrameReferenced, PAGE, RW } from "./helpers.js";

// ---- the shadow model ------------------------------------------------------------------------
//
// Per process: every mapped page (by address) with its protection and where its data lives. A
// private page holds its own content value (copied at fork, so a later write on either side
// diverges, as COW must make it); a shared page refers to a page of a shared object (one per
// MAP_SHARED mmap, inherited by fork). Content is null (zeros), a stamp, or raw bytes.

type Content = null | number | Uint8Array;

interface SharedObj {
  sim: ShmemObject;
  pages: Map<number, Content>;
}

interface MPage {
  prot: number;
  obj: SharedObj | null;
  index: number;
  content: Content;
}

export interface MProc {
  proc: Process;
  pages: Map<number, MPage>;
  regions: { start: number; pages: number }[];
  mirror: ModelCheckingFakeNotifier;
}

/** Page-level view of a CPU entry: pfn * 8 + WRITE (1) + PROTNONE (2) + ZERO (4). */
type EntrySnapshot = Map<number, number>;

function snapshotEntries(mm: Mm): EntrySnapshot {
  const snap: EntrySnapshot = new Map();
  const pt = mm.pt;
  const cur = new PageTableCursor(pt);
  const enc = (pfn: number, f: number) =>
    pfn * 8 + (f & ENTRY_WRITE ? 1 : 0) + (f & ENTRY_PROTNONE ? 2 : 0) + (f & ENTRY_ZERO ? 4 : 0);
  // The whole page table, not VMA by VMA: munmap detaches the VMAs before it zaps.
  cur.reset(0, TASK_SIZE);
  while (cur.next()) {
    if (cur.kind === SEG_HUGE) {
      if ((cur.flags & ENTRY_KIND_MASK) !== ENTRY_PRESENT) continue;
      const zero = (cur.flags & ENTRY_ZERO) !== 0;
      for (let i = 0; i < cur.count; i++)
        snap.set(cur.addr + i * PAGE, enc(zero ? 0 : cur.pfn + cur.index + i, cur.flags));
    } else if (cur.kind === SEG_TABLE) {
      for (let i = 0; i < cur.count; i++) {
        const f = pt.pteFlags[cur.leafBase + cur.index + i];
        if ((f & ENTRY_KIND_MASK) !== ENTRY_PRESENT) continue;
        snap.set(cur.addr + i * PAGE, enc(pt.ptePfn[cur.leafBase + cur.index + i], f));
      }
    }
  }
  return snap;
}

/** The encoded entry mapping `va` now (as in {@link snapshotEntries}), or undefined. */
function entryAt(mm: Mm, va: number): number | undefined {
  const pt = mm.pt;
  const slot = pt.pmdSlot(va);
  if (slot < 0) return undefined;
  const leaf = pt.leafAt(slot);
  const idx = (va / PAGE) % 512;
  const f = leaf >= 0 ? pt.pteFlags[leaf * 512 + idx] : pt.pmdFlags[slot];
  if ((f & ENTRY_KIND_MASK) !== ENTRY_PRESENT) return undefined;
  let pfn = leaf >= 0 ? pt.ptePfn[leaf * 512 + idx] : pt.pmdPfn[slot] + idx;
  if (leaf < 0 && f & ENTRY_ZERO) pfn = 0;
  return pfn * 8 + (f & ENTRY_WRITE ? 1 : 0) + (f & ENTRY_PROTNONE ? 2 : 0) + (f & ENTRY_ZERO ? 4 : 0);
}

/** True if going from `before` to `after` (undefined: no entry) takes something away from a mirror. */
function needsInvalidation(before: number, after: number | undefined): boolean {
  if (after === undefined) return true;
  if (Math.floor(before / 8) !== Math.floor(after / 8)) return true;
  if (before & 1 && !(after & 1)) return true; // write permission removed
  return (after & 2) !== 0 && (before & 2) === 0; // became PROT_NONE
}

/**
 * A fake HMM mirror over the whole address space: it follows the notifier contract, records the
 * ranges invalidated during the current op, and checks that every entry of the range is still
 * what it was before the op when the callback runs (the callback comes before the change).
 */
class ModelCheckingFakeNotifier implements MmuIntervalNotifierOps {
  ranges: [number, number][] = [];
  before: EntrySnapshot = new Map();
  readonly sub: MmuIntervalNotifier;

  constructor(readonly mm: Mm) {
    this.sub = mm.notifiers.insert(0, TASK_SIZE, this);
  }

  invalidate(sub: MmuIntervalNotifier, range: MmuNotifierRange, curSeq: number): boolean {
    sub.setSeq(curSeq);
    this.ranges.push([range.start, range.end]);
    for (const [va, e] of this.before) {
      if (va < range.start || va >= range.end) continue;
      if (needsInvalidation(e, entryAt(this.mm, va))) {
        throw new Error(`page 0x${va.toString(16)} changed before the invalidation of its range`);
      }
    }
    return true;
  }

  covered(va: number): boolean {
    for (const [s, e] of this.ranges) if (s <= va && va < e) return true;
    return false;
  }
}

const STAMP_STEP = 0x9e3779b9 | 0;
const stampCache = new Map<number, Uint8Array>();

/** The bytes of a page stamped with `s`: 32-bit words s, s + STEP, s + 2 STEP, ... */
function stampBytes(s: number): Uint8Array {
  let b = stampCache.get(s);
  if (b === undefined) {
    const w = new Int32Array(PAGE / 4);
    let x = s | 0;
    for (let j = 0; j < w.length; j++) {
      w[j] = x;
      x = (x + STAMP_STEP) | 0;
    }
    b = new Uint8Array(w.buffer);
    stampCache.set(s, b);
  }
  return b;
}

const ZERO_BYTES = new Uint8Array(PAGE);

function bytesOf(c: Content): Uint8Array {
  if (c === null) return ZERO_BYTES;
  if (typeof c === "number") return stampBytes(c);
  return c;
}

function contentOf(p: MPage): Content {
  return p.obj ? (p.obj.pages.get(p.index) ?? null) : p.content;
}

function setContent(p: MPage, c: Content): void {
  if (p.obj) p.obj.pages.set(p.index, c);
  else p.content = c;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// ---- operations ------------------------------------------------------------------------------

export type Op =
  | { t: "mmap"; who: number; pages: number; shared: boolean; huge: boolean; prot: number }
  | { t: "mmapFixed"; who: number; region: number; off: number; pages: number; shared: boolean }
  | { t: "munmap"; who: number; region: number; off: number; len: number }
  | { t: "mprotect"; who: number; region: number; off: number; len: number; prot: number }
  | { t: "madvise"; who: number; region: number; off: number; len: number; advice: number }
  | { t: "fork"; who: number }
  | { t: "exit"; who: number; force?: boolean }
  | { t: "read"; who: number; region: number; off: number }
  | { t: "write"; who: number; region: number; off: number; len: number; stamp: number; same: boolean }
  | { t: "rawWrite"; who: number; region: number; off: number; byteOff: number; len: number; seed: number }
  | { t: "migrate"; who: number; region: number; off: number; len: number };

const who = fc.nat(2);
const region = fc.nat(15);
const off = fc.nat(4000);
const len = fc.nat(2000);

/**
 * One random operation. `rawWrites` adds unaligned byte writes (bytes mode only); `migrations`
 * adds migrate_vma of a range to fresh system frames (contents unchanged, holes populated).
 */
export const opArb = (rawWrites: boolean, migrations = false): fc.Arbitrary<Op> =>
  fc.oneof(
    {
      weight: 4,
      arbitrary: fc.record({
        t: fc.constant("mmap" as const),
        who,
        pages: fc.integer({ min: 1, max: 8 }),
        shared: fc.boolean(),
        huge: fc.constantFrom(false, false, false, true, true),
        prot: fc.constantFrom(RW, RW, RW, RW, PROT_READ, PROT_NONE),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        t: fc.constant("mmapFixed" as const),
        who,
        region,
        off,
        pages: fc.integer({ min: 1, max: 4 }),
        shared: fc.boolean(),
      }),
    },
    { weight: 1, arbitrary: fc.record({ t: fc.constant("munmap" as const), who, region, off, len }) },
    {
      weight: 2,
      arbitrary: fc.record({
        t: fc.constant("mprotect" as const),
        who,
        region,
        off,
        len,
        prot: fc.constantFrom(RW, RW, PROT_READ, PROT_NONE),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        t: fc.constant("madvise" as const),
        who,
        region,
        off,
        len,
        advice: fc.constantFrom(MADV_DONTNEED, MADV_DONTNEED, MADV_HUGEPAGE),
      }),
    },
    { weight: 3, arbitrary: fc.record({ t: fc.constant("fork" as const), who }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant("exit" as const), who }) },
    { weight: 5, arbitrary: fc.record({ t: fc.constant("read" as const), who, region, off }) },
    {
      weight: 8,
      arbitrary: fc.record({
        t: fc.constant("write" as const),
        who,
        region,
        off,
        len: fc.nat(4),
        stamp: fc.integer({ min: 1, max: 0x7fff_ffff }),
        same: fc.boolean(),
      }),
    },
    ...(rawWrites
      ? [
          {
            weight: 3,
            arbitrary: fc.record({
              t: fc.constant("rawWrite" as const),
              who,
              region,
              off,
              byteOff: fc.nat(PAGE - 1),
              len: fc.integer({ min: 1, max: 6000 }),
              seed: fc.nat(255),
            }),
          },
        ]
      : []),
    ...(migrations
      ? [{ weight: 3, arbitrary: fc.record({ t: fc.constant("migrate" as const), who, region, off, len }) }]
      : []),
  );

export interface Config {
  zeroPage: boolean;
  hugeZeroPage: boolean;
  faultAroundBytes: number;
}

export const configArb: fc.Arbitrary<Config> = fc.record({
  zeroPage: fc.boolean(),
  hugeZeroPage: fc.boolean(),
  faultAroundBytes: fc.constantFrom(4096, 65536),
});

// ---- the runner ------------------------------------------------------------------------------

export class Run {
  readonly machine: Machine;
  readonly procs: MProc[] = [];
  /** contentDigest of every live process after every op (for comparing content modes). */
  readonly digests: string[] = [];

  constructor(
    readonly mode: ContentMode,
    config: Config,
  ) {
    this.machine = new Machine({
      contentMode: mode,
      memoryBytes: 64 * 1024 * 1024,
      thp: "madvise",
      ...config,
    });
    const proc = this.machine.createProcess();
    this.procs.push({ proc, pages: new Map(), regions: [], mirror: this.mirror(proc) });
  }

  private mirror(proc: Process): ModelCheckingFakeNotifier {
    const m = new ModelCheckingFakeNotifier(proc.mm);
    // A callback that throws must fail the test, not be swallowed.
    proc.mm.notifiers.onCallbackError = (_sub, _range, err) => {
      throw err;
    };
    return m;
  }

  /** Run `op`, then check that every entry it took away was invalidated first, and the seq protocol. */
  stepWatched(op: Op): void {
    const all = [...this.procs];
    const seqs = all.map((mp) => mp.mirror.sub.readBegin());
    for (const mp of all) {
      mp.mirror.ranges = [];
      mp.mirror.before = snapshotEntries(mp.proc.mm);
    }
    this.step(op);
    for (let i = 0; i < all.length; i++) {
      const mp = all[i];
      const after = mp.proc.exited ? new Map<number, number>() : snapshotEntries(mp.proc.mm);
      for (const [va, e] of mp.mirror.before) {
        if (needsInvalidation(e, after.get(va)))
          check(mp.mirror.covered(va), va, `changed (op ${op.t}) without an invalidation of its range`);
      }
      if (!mp.proc.exited) expect(mp.mirror.sub.readRetry(seqs[i])).toBe(mp.mirror.ranges.length > 0);
    }
  }

  private pick(i: number): MProc {
    return this.procs[i % this.procs.length];
  }

  /**
   * The page range an op aims at. Mostly a few pages among the first six of a region, so that
   * ops of a sequence meet on the same pages even in 2 MiB regions; sometimes anywhere in it, one
   * page below it or just past its end. The length is a few pages, the rest of the region, or
   * anything up to one page past the region.
   */
  private target(mp: MProc, r: number, o: number, l: number): { va: number; n: number } | null {
    if (mp.regions.length === 0) return null;
    const reg = mp.regions[r % mp.regions.length];
    const sel = o % 20;
    const hot = Math.floor(o / 20);
    const first =
      sel === 0 ? -1 : sel === 1 ? reg.pages : sel < 5 ? hot % reg.pages : hot % Math.min(reg.pages, 6);
    const lsel = l % 4;
    const n =
      lsel === 0
        ? 1 + (Math.floor(l / 4) % (reg.pages + 1))
        : lsel === 1
          ? Math.max(1, reg.pages - first)
          : 1 + (Math.floor(l / 4) % 4);
    return { va: reg.start + first * PAGE, n };
  }

  step(op: Op): void {
    const mp = this.pick(op.who);
    const mm = mp.proc.mm;
    switch (op.t) {
      case "mmap": {
        const pages = op.huge ? HPAGE_PMD_NR : op.pages;
        const flags = (op.shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS;
        const a = mm.mmap({ length: pages * PAGE, prot: op.prot, flags });
        if (op.huge) mm.madvise(a, pages * PAGE, MADV_HUGEPAGE);
        this.mapModel(mp, a, pages, op.prot, op.shared);
        mp.regions.push({ start: a, pages });
        break;
      }
      case "mmapFixed": {
        const t = this.target(mp, op.region, op.off, 0);
        if (t === null) return;
        const flags = (op.shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS | MAP_FIXED;
        expect(mm.mmap({ addr: t.va, length: op.pages * PAGE, prot: RW, flags })).toBe(t.va);
        for (let i = 0; i < op.pages; i++) mp.pages.delete(t.va + i * PAGE);
        this.mapModel(mp, t.va, op.pages, RW, op.shared);
        mp.regions.push({ start: t.va, pages: op.pages });
        break;
      }
      case "munmap": {
        const t = this.target(mp, op.region, op.off, op.len);
        if (t === null) return;
        mm.munmap(t.va, t.n * PAGE); // holes are fine
        for (let i = 0; i < t.n; i++) mp.pages.delete(t.va + i * PAGE);
        break;
      }
      case "mprotect": {
        const t = this.target(mp, op.region, op.off, op.len);
        if (t === null) return;
        // Linux changes the mapped prefix and fails at the first hole.
        let hole = false;
        for (let i = 0; i < t.n && !hole; i++) {
          const pg = mp.pages.get(t.va + i * PAGE);
          if (pg === undefined) hole = true;
          else pg.prot = op.prot;
        }
        this.expectErrno(() => mm.mprotect(t.va, t.n * PAGE, op.prot), hole ? "ENOMEM" : null);
        break;
      }
      case "madvise": {
        const t = this.target(mp, op.region, op.off, op.len);
        if (t === null) return;
        // Every mapped page is advised; a hole anywhere makes the call fail afterwards.
        let hole = false;
        for (let i = 0; i < t.n; i++) {
          const pg = mp.pages.get(t.va + i * PAGE);
          if (pg === undefined) hole = true;
          else if (op.advice === MADV_DONTNEED && pg.obj === null) pg.content = null;
        }
        this.expectErrno(() => mm.madvise(t.va, t.n * PAGE, op.advice), hole ? "ENOMEM" : null);
        break;
      }
      case "fork": {
        if (this.procs.length >= 3) return;
        const child = mp.proc.fork();
        const pages = new Map<number, MPage>();
        for (const [va, pg] of mp.pages) pages.set(va, { ...pg });
        const regions = mp.regions.map((r) => ({ ...r }));
        this.procs.push({ proc: child, pages, regions, mirror: this.mirror(child) });
        break;
      }
      case "exit": {
        if (this.procs.length <= 1 && !op.force) return;
        mp.proc.exit();
        this.procs.splice(this.procs.indexOf(mp), 1);
        break;
      }
      case "read": {
        const t = this.target(mp, op.region, op.off, 0);
        if (t === null) return;
        const pg = mp.pages.get(t.va);
        if (pg === undefined || !(pg.prot & PROT_READ)) {
          expect(() => mp.proc.readPageHash(t.va)).toThrow(SegvError);
          return;
        }
        const want = contentOf(pg);
        if (this.mode === "bytes") expect(sameBytes(mp.proc.read(t.va, PAGE), bytesOf(want))).toBe(true);
        else expect(mp.proc.readPageHash(t.va)).toBe(want === null ? 0 : stampToken(want as number));
        break;
      }
      case "write": {
        const t = this.target(mp, op.region, op.off, op.len);
        if (t === null) return;
        const n = Math.min(t.n, 4);
        let failAt = -1;
        for (let i = 0; i < n && failAt < 0; i++) {
          const pg = mp.pages.get(t.va + i * PAGE);
          if (pg === undefined || !(pg.prot & PROT_WRITE)) failAt = i;
        }
        const done = failAt < 0 ? n : failAt;
        const call = () => {
          if (op.same) mp.proc.writeStamp(t.va, n * PAGE, op.stamp);
          else for (let i = 0; i < n; i++) mp.proc.writeStamp(t.va + i * PAGE, PAGE, op.stamp + i);
        };
        if (failAt >= 0) {
          const e = thrownBy(call);
          expect(e).toBeInstanceOf(SegvError);
          expect((e as SegvError).address).toBe(t.va + failAt * PAGE);
        } else call();
        for (let i = 0; i < done; i++) {
          setContent(mp.pages.get(t.va + i * PAGE)!, op.same ? op.stamp : op.stamp + i);
        }
        break;
      }
      case "migrate": {
        const t = this.target(mp, op.region, op.off, op.len);
        if (t === null) return;
        const vma = mm.findVma(t.va);
        if (vma === null) return;
        // migrate_vma works on one VMA; the data stays what it was, so the model does not change.
        migrateToSystemFrames(mm, t.va, Math.min(t.va + t.n * PAGE, vma.end));
        break;
      }
      case "rawWrite": {
        const t = this.target(mp, op.region, op.off, 0);
        if (t === null) return;
        const start = t.va + op.byteOff;
        const data = Uint8Array.from({ length: op.len }, (_, i) => (op.seed + i * 7 + 1) & 255);
        // The model applies page by page until the first page the write may not touch.
        let pos = 0;
        let failed = false;
        while (pos < data.length) {
          const a = start + pos;
          const pva = a - (a % PAGE);
          const k = Math.min(PAGE - (a % PAGE), data.length - pos);
          const pg = mp.pages.get(pva);
          if (pg === undefined || !(pg.prot & PROT_WRITE)) {
            failed = true;
            break;
          }
          const next = bytesOf(contentOf(pg)).slice();
          next.set(data.subarray(pos, pos + k), a % PAGE);
          setContent(pg, next);
          pos += k;
        }
        if (failed) expect(() => mp.proc.write(start, data)).toThrow(SegvError);
        else mp.proc.write(start, data);
        break;
      }
    }
  }

  private mapModel(mp: MProc, a: number, pages: number, prot: number, shared: boolean): void {
    const obj: SharedObj | null = shared ? { sim: mp.proc.mm.findVma(a)!.shmem!, pages: new Map() } : null;
    for (let i = 0; i < pages; i++) mp.pages.set(a + i * PAGE, { prot, obj, index: i, content: null });
  }

  private expectErrno(fn: () => void, errno: string | null): void {
    if (errno === null) {
      fn();
      return;
    }
    const e = thrownBy(fn);
    expect(e).toBeInstanceOf(MmError);
    expect((e as MmError).errno).toBe(errno);
  }

  /** Compare every process with the model without faulting anything in. */
  check(): void {
    for (const mp of this.procs) this.checkProcess(mp);
    this.checkCowIsolation();
    this.checkFrameAccounting();
    this.digests.push(this.procs.map((mp) => contentDigest(mp.proc.mm)).join(","));
  }

  private checkProcess(mp: MProc): void {
    const mm = mp.proc.mm;
    // The VMA index is consistent, and the VMAs cover exactly the model's pages, with the model's
    // protection and backing.
    mm.vmas.validate();
    let vmaPages = 0;
    for (const v of mm.vmas) {
      vmaPages += v.pages;
      for (let va = v.start; va < v.end; va += PAGE) {
        const pg = mp.pages.get(va);
        check(pg !== undefined, va, "is in a VMA but not in the model");
        check(v.prot === pg!.prot, va, `has prot ${v.prot}, the model says ${pg!.prot}`);
        if (pg!.obj)
          check(v.shmem === pg!.obj.sim && v.shmemIndex(va) === pg!.index, va, "maps the wrong shmem page");
        else check(!v.shared, va, "is shared, the model says private");
      }
    }
    expect(vmaPages).toBe(mp.pages.size);
    const content = this.machine.pool.content;
    const out = new Uint8Array(PAGE);
    for (const [va, pg] of mp.pages) {
      const pfn = this.dataFrame(mm, va, pg);
      const want = contentOf(pg);
      if (pfn < 0) {
        // Nothing holds data for this page, so it reads as zeros.
        check(
          want === null || (want instanceof Uint8Array && sameBytes(want, ZERO_BYTES)),
          va,
          "lost its data",
        );
        continue;
      }
      if (this.mode === "tag") {
        check(
          content.hash(pfn) === (want === null ? 0 : stampToken(want as number)),
          va,
          "holds the wrong content",
        );
      } else if (want === null) {
        check(content.hash(pfn) === 0, va, "should hold zeros");
      } else {
        content.readBytes(pfn, 0, out, 0, PAGE);
        check(sameBytes(out, bytesOf(want)), va, "holds the wrong bytes");
      }
    }
  }

  /** Frame whose content the page at `va` shows (-1 when it reads as zeros); checks its entry. */
  private dataFrame(mm: Mm, va: number, pg: MPage): number {
    const pt = mm.pt;
    const slot = pt.pmdSlot(va);
    let pfn = -1;
    let flags = 0;
    if (slot >= 0) {
      const leaf = pt.leafAt(slot);
      if (leaf >= 0) {
        const pos = leaf * 512 + ((va / PAGE) % 512);
        flags = pt.pteFlags[pos];
        pfn = pt.ptePfn[pos];
      } else {
        flags = pt.pmdFlags[slot];
        pfn = pt.pmdPfn[slot] + ((va / PAGE) % 512);
      }
    }
    if ((flags & ENTRY_KIND_MASK) === ENTRY_PRESENT) {
      check(
        ((flags & ENTRY_PROTNONE) !== 0) === (pg.prot === PROT_NONE),
        va,
        "has PROTNONE out of step with its VMA",
      );
      check(!(flags & ENTRY_WRITE) || (pg.prot & PROT_WRITE) !== 0, va, "is writable in a read-only mapping");
      check(
        !pg.obj || pfn === pg.obj.sim.frameAt(pg.index),
        va,
        "maps a frame its shmem object does not hold",
      );
      return flags & ENTRY_ZERO ? -1 : pfn;
    }
    check((flags & ENTRY_KIND_MASK) === 0, va, "has a non-present entry");
    return pg.obj ? pg.obj.sim.frameAt(pg.index) : -1;
  }

  /** No private frame is mapped by two processes while one of them may write it. */
  private checkCowIsolation(): void {
    const owner = new Map<number, { mm: number; writable: boolean }>();
    const pool = this.machine.pool;
    for (const mp of this.procs) {
      const mm = mp.proc.mm;
      forEachPresent(mm, (pfn, flags) => {
        if (pool.flags[pfn] & FRAME_SHMEM) return;
        const w = (flags & ENTRY_WRITE) !== 0;
        const prev = owner.get(pfn);
        if (prev !== undefined && prev.mm !== mm.id && (prev.writable || w)) {
          throw new Error(`frame ${pfn} is mapped by mm ${prev.mm} and mm ${mm.id} with one writable`);
        }
        owner.set(pfn, { mm: mm.id, writable: w || (prev?.writable ?? false) });
      });
    }
  }

  /** Refcount = mappings + shmem cache references; mapcount = PTE mappings; RSS matches. */
  private checkFrameAccounting(): void {
    const pool = this.machine.pool;
    const refs = new Map<number, number>();
    const ptes = new Map<number, number>();
    const objs = new Set<ShmemObject>();
    for (const mp of this.procs) {
      const mm = mp.proc.mm;
      let anon = 0;
      let shmem = 0;
      for (const v of mm.vmas) if (v.shmem) objs.add(v.shmem);
      const seenPmd = new Set<number>();
      const cur = new PageTableCursor(mm.pt);
      for (const v of mm.vmas) {
        cur.reset(v.start, v.end);
        while (cur.next()) {
          if (cur.kind === SEG_HUGE) {
            if ((cur.flags & ENTRY_KIND_MASK) !== ENTRY_PRESENT || cur.flags & ENTRY_ZERO) continue;
            if (seenPmd.has(cur.slot)) continue;
            seenPmd.add(cur.slot);
            refs.set(cur.pfn, (refs.get(cur.pfn) ?? 0) + 1);
            anon += HPAGE_PMD_NR;
          } else if (cur.kind === SEG_TABLE) {
            for (let i = 0; i < cur.count; i++) {
              const f = mm.pt.pteFlags[cur.leafBase + cur.index + i];
              if ((f & ENTRY_KIND_MASK) !== ENTRY_PRESENT || f & ENTRY_ZERO) continue;
              const pfn = mm.pt.ptePfn[cur.leafBase + cur.index + i];
              const head = pool.folioHead(pfn);
              refs.set(head, (refs.get(head) ?? 0) + 1);
              ptes.set(pfn, (ptes.get(pfn) ?? 0) + 1);
              if (pool.flags[pfn] & FRAME_SHMEM) shmem++;
              else anon++;
            }
          }
        }
      }
      expect(mm.rssAnon).toBe(anon);
      expect(mm.rssShmem).toBe(shmem);
    }
    for (const o of objs) {
      for (let i = 0; i < o.npages; i++) {
        const pfn = o.frameAt(i);
        if (pfn >= 0) refs.set(pfn, (refs.get(pfn) ?? 0) + 1);
      }
    }
    // Every referenced folio has exactly the expected references, and together they are all the
    // memory in use: anything else allocated would be a leak.
    let used = 0;
    for (const [head, want] of refs) {
      if (pool.flags[head] & (FRAME_FREE | FRAME_RESERVED))
        throw new Error(`frame ${head} is mapped but free`);
      if (pool.refcount[head] !== want)
        throw new Error(`refcount of frame ${head}: ${pool.refcount[head]} != ${want}`);
      used += pool.isLarge(head) ? HPAGE_PMD_NR : 1;
    }
    for (const [pfn, n] of ptes) if (pool.mapcount[pfn] !== n) throw new Error(`mapcount of frame ${pfn}`);
    expect(this.machine.usedFrames).toBe(used);
  }

  finish(): void {
    while (this.procs.length > 0) this.stepWatched({ t: "exit", who: 0, force: true });
    expectNoFrameReferenced(this.machine);
  }
}

function forEachPresent(mm: Mm, fn: (pfn: number, flags: number) => void): void {
  const cur = new PageTableCursor(mm.pt);
  for (const v of mm.vmas) {
    cur.reset(v.start, v.end);
    while (cur.next()) {
      if (cur.kind === SEG_HUGE) {
        if ((cur.flags & ENTRY_KIND_MASK) !== ENTRY_PRESENT || cur.flags & ENTRY_ZERO) continue;
        for (let i = 0; i < cur.count; i++) fn(cur.pfn + cur.index + i, cur.flags);
      } else if (cur.kind === SEG_TABLE) {
        for (let i = 0; i < cur.count; i++) {
          const f = mm.pt.pteFlags[cur.leafBase + cur.index + i];
          if ((f & ENTRY_KIND_MASK) !== ENTRY_PRESENT || f & ENTRY_ZERO) continue;
          fn(mm.pt.ptePfn[cur.leafBase + cur.index + i], f);
        }
      }
    }
  }
}

/**
 * migrate_vma of [start, end) (inside one VMA) with a fresh system frame as every destination:
 * the source page copied, a hole zero-filled, as a driver's copy would. A destination that
 * cannot be allocated leaves its page where it is.
 */
export function migrateToSystemFrames(mm: Mm, start: number, end: number): number {
  const pool = mm.machine.pool;
  const args = new MigrateVma(mm, start, end, 0, MIGRATE_VMA_SELECT_SYSTEM);
  migrateVmaSetup(args);
  for (let i = 0; i < args.npages; i++) {
    if (!(args.srcFlags[i] & MIGRATE_PFN_MIGRATE)) continue;
    const dst = pool.tryAllocPage();
    if (dst < 0) continue;
    if (args.srcFlags[i] & MIGRATE_PFN_VALID) pool.content.copyTo(args.src[i], pool.content, dst);
    else pool.content.zero(dst);
    args.dst[i] = dst;
    args.dstFlags[i] = MIGRATE_PFN_VALID;
  }
  migrateVmaPages(args);
  migrateVmaFinalize(args);
  return args.cpages;
}

/** A cheap assertion for the per-page loops (expect() per page would dominate the run time). */
function check(ok: boolean, va: number, what: string): void {
  if (!ok) throw new Error(`page 0x${va.toString(16)} ${what}`);
}

export function thrownBy(fn: () => void): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error("expected the call to throw");
}

/** Machine counters summed over the runs of one property, to show what the sequences exercised. */
export type Coverage = Record<string, number>;

export function runOps(mode: ContentMode, config: Config, ops: Op[], coverage?: Coverage): Run {
  const run = new Run(mode, config);
  for (const op of ops) {
    run.stepWatched(op);
    run.check();
  }
  run.finish();
  if (coverage) {
    const snap = run.machine.stats.snapshot() as unknown as Record<string, number>;
    for (const k of Object.keys(snap)) coverage[k] = (coverage[k] ?? 0) + snap[k];
    coverage.ops = (coverage.ops ?? 0) + ops.length;
  }
  return run;
}

/** The paths every model property must have gone through for its pass to mean something. */
export const MUST_EXERCISE = [
  "faultAnon",
  "faultZeroPage",
  "faultHugeZeroPage",
  "faultThp",
  "faultShmem",
  "cowCopies",
  "cowReuses",
  "thpSplitPmd",
  "segv",
  "notifierRanges",
];
