import { describe, expect, it } from "vitest";
import {
  Machine,
  MIGRATE_PFN_MIGRATE,
  MIGRATE_PFN_VALID,
  MIGRATE_VMA_SELECT_SYSTEM,
  MigrateVma,
  type Mm,
  migrateVmaFinalize,
  migrateVmaPages,
  migrateVmaSetup,
} from "../src/index.js";
import { expectNoFrameReferenced, mmapPrivate, PAGE } from "./helpers.js";

/** migrate_vma of [start, end) with a fresh zero-filled system frame as every destination. */
function migrateIntoSystemFrames(mm: Mm, start: number, end: number): number {
  const pool = mm.machine.pool;
  const args = new MigrateVma(mm, start, end, 0, MIGRATE_VMA_SELECT_SYSTEM);
  migrateVmaSetup(args);
  for (let i = 0; i < args.npages; i++) {
    if (!(args.srcFlags[i] & MIGRATE_PFN_MIGRATE)) continue;
    const dst = pool.allocPage();
    pool.content.zero(dst);
    args.dst[i] = dst;
    args.dstFlags[i] = MIGRATE_PFN_VALID;
  }
  migrateVmaPages(args);
  migrateVmaFinalize(args);
  return args.cpages;
}

function pattern(n: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (seed + i * 31) & 255);
}

describe("anon_vma preparation on every path that populates anonymous memory", () => {
  it("migrate_vma inserting into holes of a never-faulted VMA gives the VMA an anon_vma", () => {
    const m = new Machine({ contentMode: "bytes" });
    const p = m.createProcess();
    const a = mmapPrivate(p, 4 * PAGE);
    expect(p.mm.findVma(a)!.anonVma).toBe(0);
    expect(migrateIntoSystemFrames(p.mm, a, a + 4 * PAGE)).toBe(4);
    expect(p.mm.findVma(a)!.anonVma).not.toBe(0);
  });

  it("fork copies memory first populated by migration, so the child reads what the parent wrote", () => {
    const m = new Machine({ contentMode: "bytes" });
    const p = m.createProcess();
    const a = mmapPrivate(p, 4 * PAGE);
    migrateIntoSystemFrames(p.mm, a, a + 4 * PAGE);
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
    migrateIntoSystemFrames(p.mm, a, a + 2 * PAGE);
    p.writeStamp(a, 2 * PAGE, 1234);
    const want = p.readPageHash(a);
    expect(want).not.toBe(0);
    const c = p.fork();
    expect(c.readPageHash(a)).toBe(want);
    expect(c.readPageHash(a + PAGE)).toBe(want);
  });
});
