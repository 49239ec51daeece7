import { describe, expect, it } from "vitest";
import {
  DEFAULT_MMAP_BASE,
  MADV_DONTNEED,
  MADV_HUGEPAGE,
  MAP_FIXED,
  MAP_FIXED_NOREPLACE,
  MAP_PRIVATE,
  MAP_SHARED,
  Machine,
  MmError,
  PAGE_SIZE,
  PROT_NONE,
  PROT_READ,
  SegvError,
  stampToken,
  THP_ADVICE_HUGEPAGE,
  THP_ADVICE_NONE,
} from "../src/index.js";
import { mmapPrivate, PAGE, PRIVATE, RW, thrown } from "./helpers.js";

function setup() {
  const m = new Machine({ contentMode: "tag" });
  const p = m.createProcess();
  return { m, p, mm: p.mm };
}

/** Two 4-page VMAs with a 2-page hole between them: [a, a+4p) hole [a+4p, a+6p) [a+6p, a+10p). */
function withHole() {
  const s = setup();
  const a = s.mm.mmap({ length: 10 * PAGE, prot: RW, flags: PRIVATE });
  s.mm.munmap(a + 4 * PAGE, 2 * PAGE);
  s.p.writeStamp(a, 4 * PAGE, 1);
  s.p.writeStamp(a + 6 * PAGE, 4 * PAGE, 2);
  expect(s.mm.vmas.size).toBe(2);
  return { ...s, a };
}

describe("mmap", () => {
  it("rejects a zero length with EINVAL", () => {
    const { mm } = setup();
    const e = thrown(() => mm.mmap({ length: 0, prot: RW, flags: PRIVATE }));
    expect(e).toBeInstanceOf(MmError);
    expect(e.errno).toBe("EINVAL");
    expect(e.message).toContain("length is 0");
    expect(mm.vmas.size).toBe(0);
  });

  it("rejects flags with neither or both of MAP_SHARED and MAP_PRIVATE", () => {
    const { mm } = setup();
    for (const flags of [0x20, MAP_SHARED | MAP_PRIVATE | 0x20]) {
      const e = thrown(() => mm.mmap({ length: PAGE, prot: RW, flags }));
      expect(e.errno).toBe("EINVAL");
      expect(e.message).toContain("MAP_SHARED");
    }
  });

  it("rounds the length up to whole pages and returns a page-aligned address below the mmap base", () => {
    const { mm } = setup();
    const a = mm.mmap({ length: 5000, prot: RW, flags: PRIVATE });
    expect(a % PAGE_SIZE).toBe(0);
    expect(a + 2 * PAGE).toBeLessThanOrEqual(DEFAULT_MMAP_BASE);
    const v = mm.findVma(a)!;
    expect(v.end - v.start).toBe(2 * PAGE);
  });

  it("places mappings without a hint top-down", () => {
    const { mm } = setup();
    const a = mm.mmap({ length: 3 * PAGE, prot: RW, flags: PRIVATE });
    const b = mm.mmap({ length: 3 * PAGE, prot: PROT_READ, flags: PRIVATE });
    expect(b + 3 * PAGE).toBeLessThanOrEqual(a);
  });

  it("uses a free hint address as given", () => {
    const { mm } = setup();
    const hint = 0x5555_0000_0000;
    expect(mm.mmap({ addr: hint, length: PAGE, prot: RW, flags: PRIVATE })).toBe(hint);
    // An occupied hint is only a hint: the mapping goes elsewhere.
    const other = mm.mmap({ addr: hint, length: PAGE, prot: RW, flags: PRIVATE });
    expect(other).not.toBe(hint);
  });

  it("MAP_FIXED replaces what was mapped there, freeing its pages", () => {
    const { m, p, mm } = setup();
    const a = mmapPrivate(p, 8 * PAGE);
    p.writeStamp(a, 8 * PAGE, 5);
    expect(m.usedFrames).toBe(8);
    const b = mm.mmap({ addr: a + 2 * PAGE, length: 2 * PAGE, prot: PROT_READ, flags: PRIVATE | MAP_FIXED });
    expect(b).toBe(a + 2 * PAGE);
    expect(m.usedFrames).toBe(6);
    expect(p.readPageHash(a + 2 * PAGE)).toBe(0);
    expect(p.readPageHash(a + PAGE)).toBe(stampToken(5));
    expect(mm.findVma(a + 2 * PAGE)!.prot).toBe(PROT_READ);
    expect(mm.vmas.toArray().map((v) => [v.start, v.end])).toEqual([
      [a, a + 2 * PAGE],
      [a + 2 * PAGE, a + 4 * PAGE],
      [a + 4 * PAGE, a + 8 * PAGE],
    ]);
  });

  it("MAP_FIXED_NOREPLACE over a mapping fails with EEXIST and leaves it alone", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 4 * PAGE);
    p.writeStamp(a, 4 * PAGE, 3);
    const e = thrown(() =>
      mm.mmap({ addr: a + PAGE, length: PAGE, prot: RW, flags: PRIVATE | MAP_FIXED_NOREPLACE }),
    );
    expect(e.errno).toBe("EEXIST");
    expect(e.message).toContain("MAP_FIXED_NOREPLACE");
    expect(e.message).toContain("in use");
    expect(p.readPageHash(a + PAGE)).toBe(stampToken(3));
    // Next to the mapping it succeeds.
    expect(
      mm.mmap({ addr: a + 4 * PAGE, length: PAGE, prot: RW, flags: PRIVATE | MAP_FIXED_NOREPLACE }),
    ).toBe(a + 4 * PAGE);
  });

  it("MAP_FIXED needs a page-aligned address", () => {
    const { mm } = setup();
    const e = thrown(() =>
      mm.mmap({ addr: 0x1000_0001, length: PAGE, prot: RW, flags: PRIVATE | MAP_FIXED }),
    );
    expect(e.errno).toBe("EINVAL");
    expect(e.message).toContain("not page aligned");
  });
});

describe("munmap", () => {
  it("rejects an unaligned start with EINVAL and unmaps nothing", () => {
    const { m, p, mm } = setup();
    const a = mmapPrivate(p, 4 * PAGE);
    p.writeStamp(a, 4 * PAGE, 1);
    const e = thrown(() => mm.munmap(a + 12, 2 * PAGE));
    expect(e.errno).toBe("EINVAL");
    expect(e.message).toContain("not page aligned");
    expect(m.usedFrames).toBe(4);
    expect(p.readPageHash(a + PAGE)).toBe(stampToken(1));
  });

  it("rejects a zero length with EINVAL", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 4 * PAGE);
    const e = thrown(() => mm.munmap(a, 0));
    expect(e.errno).toBe("EINVAL");
    expect(e.message).toContain("length is 0");
    expect(mm.vmas.size).toBe(1);
  });

  it("unmaps across holes without an error", () => {
    const { m, mm, a } = withHole();
    mm.munmap(a - 4 * PAGE, 20 * PAGE);
    expect(mm.vmas.size).toBe(0);
    expect(m.usedFrames).toBe(0);
  });

  it("succeeds on a range where nothing is mapped", () => {
    const { mm } = setup();
    expect(() => mm.munmap(0x4000_0000, 16 * PAGE)).not.toThrow();
  });

  it("rounds a partial-page length up, unmapping the whole last page", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 4 * PAGE);
    mm.munmap(a, PAGE + 1);
    expect(mm.findVma(a + PAGE)).toBeNull();
    expect(mm.findVma(a + 2 * PAGE)).not.toBeNull();
  });

  it("punches a hole into the middle of a VMA, leaving both ends mapped", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 6 * PAGE);
    p.writeStamp(a, 6 * PAGE, 4);
    mm.munmap(a + 2 * PAGE, 2 * PAGE);
    expect(mm.vmas.toArray().map((v) => [v.start, v.end])).toEqual([
      [a, a + 2 * PAGE],
      [a + 4 * PAGE, a + 6 * PAGE],
    ]);
    expect(() => p.readPageHash(a + 2 * PAGE)).toThrow(SegvError);
    expect(p.readPageHash(a + 5 * PAGE)).toBe(stampToken(4));
  });
});

describe("mprotect", () => {
  it("rejects an unaligned start with EINVAL and changes nothing", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 4 * PAGE);
    const e = thrown(() => mm.mprotect(a + 100, PAGE, PROT_READ));
    expect(e.errno).toBe("EINVAL");
    expect(e.message).toContain("mprotect");
    expect(e.message).toContain("not page aligned");
    expect(mm.vmas.size).toBe(1);
    expect(mm.findVma(a)!.prot).toBe(RW);
  });

  it("does nothing and succeeds for a zero length, even where nothing is mapped", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 4 * PAGE);
    expect(() => mm.mprotect(a, 0, PROT_NONE)).not.toThrow();
    expect(() => mm.mprotect(0x1000_0000, 0, PROT_NONE)).not.toThrow();
    expect(mm.findVma(a)!.prot).toBe(RW);
  });

  it("fails with ENOMEM at a hole after changing the part before it", () => {
    const { p, mm, a } = withHole();
    const e = thrown(() => mm.mprotect(a, 10 * PAGE, PROT_READ));
    expect(e.errno).toBe("ENOMEM");
    expect(e.message).toContain("hole");
    expect(mm.findVma(a)!.prot).toBe(PROT_READ);
    expect(mm.findVma(a + 6 * PAGE)!.prot).toBe(RW);
    expect(() => p.writeStamp(a, PAGE, 9)).toThrow(SegvError);
    p.writeStamp(a + 6 * PAGE, PAGE, 9);
  });

  it("fails with ENOMEM without changing anything when the range starts in a hole", () => {
    const { mm, a } = withHole();
    const e = thrown(() => mm.mprotect(a + 4 * PAGE, 6 * PAGE, PROT_READ));
    expect(e.errno).toBe("ENOMEM");
    expect(e.message).toContain("not mapped");
    expect(mm.findVma(a + 6 * PAGE)!.prot).toBe(RW);
  });

  it("fails with ENOMEM after changing everything when the range runs past the last VMA", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 4 * PAGE);
    const e = thrown(() => mm.mprotect(a, 8 * PAGE, PROT_READ));
    expect(e.errno).toBe("ENOMEM");
    expect(mm.findVma(a + 3 * PAGE)!.prot).toBe(PROT_READ);
  });

  it("merges the changed part with a neighbour of the same protection even when it then fails", () => {
    const { p, mm } = setup();
    // [a, a+2p) r, [a+2p, a+4p) rw, hole, [a+6p, a+8p) rw
    const a = mmapPrivate(p, 8 * PAGE);
    mm.munmap(a + 4 * PAGE, 2 * PAGE);
    mm.mprotect(a, 2 * PAGE, PROT_READ);
    expect(mm.vmas.size).toBe(3);
    expect(() => mm.mprotect(a + 2 * PAGE, 6 * PAGE, PROT_READ)).toThrow(MmError);
    // Like mprotect_fixup, the changed VMA merged with its predecessor before the hole was found.
    expect(mm.vmas.toArray().map((v) => [v.start, v.end, v.prot])).toEqual([
      [a, a + 4 * PAGE, PROT_READ],
      [a + 6 * PAGE, a + 8 * PAGE, RW],
    ]);
  });
});

describe("madvise", () => {
  it("rejects an unaligned start with EINVAL and zaps nothing", () => {
    const { m, p, mm } = setup();
    const a = mmapPrivate(p, 4 * PAGE);
    p.writeStamp(a, 4 * PAGE, 1);
    const e = thrown(() => mm.madvise(a + 8, 2 * PAGE, MADV_DONTNEED));
    expect(e.errno).toBe("EINVAL");
    expect(e.message).toContain("madvise");
    expect(m.usedFrames).toBe(4);
    expect(p.readPageHash(a)).toBe(stampToken(1));
  });

  it("does nothing and succeeds for a zero length", () => {
    const { m, p, mm } = setup();
    const a = mmapPrivate(p, 4 * PAGE);
    p.writeStamp(a, 4 * PAGE, 1);
    expect(() => mm.madvise(a, 0, MADV_DONTNEED)).not.toThrow();
    expect(m.usedFrames).toBe(4);
  });

  it("rejects unknown advice with EINVAL", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, PAGE);
    const e = thrown(() => mm.madvise(a, PAGE, 12345));
    expect(e.errno).toBe("EINVAL");
    expect(e.message).toContain("advice");
  });

  it("MADV_DONTNEED over a hole zaps every mapped part and then fails with ENOMEM", () => {
    const { m, p, mm, a } = withHole();
    const e = thrown(() => mm.madvise(a, 10 * PAGE, MADV_DONTNEED));
    expect(e.errno).toBe("ENOMEM");
    expect(e.message).toContain("unmapped");
    expect(m.usedFrames).toBe(0);
    expect(p.readPageHash(a + 3 * PAGE)).toBe(0);
    expect(p.readPageHash(a + 6 * PAGE)).toBe(0);
    expect(mm.vmas.size).toBe(2);
  });

  it("MADV_DONTNEED starting in a hole still zaps the mapping after it", () => {
    const { m, mm, a } = withHole();
    expect(() => mm.madvise(a + 4 * PAGE, 6 * PAGE, MADV_DONTNEED)).toThrow(/ENOMEM/);
    expect(m.usedFrames).toBe(4);
  });

  it("MADV_HUGEPAGE over a hole advises both mapped parts and fails with ENOMEM", () => {
    const { mm, a } = withHole();
    expect(thrown(() => mm.madvise(a, 10 * PAGE, MADV_HUGEPAGE)).errno).toBe("ENOMEM");
    expect(mm.findVma(a)!.thpAdvice).toBe(THP_ADVICE_HUGEPAGE);
    expect(mm.findVma(a + 6 * PAGE)!.thpAdvice).toBe(THP_ADVICE_HUGEPAGE);
  });

  it("MADV_HUGEPAGE on part of a VMA records the advice on that part only", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 8 * PAGE);
    mm.madvise(a + 2 * PAGE, 2 * PAGE, MADV_HUGEPAGE);
    expect(mm.vmas.toArray().map((v) => v.thpAdvice)).toEqual([
      THP_ADVICE_NONE,
      THP_ADVICE_HUGEPAGE,
      THP_ADVICE_NONE,
    ]);
  });
});

describe("an exited address space", () => {
  it("refuses every syscall with EINVAL", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, PAGE);
    p.exit();
    for (const call of [
      () => mm.mmap({ length: PAGE, prot: RW, flags: PRIVATE }),
      () => mm.munmap(a, PAGE),
      () => mm.mprotect(a, PAGE, PROT_READ),
      () => mm.madvise(a, PAGE, MADV_DONTNEED),
    ]) {
      const e = thrown(call);
      expect(e.errno).toBe("EINVAL");
      expect(e.code).toBe("MM_EXITED");
    }
  });
});
