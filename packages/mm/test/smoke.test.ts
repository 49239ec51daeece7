import { describe, expect, it } from "vitest";
import { MAP_ANONYMOUS, MAP_PRIVATE, Machine, PROT_READ, PROT_WRITE } from "../src/index.js";

describe("mm smoke", () => {
  it("a private page written before fork is copied on the child's write", () => {
    const m = new Machine({ memoryBytes: 64 << 20 });
    const p = m.createProcess();
    const a = p.mm.mmap({ length: 16384, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
    p.write(a, new Uint8Array([1, 2, 3]));
    const c = p.fork();
    c.write(a, new Uint8Array([9]));
    expect(Array.from(p.read(a, 3))).toEqual([1, 2, 3]);
    expect(Array.from(c.read(a, 3))).toEqual([9, 2, 3]);
    expect(m.stats.cowCopies).toBe(1);
    c.exit();
    p.exit();
    expect(m.usedFrames).toBe(0);
  });
});
