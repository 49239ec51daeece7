import { describe, expect, it } from "vitest";
import { compareWithGolden, kernelMachineConfig, scenarioTitle } from "./golden-compare.js";

const base = ["mmap a: ok", "touch a: ok faults 4", "fork: ok"];

describe("compareWithGolden", () => {
  it("accepts identical outputs", () => {
    const out = [...base, "dump p a [0,4) anon f0-f3 mc=2", "huge p a 0"];
    expect(compareWithGolden(out, out)).toBeNull();
  });

  it("rejects a difference in a dump line", () => {
    const golden = [...base, "dump p a [0,4) anon f0-f3 mc=2"];
    const out = [...base, "dump p a [0,4) anon f0-f3 mc=1"];
    expect(compareWithGolden(golden, out)).toMatch(/^line 4: /);
  });

  it("rejects a difference in a huge line or a syscall result", () => {
    expect(compareWithGolden(["huge p a 2097152"], ["huge p a 0"])).not.toBeNull();
    expect(compareWithGolden(["munmap a: EINVAL"], ["munmap a: ok"])).not.toBeNull();
  });

  it("rejects a missing or an extra line", () => {
    expect(compareWithGolden(base, base.slice(0, 2))).toMatch(/output ended/);
    expect(compareWithGolden(base.slice(0, 2), base)).toMatch(/golden ended/);
  });

  it("lets the child's first touch after fork take one more fault in the golden, once per fork", () => {
    const golden = [...base, "c touch a: ok faults 2", "c touch a: ok faults 2"];
    expect(compareWithGolden(golden.slice(0, 4), [...base, "c touch a: ok faults 1"])).toBeNull();
    expect(compareWithGolden(golden, [...base, "c touch a: ok faults 1", "c touch a: ok faults 1"])).toMatch(
      /^line 5: /,
    );
    expect(compareWithGolden(golden.slice(0, 4), [...base, "c touch a: ok faults 0"])).not.toBeNull();
    const again = [...golden.slice(0, 4), "c exit: ok", "fork: ok", "c touch a: ok faults 2"];
    expect(
      compareWithGolden(again, [
        ...base,
        "c touch a: ok faults 1",
        "c exit: ok",
        "fork: ok",
        "c touch a: ok faults 1",
      ]),
    ).toBeNull();
  });

  it("does not let the parent's touches after fork take more faults in the golden", () => {
    expect(
      compareWithGolden([...base, "touch a: ok faults 2"], [...base, "touch a: ok faults 1"]),
    ).not.toBeNull();
  });

  it("lets a touch that ends in SIGSEGV take one more fault in the golden, but not fewer", () => {
    const g = ["touch a: segv at page 2 faults 3"];
    expect(compareWithGolden(g, ["touch a: segv at page 2 faults 2"])).toBeNull();
    expect(compareWithGolden(g, ["touch a: segv at page 2 faults 3"])).toBeNull();
    expect(compareWithGolden(g, ["touch a: segv at page 2 faults 1"])).not.toBeNull();
    expect(compareWithGolden(g, ["touch a: segv at page 2 faults 4"])).not.toBeNull();
    expect(compareWithGolden(g, ["touch a: segv at page 3 faults 3"])).not.toBeNull();
    expect(compareWithGolden(["touch a: ok faults 3"], ["touch a: ok faults 2"])).not.toBeNull();
  });

  it("adds both allowances for the child's first touch after fork when it ends in SIGSEGV", () => {
    const golden = [...base, "c touch a: segv at page 4 faults 3"];
    expect(compareWithGolden(golden, [...base, "c touch a: segv at page 4 faults 1"])).toBeNull();
    expect(compareWithGolden(golden, [...base, "c touch a: segv at page 4 faults 0"])).not.toBeNull();
  });
});

describe("golden scenario files", () => {
  it("take the title from the first comment line", () => {
    expect(scenarioTitle("# A write copies.\n# More detail.\nmmap a 4K\n")).toBe("A write copies.");
  });

  it("map kernel.json's settings onto the machine config", () => {
    const k = {
      uname: "x",
      thp: "madvise" as const,
      use_zero_page: 1,
      zero_page: false,
      fault_around_bytes: 65536,
    };
    expect(kernelMachineConfig(k)).toEqual({
      thp: "madvise",
      zeroPage: false,
      hugeZeroPage: true,
      faultAroundBytes: 65536,
    });
  });
});
