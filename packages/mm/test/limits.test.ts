import { describe, expect, it } from "vitest";
import { MADV_HUGEPAGE, MAP_FIXED, Machine, type MachineConfig, PROT_READ } from "../src/index.js";
import { MiB, PAGE, PRIVATE, RW, thrown } from "./helpers.js";
import { machineState } from "./machine-state.js";

function setup(config: Partial<MachineConfig> = {}) {
  const m = new Machine({ memoryBytes: 16 * MiB, contentMode: "tag", ...config });
  const p = m.createProcess();
  return { m, p, mm: p.mm };
}

/** `n` one-page VMAs that cannot merge (a page of gap between each), from 0x1000_0000 up. */
function separateVmas(mm: ReturnType<typeof setup>["mm"], n: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const a = 0x1000_0000 + i * 2 * PAGE;
    out.push(mm.mmap({ addr: a, length: PAGE, prot: RW, flags: PRIVATE | MAP_FIXED }));
  }
  return out;
}

describe("vm.max_map_count", () => {
  it("mmap is ENOMEM once the address space has more than maxMapCount VMAs (do_mmap in Linux 6.18)", () => {
    const { m, mm } = setup({ maxMapCount: 4 });
    // do_mmap tests map_count > max before adding one, so max + 1 VMAs can exist.
    separateVmas(mm, 5);
    expect(mm.vmas.size).toBe(5);
    const before = machineState(m);
    const e = thrown(() => mm.mmap({ length: PAGE, prot: RW, flags: PRIVATE }));
    expect(e.errno).toBe("ENOMEM");
    expect(e.code).toBe("MAP_COUNT");
    expect(e.message).toContain("vm.max_map_count is 4 (MachineConfig.maxMapCount)");
    expect(machineState(m)).toBe(before);
  });

  it("munmap punching a hole into a VMA is ENOMEM at the limit; unmapping whole VMAs still works", () => {
    const { m, mm } = setup({ maxMapCount: 3 });
    const big = mm.mmap({ addr: 0x2000_0000, length: 8 * PAGE, prot: RW, flags: PRIVATE | MAP_FIXED });
    const [a, b] = separateVmas(mm, 2);
    expect(mm.vmas.size).toBe(3);
    const before = machineState(m);
    expect(thrown(() => mm.munmap(big + 2 * PAGE, PAGE)).errno).toBe("ENOMEM");
    expect(machineState(m)).toBe(before);
    // Trimming an end splits nothing off; unmapping a whole VMA lowers the count.
    mm.munmap(big, PAGE);
    mm.munmap(a, PAGE);
    expect(mm.vmas.size).toBe(2);
    mm.munmap(big + 2 * PAGE, PAGE);
    expect(mm.vmas.size).toBe(3);
    expect(mm.findVma(b)).not.toBeNull();
  });

  it("mprotect and madvise that would split a VMA past the limit are ENOMEM", () => {
    const { mm } = setup({ maxMapCount: 2 });
    const big = mm.mmap({ addr: 0x2000_0000, length: 8 * PAGE, prot: RW, flags: PRIVATE | MAP_FIXED });
    separateVmas(mm, 1);
    const e = thrown(() => mm.mprotect(big + 2 * PAGE, PAGE, PROT_READ));
    expect(e.errno).toBe("ENOMEM");
    expect(e.message).toContain("mprotect:");
    expect(mm.findVma(big + 2 * PAGE)!.prot).toBe(RW);
    expect(thrown(() => mm.madvise(big + 2 * PAGE, PAGE, MADV_HUGEPAGE)).message).toContain("madvise:");
    // A change to a whole VMA splits nothing.
    mm.mprotect(big, 8 * PAGE, PROT_READ);
    expect(mm.findVma(big)!.prot).toBe(PROT_READ);
  });

  it("the default limit is Linux's 65530", () => {
    const { m } = setup();
    expect(m.config.maxMapCount).toBe(65530);
  });
});

describe("vm.mmap_min_addr", () => {
  it("MAP_FIXED at address 0 or below mmapMinAddr is EPERM, as for a process without CAP_SYS_RAWIO", () => {
    const { m, mm } = setup();
    const before = machineState(m);
    for (const addr of [0, PAGE, 0xf000]) {
      const e = thrown(() => mm.mmap({ addr, length: PAGE, prot: RW, flags: PRIVATE | MAP_FIXED }));
      expect(e.errno).toBe("EPERM");
      expect(e.message).toContain("vm.mmap_min_addr (0x1_0000; MachineConfig.mmapMinAddr)");
    }
    expect(machineState(m)).toBe(before);
    expect(mm.mmap({ addr: 0x10000, length: PAGE, prot: RW, flags: PRIVATE | MAP_FIXED })).toBe(0x10000);
  });

  it("a hint below mmapMinAddr is raised to it (round_hint_to_min)", () => {
    const { mm } = setup();
    expect(mm.mmap({ addr: 0x3000, length: PAGE, prot: RW, flags: PRIVATE })).toBe(0x10000);
  });

  it("mmapMinAddr is a Machine option: 0 allows MAP_FIXED at address 0", () => {
    const { mm } = setup({ mmapMinAddr: 0 });
    expect(mm.mmap({ addr: 0, length: PAGE, prot: RW, flags: PRIVATE | MAP_FIXED })).toBe(0);
  });
});
