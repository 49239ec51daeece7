import { describe, expect, it } from "vitest";
import { main } from "../src/main.js";

describe("mm-demo example", () => {
  it("shows zero-page reads, COW after fork, a THP, a device mirror and leaks nothing", () => {
    const lines: string[] = [];
    main((l) => lines.push(l));
    const text = lines.join("\n");
    expect(text).toContain("read 8 pages:   8 faults");
    expect(text).toContain("child writes page 0: 1 copy; parent still reads its own data: true");
    expect(text).toContain("reused in place (1 reuse, no copy)");
    expect(text).toContain("writing 2 MiB took 1 fault (1 THP allocated)");
    expect(text).toMatch(/invalidate \[0x[0-9a-f_]+, 0x[0-9a-f_]+\) PROTECTION_VMA/);
    expect(text).toMatch(/invalidate \[0x[0-9a-f_]+, 0x[0-9a-f_]+\) UNMAP/);
    const digests = [...text.matchAll(/digest[^:]*: ([0-9a-f]{16}:\d+)/g)].map((m) => m[1]);
    expect(digests).toHaveLength(2);
    expect(digests[0]).toBe(digests[1]);
    expect(text).toContain("exit: 0 frames in use, 0 device frames in use");
  });
});
