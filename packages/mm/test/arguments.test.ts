import { describe, expect, it } from "vitest";
import {
  MADV_DONTNEED,
  MADV_HUGEPAGE,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_HUGETLB,
  MAP_POPULATE,
  MAP_PRIVATE,
  MAP_SHARED,
  MAP_STACK,
  Machine,
  type MmapOptions,
  MmError,
  PROT_EXEC,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  THP_ADVICE_NOHUGEPAGE,
} from "../src/index.js";
import { PAGE, PRIVATE, RW, thrown } from "./helpers.js";
import { machineState } from "./machine-state.js";

/** Two machines driven through the same calls: `m` gets the bad calls as well, `control` not. */
function twin() {
  const make = () => {
    const m = new Machine({ contentMode: "bytes" });
    const p = m.createProcess();
    const a = p.mm.mmap({ length: 8 * PAGE, prot: RW, flags: PRIVATE });
    p.writeStamp(a, 2 * PAGE, 5);
    return { m, p, mm: p.mm, a };
  };
  return { ...make(), control: make() };
}

/** `fn` throws an MmError with `errno` and `code` whose message contains every one of `parts`. */
function expectMmError(fn: () => unknown, errno: string, code: string, ...parts: string[]): void {
  const e = thrown(fn);
  expect(e, String(e)).toBeInstanceOf(MmError);
  expect(e.errno).toBe(errno);
  expect(e.code).toBe(code);
  for (const s of parts) expect(e.message).toContain(s);
}

/** Malformed numbers, each with how the error message shows it. */
const BAD_NUMBERS: [unknown, string][] = [
  [undefined, "undefined"],
  [null, "null"],
  [Number.NaN, "NaN"],
  [1.5, "1.5"],
  ["3", '"3"'],
  [-1, "-1"],
  [2 ** 32, "0x1_0000_0000"],
  [Number.POSITIVE_INFINITY, "Infinity"],
  [{}, "an object"],
  [[], "an array"],
  [true, "true"],
];

describe("mmap arguments", () => {
  it.each(BAD_NUMBERS)(
    "prot %s is EINVAL naming mmap, prot and the value, and maps nothing",
    (prot, shown) => {
      const { m, mm, control } = twin();
      expectMmError(
        () => mm.mmap({ length: PAGE, prot, flags: PRIVATE } as unknown as MmapOptions),
        "EINVAL",
        "BAD_ARGUMENT",
        `mmap: prot ${shown} is not`,
      );
      expect(machineState(m)).toBe(machineState(control.m));
    },
  );

  it("a string hint is EINVAL and creates no VMA with string bounds", () => {
    const { m, p, mm, a, control } = twin();
    expectMmError(
      () =>
        mm.mmap({
          addr: String(a + 64 * PAGE),
          length: PAGE,
          prot: RW,
          flags: PRIVATE,
        } as unknown as MmapOptions),
      "EINVAL",
      "BAD_ARGUMENT",
      "mmap: addr",
    );
    expect(mm.vmas.toArray().every((v) => typeof v.start === "number" && typeof v.end === "number")).toBe(
      true,
    );
    expect(() => p.writeStamp(a + 64 * PAGE, PAGE, 1)).toThrow();
    expect(machineState(m).replace(/"segv":\d+/, "")).toBe(machineState(control.m).replace(/"segv":\d+/, ""));
  });

  it("mmap(undefined) and mmap of a length that is not an integer are EINVAL, not TypeErrors", () => {
    const { m, mm, control } = twin();
    expectMmError(
      () => mm.mmap(undefined as unknown as MmapOptions),
      "EINVAL",
      "BAD_ARGUMENT",
      "mmap: options",
    );
    expectMmError(
      () => mm.mmap({ length: "4096", prot: RW, flags: PRIVATE } as unknown as MmapOptions),
      "EINVAL",
      "BAD_ARGUMENT",
      "mmap: length",
    );
    expectMmError(
      () => mm.mmap({ length: PAGE, prot: RW, flags: 2.5 }),
      "EINVAL",
      "BAD_ARGUMENT",
      "mmap: flags",
    );
    expect(machineState(m)).toBe(machineState(control.m));
  });

  it("prot bits Linux's mmap does not know are ignored, as calc_vm_prot_bits ignores them", () => {
    const { mm } = twin();
    const b = mm.mmap({ length: PAGE, prot: RW | 0x10, flags: PRIVATE });
    expect(mm.findVma(b)!.prot).toBe(RW);
  });

  it("PROT_EXEC and flags that change what a mapping is are refused as not simulated", () => {
    const { m, mm, control } = twin();
    expectMmError(
      () => mm.mmap({ length: PAGE, prot: PROT_READ | PROT_EXEC, flags: PRIVATE }),
      "EINVAL",
      "NOT_SIMULATED",
      "PROT_EXEC",
    );
    expectMmError(
      () => mm.mmap({ length: PAGE, prot: RW, flags: PRIVATE | MAP_POPULATE }),
      "EINVAL",
      "NOT_SIMULATED",
      "MAP_POPULATE",
    );
    expectMmError(
      () => mm.mmap({ length: PAGE, prot: RW, flags: PRIVATE | MAP_HUGETLB }),
      "EINVAL",
      "NOT_SIMULATED",
      "MAP_HUGETLB",
    );
    expectMmError(
      () => mm.mmap({ length: PAGE, prot: RW, flags: MAP_PRIVATE }),
      "EINVAL",
      "NOT_SIMULATED",
      "MAP_ANONYMOUS",
    );
    expect(machineState(m)).toBe(machineState(control.m));
  });

  it("a mapping type other than MAP_SHARED or MAP_PRIVATE is EINVAL; unknown flag bits outside it are ignored", () => {
    const { mm } = twin();
    expectMmError(
      () => mm.mmap({ length: PAGE, prot: RW, flags: MAP_ANONYMOUS | 0x3 }),
      "EINVAL",
      "BAD_ARGUMENT",
      "mapping type",
    );
    expectMmError(
      () => mm.mmap({ length: PAGE, prot: RW, flags: MAP_ANONYMOUS }),
      "EINVAL",
      "BAD_ARGUMENT",
      "mapping type",
    );
    const b = mm.mmap({ length: PAGE, prot: RW, flags: MAP_SHARED | MAP_ANONYMOUS | 0x0400_0000 });
    expect(mm.findVma(b)!.shared).toBe(true);
  });

  it("MAP_STACK maps without THP, as Linux 6.7+ sets VM_NOHUGEPAGE for it", () => {
    const { mm } = twin();
    const b = mm.mmap({ length: 4 * 1024 * 1024, prot: RW, flags: PRIVATE | MAP_STACK });
    expect(mm.findVma(b)!.thpAdvice).toBe(THP_ADVICE_NOHUGEPAGE);
  });

  it("an unaligned hint is rounded down to its page, as round_hint_to_min does", () => {
    const { mm, a } = twin();
    const want = a + 100 * PAGE;
    expect(mm.mmap({ addr: want + 123, length: PAGE, prot: RW, flags: PRIVATE })).toBe(want);
  });
});

describe("munmap, mprotect and madvise arguments", () => {
  it.each([
    [
      "munmap",
      (mm: Machine["mms"] extends Set<infer M> ? M : never, a: number) => mm.munmap(a, Number.NaN),
      "munmap: length",
    ],
    [
      "mprotect",
      (mm: Machine["mms"] extends Set<infer M> ? M : never, a: number) =>
        mm.mprotect(a, PAGE, undefined as never),
      "mprotect: prot",
    ],
    [
      "madvise",
      (mm: Machine["mms"] extends Set<infer M> ? M : never, a: number) =>
        mm.madvise(String(a) as never, PAGE, MADV_DONTNEED),
      "madvise: address",
    ],
  ] as const)("%s with a malformed argument is EINVAL naming it and changes nothing", (_op, call, part) => {
    const { m, mm, a, control } = twin();
    expectMmError(() => call(mm, a), "EINVAL", "BAD_ARGUMENT", part);
    expect(machineState(m)).toBe(machineState(control.m));
  });

  it("mprotect refuses prot bits Linux does not know (arch_validate_prot) but not with a zero length", () => {
    const { m, mm, a, control } = twin();
    expectMmError(() => mm.mprotect(a, PAGE, RW | 0x10), "EINVAL", "BAD_ARGUMENT", "unknown prot bits");
    expectMmError(() => mm.mprotect(a, PAGE, PROT_EXEC), "EINVAL", "NOT_SIMULATED");
    // do_mprotect_pkey returns 0 for an empty range before it looks at prot.
    mm.mprotect(a, 0, 0x10);
    expect(mm.findVma(a)!.prot).toBe(RW);
    expect(machineState(m)).toBe(machineState(control.m));
    mm.mprotect(a, PAGE, PROT_NONE);
    expect(mm.findVma(a)!.prot).toBe(PROT_NONE);
  });

  it("madvise of a value that is no Linux advice is EINVAL; a Linux advice not simulated says so", () => {
    const { m, mm, a, control } = twin();
    expectMmError(
      () => mm.madvise(a, PAGE, 7),
      "EINVAL",
      "BAD_ARGUMENT",
      "madvise: advice 7",
      "not a madvise advice",
    );
    expectMmError(() => mm.madvise(a, PAGE, 3), "EINVAL", "NOT_SIMULATED", "MADV_WILLNEED");
    expectMmError(() => mm.madvise(a + 1, PAGE, MADV_HUGEPAGE), "EINVAL", "BAD_ARGUMENT", "not page aligned");
    expect(machineState(m)).toBe(machineState(control.m));
  });
});

describe("CPU access arguments", () => {
  it("write of a string instead of bytes is EINVAL naming write and data", () => {
    const { m, p, a, control } = twin();
    expectMmError(
      () => p.write(a, "str" as unknown as Uint8Array),
      "EINVAL",
      "BAD_ARGUMENT",
      "write: data",
      '"str"',
    );
    expectMmError(() => p.writeStamp(a, PAGE, 1.5), "EINVAL", "BAD_ARGUMENT", "writeStamp: stamp");
    expectMmError(() => p.read(a, -1), "EINVAL", "BAD_ARGUMENT", "read: length");
    expect(machineState(m)).toBe(machineState(control.m));
  });

  it("a read larger than MAX_RW_COUNT is refused before any buffer is allocated", () => {
    const { p, a } = twin();
    expectMmError(() => p.read(a, 2 ** 40), "EINVAL", "TOO_LARGE", "MAX_RW_COUNT");
  });

  it("writes still work with PROT_WRITE alone after the checks", () => {
    const { p, mm } = twin();
    const b = mm.mmap({
      length: PAGE,
      prot: PROT_READ | PROT_WRITE,
      flags: PRIVATE | MAP_FIXED,
      addr: 0x1000_0000,
    });
    p.write(b, new Uint8Array([1, 2, 3]));
    expect(Array.from(p.read(b, 3))).toEqual([1, 2, 3]);
    expect(PROT_WRITE & mm.findVma(b)!.prot).toBe(PROT_WRITE);
  });
});

describe("Machine entry points", () => {
  it("registerDevicePagemap, unregisterDevicePagemap and defer refuse malformed arguments", () => {
    const m = new Machine({ memoryBytes: 8 * 1024 * 1024 });
    const ops = {
      name: "fake",
      migrateToRam: () => 0,
      pageGet() {},
      pagePut() {},
      folioRefs: () => 1,
      folioSplit: () => true,
      pageHash: () => 0,
    };
    expectMmError(
      () => m.registerDevicePagemap(null as never),
      "EINVAL",
      "BAD_ARGUMENT",
      "registerDevicePagemap: ops",
    );
    expectMmError(
      () => m.registerDevicePagemap({ name: 7 } as never),
      "EINVAL",
      "BAD_ARGUMENT",
      "ops.name 7",
    );
    expect(m.registerDevicePagemap(ops)).toBe(1);
    expectMmError(() => m.unregisterDevicePagemap(0), "EINVAL", "BAD_ARGUMENT", "owner 0");
    expectMmError(() => m.defer("later" as never), "EINVAL", "BAD_ARGUMENT", "defer: work");
    expect(m.devicePagemap(1).name).toBe("fake");
  });
});
