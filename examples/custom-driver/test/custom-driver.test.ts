import { describe, expect, it } from "vitest";
import { main } from "../src/main.js";

describe("custom-driver example", () => {
  it("registers the plugin, fills the TLB per PTE, loses half on munmap, runs device accesses and leaks nothing", () => {
    const lines: string[] = [];
    main((l) => lines.push(l));
    // The CPU wrote the first page; the device fault populates the other 15.
    expect(lines[0]).toMatch(/16 pages reported, 15 CPU faults/);
    expect(lines[1]).toBe("TLB holds 16 entries (callback mode: per-pte)");
    expect(lines[2]).toBe("after munmap of the second half: 8 entries");
    expect(lines[3]).toContain('"hello from the CPU"');
    expect(lines[4]).toBe(
      "device ran 16 accesses: 16 translation hits, 9 misses, 1 fault batch, 0 to device memory, 16 remote",
    );
    expect(lines[5]).toBe("after exit: 0 frames in use, 0 device frames in use");
  });
});
