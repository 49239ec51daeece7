import { describe, expect, it } from "vitest";
import {
  ACCESS_SEGV_MAPERR,
  FAULT_FLAG_WRITE,
  handleMmFault,
  MADV_DONTNEED,
  MAP_FIXED,
  Machine,
  MIGRATE_VMA_SELECT_SYSTEM,
  MigrateVma,
  MmError,
  makeDeviceExclusive,
  PROT_READ,
  SegvError,
  TASK_SIZE,
  VM_FAULT_SIGSEGV,
} from "../src/index.js";
import { PAGE, PRIVATE, RecordingFakeNotifier, RW, thrown } from "./helpers.js";
import { machineState } from "./machine-state.js";

/** A machine with one process whose first page at `a` holds stamp 7 (and a second page untouched). */
function setup() {
  const m = new Machine({ contentMode: "bytes" });
  const p = m.createProcess();
  const a = p.mm.mmap({ length: 2 * PAGE, prot: RW, flags: PRIVATE });
  p.writeStamp(a, PAGE, 7);
  return { m, p, mm: p.mm, a, hash: p.readPageHash(a) };
}

/** 2^48 + a: the page-table index of the PGD level wraps this onto `a`. */
const ALIAS = 2 ** 48;

describe("CPU accesses outside user space", () => {
  it("a CPU write at 2^48 + a raises SIGSEGV and leaves the page at a as it was", () => {
    const { m, p, a, hash } = setup();
    const before = machineState(m);
    const e = thrown(() => p.writeStamp(ALIAS + a, PAGE, 99));
    expect(e).toBeInstanceOf(SegvError);
    expect(e.errno).toBe("EFAULT");
    expect(e.message).toContain("outside user space");
    expect(() => p.write(ALIAS + a, new Uint8Array([1, 2, 3]))).toThrow(SegvError);
    expect(p.touch(ALIAS + a, PAGE, true, 5).segvAt).toBe(ALIAS + a);
    expect(p.readPageHash(a)).toBe(hash);
    // Only the SIGSEGV counter moved.
    expect(machineState(m).replace(/"segv":\d+/, "")).toBe(before.replace(/"segv":\d+/, ""));
  });

  it("a CPU read at 2^48 + a raises SIGSEGV instead of reading the page at a", () => {
    const { p, a } = setup();
    expect(() => p.read(ALIAS + a, 16)).toThrow(SegvError);
    expect(() => p.readPageHash(ALIAS + a)).toThrow(SegvError);
    expect(p.touch(ALIAS + a, PAGE, false).segvAt).toBe(ALIAS + a);
  });

  it("accessPage reports SEGV_MAPERR at TASK_SIZE, past 2^48, and at NaN or fractional addresses", () => {
    const { p, a } = setup();
    for (const va of [TASK_SIZE, ALIAS + a, Number.NaN, a + 0.5, -PAGE])
      expect(p.accessPage(va, true), String(va)).toBe(ACCESS_SEGV_MAPERR);
  });

  it("an access with an address that is not an integer is EINVAL naming the operation and the value", () => {
    const { m, p, a } = setup();
    const before = machineState(m);
    for (const [fn, op] of [
      [() => p.read(a + 0.5, 4), "read"],
      [() => p.writeStamp(Number.NaN, PAGE, 1), "writeStamp"],
      [() => p.touch("4096" as unknown as number, PAGE, true), "touch"],
      [() => p.readPageHash(-PAGE), "readPageHash"],
    ] as const) {
      const e = thrown(fn);
      expect(e).toBeInstanceOf(MmError);
      expect(e.errno).toBe("EINVAL");
      expect(e.code).toBe("BAD_ARGUMENT");
      expect(e.message).toContain(`${op}: address`);
    }
    expect(machineState(m)).toBe(before);
  });

  it("handleMmFault at an address outside its VMA returns VM_FAULT_SIGSEGV and maps nothing", () => {
    const { m, mm, a } = setup();
    const vma = mm.findVma(a)!;
    const before = machineState(m);
    expect(handleMmFault(mm, vma, ALIAS + a + PAGE, FAULT_FLAG_WRITE)).toBe(VM_FAULT_SIGSEGV);
    expect(handleMmFault(mm, vma, Number.NaN, FAULT_FLAG_WRITE)).toBe(VM_FAULT_SIGSEGV);
    expect(machineState(m)).toBe(before);
  });
});

describe("syscalls on ranges past TASK_SIZE give the errno Linux gives", () => {
  it("MAP_FIXED past TASK_SIZE is ENOMEM; munmap there is EINVAL; mprotect and madvise find no VMA (ENOMEM)", () => {
    const { m, mm, a } = setup();
    const before = machineState(m);
    const cases: [() => unknown, string][] = [
      [() => mm.mmap({ addr: TASK_SIZE, length: PAGE, prot: RW, flags: PRIVATE | MAP_FIXED }), "ENOMEM"],
      [() => mm.mmap({ addr: ALIAS + a, length: PAGE, prot: RW, flags: PRIVATE | MAP_FIXED }), "ENOMEM"],
      [() => mm.munmap(ALIAS + a, PAGE), "EINVAL"],
      [() => mm.munmap(TASK_SIZE - PAGE, 2 * PAGE), "EINVAL"],
      [() => mm.mprotect(ALIAS + a, PAGE, PROT_READ), "ENOMEM"],
      [() => mm.madvise(ALIAS + a, PAGE, MADV_DONTNEED), "ENOMEM"],
    ];
    for (const [fn, errno] of cases) expect(thrown(fn).errno).toBe(errno);
    expect(machineState(m)).toBe(before);
  });

  it("a hint past TASK_SIZE or below zero is ignored and the mapping placed top-down", () => {
    const { mm, a } = setup();
    for (const hint of [ALIAS + a, TASK_SIZE, -PAGE]) {
      const b = mm.mmap({ addr: hint, length: PAGE, prot: RW, flags: PRIVATE });
      expect(b).toBeLessThan(TASK_SIZE);
      expect(b).not.toBe(a);
    }
  });

  it("migrate_vma and make_device_exclusive refuse ranges outside user space", () => {
    const { m, mm, a } = setup();
    const before = machineState(m);
    const e = thrown(() => new MigrateVma(mm, ALIAS + a, ALIAS + a + PAGE, 1, MIGRATE_VMA_SELECT_SYSTEM));
    expect(e.errno).toBe("EINVAL");
    expect(thrown(() => new MigrateVma(mm, a, Number.NaN, 1, MIGRATE_VMA_SELECT_SYSTEM)).code).toBe(
      "BAD_ARGUMENT",
    );
    expect(thrown(() => new MigrateVma(mm, a + PAGE, a, 1, MIGRATE_VMA_SELECT_SYSTEM)).message).toContain(
      "reversed",
    );
    expect(thrown(() => makeDeviceExclusive(mm, ALIAS + a, 1)).errno).toBe("EFAULT");
    expect(thrown(() => makeDeviceExclusive(mm, a, 0)).code).toBe("BAD_ARGUMENT");
    expect(machineState(m)).toBe(before);
  });

  it("an interval notifier takes integers only; an empty interval is EOVERFLOW as in Linux", () => {
    const { mm } = setup();
    const ops = new RecordingFakeNotifier();
    expect(thrown(() => mm.notifiers.insert(Number.NaN, PAGE, ops)).code).toBe("BAD_ARGUMENT");
    expect(thrown(() => mm.notifiers.insert(0, 0.5, ops)).code).toBe("BAD_ARGUMENT");
    expect(thrown(() => mm.notifiers.insert(0, 0, ops)).errno).toBe("EOVERFLOW");
    expect(thrown(() => mm.notifiers.insert(0, PAGE, {} as never)).message).toContain("ops.invalidate");
    expect(mm.notifiers.size).toBe(0);
    // __mmu_interval_notifier_insert accepts an interval above TASK_SIZE; it never fires.
    expect(mm.notifiers.insert(ALIAS, PAGE, ops).end).toBe(ALIAS + PAGE);
  });
});
