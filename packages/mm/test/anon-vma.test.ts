import { describe, expect, it } from "vitest";
import { Machine, PROT_NONE, PROT_READ, SegvError } from "../src/index.js";
import { expectNoFrameReferenced, mmapPrivate, PAGE, RW } from "./helpers.js";
import { migrateToSystemFrames } from "./shadow-model.js";

function pattern(n: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (seed + i * 31) & 255);
}

describe("anon_vma preparation on every path that populates anonymous memory", () => {
  it("migrate_vma inserting into holes of a never-faulted VMA gives the VMA an anon_vma", () => {
    const m = new Machine({ contentMode: "bytes" });
    const p = m.createProcess();
    const a = mmapPrivate(p, 4 * PAGE);
    expect(p.mm.findVma(a)!.anonVma).toBe(0);
    expect(migrateToSystemFrames(p.mm, a, a + 4 * PAGE)).toBe(4);
    expect(p.mm.findVma(a)!.anonVma).not.toBe(0);
  });

  it("fork copies memory first populated by migration, so the child reads what the parent wrote", () => {
    const m = new Machine({ contentMode: "bytes" });
    const p = m.createProcess();
    const a = mmapPrivate(p, 4 * PAGE);
    migrateToSystemFrames(p.mm, a, a + 4 * PAGE);
    const data = pattern(4 * PAGE, 7);
    p.write(a, data);
    const c = p.fork();
    expect(c.read(a, 4 * PAGE)).toEqual(data);
    // Copy-on-write still separates the two.
    c.write(a, pattern(PAGE, 99));
    expect(p.read(a, 4 * PAGE)).toEqual(data);
    c.exit();
    p.exit();
    expectNoFrameReferenced(m);
  });

  it("fork copies memory populated by migration in tag mode too (the page hash survives)", () => {
    const m = new Machine({ contentMode: "tag" });
    const p = m.createProcess();
    const a = mmapPrivate(p, 2 * PAGE);
    migrateToSystemFrames(p.mm, a, a + 2 * PAGE);
    p.writeStamp(a, 2 * PAGE, 1234);
    const want = p.readPageHash(a);
    expect(want).not.toBe(0);
    const c = p.fork();
    expect(c.readPageHash(a)).toBe(want);
    expect(c.readPageHash(a + PAGE)).toBe(want);
  });
});

describe("entries migrate_vma installs follow the VMA's protection", () => {
  it("a hole of a PROT_NONE mapping filled by migration stays inaccessible to the CPU", () => {
    const m = new Machine({ contentMode: "tag" });
    const p = m.createProcess();
    const a = mmapPrivate(p, 2 * PAGE, PROT_NONE);
    expect(migrateToSystemFrames(p.mm, a, a + 2 * PAGE)).toBe(2);
    expect(() => p.readPageHash(a)).toThrow(SegvError);
    expect(() => p.writeStamp(a + PAGE, PAGE, 1)).toThrow(SegvError);
  });

  it("a page migrated while its mapping is PROT_NONE comes back PROT_NONE, and readable after mprotect", () => {
    const m = new Machine({ contentMode: "tag" });
    const p = m.createProcess();
    const a = mmapPrivate(p, PAGE);
    p.writeStamp(a, PAGE, 9);
    const hash = p.readPageHash(a);
    p.mm.mprotect(a, PAGE, PROT_NONE);
    migrateToSystemFrames(p.mm, a, a + PAGE);
    expect(() => p.readPageHash(a)).toThrow(SegvError);
    p.mm.mprotect(a, PAGE, PROT_READ);
    expect(p.readPageHash(a)).toBe(hash);
    p.mm.mprotect(a, PAGE, RW);
  });
});
