import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parseArgs } from "../src/args.js";
import { DESIGNS } from "../src/designs.js";
import { compare, main } from "../src/main.js";
import { DIGEST_ROW, ROWS } from "../src/table.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));

function run(argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = main(
    argv,
    (l) => out.push(l),
    (l) => err.push(l),
  );
  return { code, out, err };
}

describe("compare-designs example", () => {
  it("prints one table per workload with every counter row, and every design's digest agrees", () => {
    const { code, out, err } = run(["--size=512KiB", "stream", "pingpong:rounds=2", "thp:size=2MiB"]);
    expect(err).toEqual([]);
    expect(code).toBe(0);
    const text = out.join("\n");
    for (const d of DESIGNS) expect(text).toContain(`  ${d.name}: `);
    // The three tables, each headed by its normalized spec.
    const heads = out.filter((l) => /^\w+:size=.*\(digest [0-9a-f]{16}:\d+\)$/.test(l));
    expect(heads.map((l) => l.split(":")[0])).toEqual(["stream", "pingpong", "thp"]);
    for (const row of [...ROWS.map((r) => r.label), DIGEST_ROW]) {
      const lines = out.filter((l) => l.startsWith(`${row}  `));
      expect(lines, row).toHaveLength(3);
    }
    for (const l of out.filter((x) => x.startsWith(DIGEST_ROW)))
      expect(l.slice(DIGEST_ROW.length).trim().split(/\s+/)).toEqual(DESIGNS.map(() => "yes"));
    expect(text).toContain("every design gave the same final memory on every workload");
  });

  it("the runs behind the table are clean and agree, and the designs really differ", () => {
    const c = compare(["random:size=512KiB,accesses=512"], ["gpu", "iotlb", "iotlb-odp", "legacy"], 3);
    expect(c.agree).toBe(true);
    expect(c.designs).toEqual(["gpu", "iotlb", "iotlb-odp", "legacy"]);
    const [gpuRun, tlb, odp, legacy] = c.runs[0].reports;
    for (const r of c.runs[0].reports) expect(r.ok).toBe(true);
    expect(odp.digest).toBe(tlb.digest);
    expect(gpuRun.digest).toBe(tlb.digest);
    expect(legacy.digest).toBe(tlb.digest);
    expect(gpuRun.deviceStats.migratedToDevice).toBeGreaterThan(0);
    expect(tlb.deviceStats.migratedToDevice).toBe(0);
    expect(odp.deviceStats.deviceFaults).toBeLessThan(tlb.deviceStats.deviceFaults);
    expect(odp.deviceStats.prefetchedPages).toBeGreaterThan(0);
  });

  it("sizes: a bare kind gets --size (default 1MiB, thp 2MiB); an explicit size key wins", () => {
    expect(parseArgs([]).specs.map((s) => s.split(",")[0])).toEqual([
      "stream:size=1MiB",
      "random:size=1MiB",
      "pingpong:size=1MiB",
      "thp:size=2MiB",
    ]);
    expect(parseArgs(["--size=4MiB", "stream:passes=2", "random:size=64KiB", "oversub"]).specs).toEqual([
      "stream:size=4MiB,passes=2,write=0,cpu=0,init=1,wave=0",
      "random:size=64KiB,accesses=4096,passes=1,write=0.25,cpu=0,init=1,wave=0",
      "oversub:factor=1.5,passes=2,write=0.5,wave=0",
    ]);
    // `pnpm start -- ...` passes a lone "--" through.
    expect(parseArgs(["--", "--seed=4", "fork"])).toMatchObject({
      seed: 4,
      specs: [expect.stringMatching(/^fork:size=1MiB,/)],
    });
  });

  it.each([
    [["--size=3KiB"], "must be a size: a positive multiple of 4 KiB"],
    [["--size=lots"], "--size: 'lots' is not a size"],
    [["strem"], "unknown kind 'strem' (did you mean 'stream'?)"],
    [["stream:pases=2"], "unknown key 'pases' for kind 'stream' (did you mean 'passes'?)"],
    [["--seed=-1"], "--seed: '-1' is not an integer from 0 to 4294967295"],
    [["--content=paper"], "--content: 'paper' is not tag or bytes"],
    [["--designs=iotlb,quantum"], "--designs: unknown design 'quantum'"],
    [["--verbose"], "unknown option '--verbose'"],
  ])("bad input %j exits with 2 and says what was wrong", (argv, message) => {
    const { code, out, err } = run(argv);
    expect(code).toBe(2);
    expect(out).toEqual([]);
    expect(err[0]).toMatch(/^compare-designs: /);
    expect(err[0]).toContain(message);
    expect(err.join("\n")).not.toMatch(/\n\s+at /);
  });

  it("the command itself exits with code 2 and no stack trace on bad input", () => {
    const tsx = `${ROOT}node_modules/.bin/tsx`;
    const r = spawnSync(
      tsx,
      [
        "--tsconfig",
        "tsconfig.base.json",
        "--conditions=@hmmkit/source",
        "examples/compare-designs/src/main.ts",
        "--size=3KiB",
      ],
      { cwd: ROOT, encoding: "utf8" },
    );
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^compare-designs: EINVAL: workload spec "stream:size=3KiB"/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(r.stdout).toBe("");
  });
});
