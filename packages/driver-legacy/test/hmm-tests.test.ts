/**
 * Cases of tools/testing/selftests/mm/hmm-tests.c ported onto HMM v12's design: the device is
 * @hmmkit/driver-legacy through @hmmkit/legacy, a READ / WRITE is `hmm_mirror_fault` over the
 * buffer followed by the device's accesses through its table (the data it sees, or stores), and
 * the return codes are v12's: a READ of PROT_NONE memory is -EFAULT, a WRITE to a read-only
 * mapping is -EACCES (hmm_mirror_handle_fault; the modern dmirror returns -EPERM). The selftest's
 * `faults` counter corresponds to the mirror's CPU-fault rounds (`enoentFaults`).
 */
import { cpuOpSteps, createHmm, DeviceAccesses, Scheduler } from "@hmmkit/core";
import { EACCES, EFAULT, type HmmMirror } from "@hmmkit/legacy";
import {
  HPAGE_PMD_SIZE,
  MADV_HUGEPAGE,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  type Process,
  stampToken,
} from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import { attachLegacy } from "../src/index.js";

const PAGE = 4096;
const NPAGES = 1024;
const SIZE = NPAGES * PAGE;
const RW = PROT_READ | PROT_WRITE;
const PRIVATE = MAP_PRIVATE | MAP_ANONYMOUS;

function fixture() {
  const sys = createHmm({ machine: { memoryBytes: 256 * 1024 * 1024, zeroPage: true, thp: "madvise" } });
  const devs = [0, 1].map((u) => attachLegacy(sys.core, { name: `hmm_dmirror${u}`, memoryPages: 4096 }));
  const p = sys.machine.createProcess();
  return { ...sys, devs, p, mirror: (u = 0, proc: Process = p) => devs[u].mirror.register(proc.mm) };
}

/** Device reads of every page of [ptr, ptr + n pages): the page hashes it saw. */
function deviceRead(
  f: ReturnType<typeof fixture>,
  u: number,
  proc: Process,
  ptr: number,
  n: number,
): number[] {
  const acc = new DeviceAccesses();
  for (let i = 0; i < n; i++) acc.read(ptr + i * PAGE);
  const r = f.core.runDevice(f.devs[u].device, proc, acc);
  expect(r.cancelled).toBe(0);
  return [...acc.seen.subarray(0, n)];
}

/** Device writes of stamp base + i to page i. */
function deviceWrite(
  f: ReturnType<typeof fixture>,
  u: number,
  proc: Process,
  ptr: number,
  n: number,
  base: number,
) {
  const acc = new DeviceAccesses();
  for (let i = 0; i < n; i++) acc.write(ptr + i * PAGE, base + i);
  return f.core.runDevice(f.devs[u].device, proc, acc);
}

function init(p: Process, ptr: number, n: number, base: number): void {
  for (let i = 0; i < n; i++) p.writeStamp(ptr + i * PAGE, PAGE, base + i);
}

function faultRounds(m: HmmMirror): number {
  return (m.device as unknown as { counters: { enoentFaults: number } }).counters.enoentFaults;
}

describe("hmm-tests.c on HMM v12's shared mirror", () => {
  it("anon_read: a pte_none page and a zero page read as zeros, the rest as written, in one CPU-fault round", () => {
    const f = fixture();
    const ptr = f.p.mm.mmap({ length: SIZE, prot: RW, flags: PRIVATE });
    init(f.p, ptr + 2 * PAGE, NPAGES - 2, 100);
    f.p.mm.mprotect(ptr, SIZE, PROT_READ);
    f.p.touch(ptr + PAGE, PAGE, false);
    const m = f.mirror();
    expect(m.fault(ptr, ptr + SIZE, false)).toBe(0);
    expect(faultRounds(m)).toBe(1);
    const seen = deviceRead(f, 0, f.p, ptr, NPAGES);
    expect(seen[0]).toBe(0);
    expect(seen[1]).toBe(0);
    for (let i = 2; i < NPAGES; i++) expect(seen[i]).toBe(stampToken(98 + i));
  });

  it("anon_read_prot: reading PROT_NONE memory is -EFAULT and nothing is mirrored", () => {
    const f = fixture();
    const ptr = f.p.mm.mmap({ length: SIZE, prot: RW, flags: PRIVATE });
    init(f.p, ptr, NPAGES, 1);
    f.p.mm.mprotect(ptr, SIZE, PROT_NONE);
    const m = f.mirror();
    expect(m.fault(ptr, ptr + SIZE, false)).toBe(-EFAULT);
    expect(m.pt.entryPos(ptr)).toBe(-1);
    f.p.mm.mprotect(ptr, SIZE, PROT_READ);
    expect(f.p.readPageHash(ptr + 5 * PAGE)).toBe(stampToken(6));
  });

  it("anon_write: the device writes never-touched memory after one write fault", () => {
    const f = fixture();
    const ptr = f.p.mm.mmap({ length: SIZE, prot: RW, flags: PRIVATE });
    const m = f.mirror();
    expect(m.fault(ptr, ptr + SIZE, true)).toBe(0);
    expect(faultRounds(m)).toBe(1);
    const r = deviceWrite(f, 0, f.p, ptr, NPAGES, 500);
    expect(r.faults).toBe(0);
    for (let i = 0; i < NPAGES; i += 97) expect(f.p.readPageHash(ptr + i * PAGE)).toBe(stampToken(500 + i));
  });

  it("anon_write_prot: a write to a read-only mapping is -EACCES (v12) and changes nothing; after mprotect(RW) it succeeds", () => {
    const f = fixture();
    const ptr = f.p.mm.mmap({ length: SIZE, prot: PROT_READ, flags: PRIVATE });
    const m = f.mirror();
    expect(m.fault(ptr, ptr + PAGE, false)).toBe(0);
    expect(m.fault(ptr, ptr + SIZE, true)).toBe(-EACCES);
    expect(f.p.readPageHash(ptr)).toBe(0);
    f.p.mm.mprotect(ptr, SIZE, RW);
    expect(m.fault(ptr, ptr + SIZE, true)).toBe(0);
    expect(deviceWrite(f, 0, f.p, ptr, NPAGES, 900).cancelled).toBe(0);
    expect(f.p.readPageHash(ptr + 3 * PAGE)).toBe(stampToken(903));
  });

  it("anon_write_child: a child mirrors its own address space; its device writes stay in the child (COW)", () => {
    const f = fixture();
    const ptr = f.p.mm.mmap({ length: SIZE, prot: RW, flags: PRIVATE });
    init(f.p, ptr, NPAGES, 10);
    const child = f.p.fork();
    const cm = f.devs[0].mirror.register(child.mm);
    expect(cm.fault(ptr, ptr + SIZE, true)).toBe(0);
    expect(deviceWrite(f, 0, child, ptr, NPAGES, 7000).cancelled).toBe(0);
    expect(child.readPageHash(ptr + 9 * PAGE)).toBe(stampToken(7009));
    expect(f.p.readPageHash(ptr + 9 * PAGE)).toBe(stampToken(19));
  });

  it("anon_write_huge: one write fault mirrors a whole THP; the device writes all of it", () => {
    const f = fixture();
    const raw = f.p.mm.mmap({ length: 2 * HPAGE_PMD_SIZE, prot: RW, flags: PRIVATE });
    const ptr = Math.ceil(raw / HPAGE_PMD_SIZE) * HPAGE_PMD_SIZE;
    f.p.mm.madvise(ptr, HPAGE_PMD_SIZE, MADV_HUGEPAGE);
    const m = f.mirror();
    expect(m.fault(ptr, ptr + PAGE, true)).toBe(0);
    expect(m.pt.stats.entriesWritten).toBe(512);
    const r = deviceWrite(f, 0, f.p, ptr, 512, 300);
    expect(r.faults).toBe(0);
    expect(f.p.readPageHash(ptr + 511 * PAGE)).toBe(stampToken(811));
  });

  it("anon_read_multiple: ten fresh buffers each read correctly after one fault", () => {
    const f = fixture();
    for (let c = 0; c < 10; c++) {
      const ptr = f.p.mm.mmap({ length: 64 * PAGE, prot: RW, flags: PRIVATE });
      init(f.p, ptr, 64, 1000 * c);
      expect(f.mirror().fault(ptr, ptr + 64 * PAGE, false)).toBe(0);
      const seen = deviceRead(f, 0, f.p, ptr, 64);
      for (let i = 0; i < 64; i += 9) expect(seen[i]).toBe(stampToken(1000 * c + i));
    }
  });

  it("anon_teardown: a fault racing an munmap of the second half returns 0 or -EFAULT, never leaves the unmapped half mirrored (seeds 1-10)", () => {
    const f = fixture();
    const outcomes = new Set<number>();
    for (let c = 0; c < 10; c++) {
      const ptr = f.p.mm.mmap({ length: SIZE, prot: RW, flags: PRIVATE });
      init(f.p, ptr, NPAGES, c);
      const m = f.mirror();
      const sched = new Scheduler(c + 1);
      const delay = (c * 7) % 6;
      sched.spawn("fault", m.faultSteps(ptr, ptr + SIZE, false));
      sched.spawn(
        "unmap",
        (function* () {
          for (let i = 0; i < delay; i++) yield "unmap:sleep";
          return yield* cpuOpSteps("munmap", () => f.p.mm.munmap(ptr + SIZE / 2, SIZE / 2));
        })(),
      );
      sched.run();
      sched.result("unmap");
      const rc = sched.result<number>("fault");
      outcomes.add(rc);
      expect([0, -EFAULT]).toContain(rc);
      for (let a = ptr + SIZE / 2; a < ptr + SIZE; a += 64 * PAGE) {
        const pos = m.pt.entryPos(a);
        expect(pos < 0 || m.pt.lo[pos] === 0).toBe(true);
      }
      f.p.mm.munmap(ptr, SIZE / 2);
    }
    expect(outcomes.has(0)).toBe(true);
  });

  it("migrate and migrate_fault: pages move to the device (their device addresses in hmm_pt), half fault back, and migrating again moves that half back", () => {
    const f = fixture();
    const ptr = f.p.mm.mmap({ length: SIZE, prot: RW, flags: PRIVATE });
    init(f.p, ptr, NPAGES, 40);
    const { device, mirror: sm } = f.devs[0];
    expect(f.core.migrateToDevice(device, f.p, ptr, ptr + SIZE).migrated).toBe(NPAGES);
    for (let i = 0; i < NPAGES / 2; i++) expect(f.p.readPageHash(ptr + i * PAGE)).toBe(stampToken(40 + i));
    expect(sm.stats().copyFromDeviceViaHmmPt).toBe(NPAGES / 2);
    expect(f.core.migrateToDevice(device, f.p, ptr, ptr + SIZE).migrated).toBe(NPAGES / 2);
    const seen = deviceRead(f, 0, f.p, ptr, NPAGES);
    for (let i = 0; i < NPAGES; i += 31) expect(seen[i]).toBe(stampToken(40 + i));
  });

  it("migrate_multiple: ten rounds of migrating a fresh buffer and faulting it back keep the data", () => {
    const f = fixture();
    for (let c = 0; c < 10; c++) {
      const ptr = f.p.mm.mmap({ length: 64 * PAGE, prot: RW, flags: PRIVATE });
      init(f.p, ptr, 64, 50 * c);
      expect(f.core.migrateToDevice(f.devs[0].device, f.p, ptr, ptr + 64 * PAGE).migrated).toBe(64);
      for (let i = 0; i < 64; i++) expect(f.p.readPageHash(ptr + i * PAGE)).toBe(stampToken(50 * c + i));
    }
  });

  it("double_map: two devices read the same read-only pages; after device 1 migrates them, device 0's fault brings them back and reads them", () => {
    const f = fixture();
    const ptr = f.p.mm.mmap({ length: 6 * PAGE, prot: RW, flags: PRIVATE });
    init(f.p, ptr, 6, 60);
    f.p.mm.mprotect(ptr, 6 * PAGE, PROT_READ);
    for (const u of [0, 1]) {
      expect(f.mirror(u).fault(ptr, ptr + 6 * PAGE, false)).toBe(0);
      expect(deviceRead(f, u, f.p, ptr, 6)).toEqual([0, 1, 2, 3, 4, 5].map((i) => stampToken(60 + i)));
    }
    expect(f.core.migrateToDevice(f.devs[1].device, f.p, ptr, ptr + 6 * PAGE).migrated).toBe(6);
    // Device 0's entries were invalidated by the migration; its fault finds device 1's pages
    // (-ENOENT), the CPU fault brings them home, and the retry mirrors them.
    expect(f.devs[0].mirror.mirror(f.p.mm.id).pt.stats.entriesCleared).toBe(6);
    expect(deviceRead(f, 0, f.p, ptr, 6)).toEqual([0, 1, 2, 3, 4, 5].map((i) => stampToken(60 + i)));
    expect(f.devs[1].mirror.stats().copyFromDeviceViaHmmPt).toBe(6);
  });
});
