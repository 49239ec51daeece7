import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parseSize, runScenario, ScenarioSyntaxError } from "../src/index.js";

const config = { memoryBytes: 64 * 1024 ** 2, thp: "madvise" as const, zeroPage: true };

/** Run `text` and return the syntax error it stops with, and the lines printed before it. */
function syntaxError(text: string, file = "t.mm"): { err: ScenarioSyntaxError; printed: string[] } {
  const printed: string[] = [];
  try {
    runScenario(text, config, { file, onLine: (l) => printed.push(l) });
  } catch (e) {
    if (e instanceof ScenarioSyntaxError) return { err: e, printed };
    throw e;
  }
  throw new Error("expected a ScenarioSyntaxError");
}

describe("strict scenario parsing", () => {
  const bad: [string, string, RegExp][] = [
    [
      "a protection that is not rw, r or none",
      "mmap a 64K rwx",
      /protection 'rwx'|unknown mmap option 'rwx'/,
    ],
    ["an unknown advice", "mmap a 64K\nmadvise a 0 4K bogus", /advice 'bogus' is not one of/],
    ["a negative size", "mmap a 64K\ntouch a -4K 4K r", /offset '-4K' is not a size/],
    ["an unknown size suffix", "mmap a 16T", /size '16T' is not a size/],
    ["a fractional size", "mmap a 1.5K", /size '1.5K' is not a size/],
    ["a size above the address space", "mmap a 1048576G", /larger than 128T/],
    ["a zero mmap size", "mmap a 0", /size is 0/],
    ["an access that is not r or w", "mmap a 64K\ntouch a 0 4K x", /access 'x' is not r or w/],
    ["too many arguments", "mmap a 64K\nmunmap a 0 4K 4K", /unexpected '4K'/],
    ["too few arguments", "mmap a 64K\nmprotect a 0 4K", /too few arguments/],
    ["an unknown op", "mmap a 64K\nmlock a 0 4K", /unknown op 'mlock'/],
    ["an undefined region", "touch b 0 4K r", /no region named 'b'/],
    ["a region mapped twice", "mmap a 64K\nmmap a 64K", /already mapped/],
    ["a bad region name", "mmap 9a 64K", /not a region name/],
    ["a child op without a child", "mmap a 64K\nc touch a 0 4K r", /no child/],
    ["mmap in the child", "mmap a 64K\nfork\nc mmap b 64K", /only allowed in the parent/],
    ["mmap after fork", "mmap a 64K\nfork\nmmap b 64K", /only allowed before fork/],
    ["an unknown mremap option", "mmap a 64K\nmremap a 0 4K 8K move", /unknown mremap option 'move'/],
    [
      "fixed without its offset",
      "mmap a 64K\nmremap a 0 4K 4K maymove fixed a",
      /'fixed' needs a region and an offset/,
    ],
    ["an mremap option given twice", "mmap a 64K\nmremap a 0 4K 4K maymove maymove", /given twice/],
    ["a duplicate mmap option", "mmap a 64K huge huge", /given twice/],
    ["dump without a region", "dump", /too few arguments/],
  ];
  for (const [what, text, message] of bad) {
    it(`rejects ${what} with the file and line of the bad line`, () => {
      const { err } = syntaxError(`# title\n${text}\n`);
      const line = text.split("\n").length + 1;
      expect(err.file).toBe("t.mm");
      expect(err.line).toBe(line);
      expect(err.message).toMatch(new RegExp(`^t\\.mm:${line}: `));
      expect(err.what).toMatch(message);
    });
  }

  it("keeps the output of the lines before a bad line", () => {
    const { err, printed } = syntaxError("mmap a 64K\ntouch a 0 8K w\n\n# comment\ntouch a 0 4K q\n");
    expect(err.line).toBe(5);
    expect(printed).toEqual(["mmap a: ok", "touch a: ok faults 2"]);
  });

  it("accepts sizes with k, m and g suffixes in either case and rejects the rest", () => {
    expect(parseSize("4k")).toBe(4096);
    expect(parseSize("2M")).toBe(2 * 1024 ** 2);
    expect(parseSize("1g")).toBe(1024 ** 3);
    expect(parseSize("4096")).toBe(4096);
    for (const s of ["", "-1", "+4K", "4KB", "0x1000", "1e3", "K"])
      expect(() => parseSize(s), s).toThrow(/not a size/);
  });
});

const root = fileURLToPath(new URL("../../../", import.meta.url));
const tsx = join(root, "node_modules", ".bin", "tsx");
const cli = join(root, "packages", "mm", "src", "scenario", "cli.ts");

function runCli(args: string[], input: string) {
  return spawnSync(
    tsx,
    [
      "--tsconfig",
      join(root, "tsconfig.base.json"),
      "--conditions=@hmmkit/source",
      cli,
      "--linux-defaults",
      "--memory=64M",
      ...args,
    ],
    {
      input,
      encoding: "utf8",
      cwd: root,
    },
  );
}

describe("mm-scenario command", () => {
  it("exits 2 with '<stdin>:LINE: what' on a bad line read from stdin, no stack trace, earlier output printed", () => {
    const r = runCli([], "mmap a 64K\ntouch a 0 4K w\nmprotect a 0 4K rwx\ntouch a 0 4K r\n");
    expect(r.status).toBe(2);
    expect(r.stdout).toBe("mmap a: ok\ntouch a: ok faults 1\n");
    expect(r.stderr).toBe("<stdin>:3: protection 'rwx' is not one of rw, r, none\n");
  });

  it("reads a scenario file given as an argument and names it in errors", () => {
    const dir = mkdtempSync(join(tmpdir(), "mm-scenario-"));
    const file = join(dir, "bad.mm");
    writeFileSync(file, "# a scenario\nmmap a 64K\nmadvise a 0 4K bogus\n");
    const r = runCli([file], "");
    expect(r.status).toBe(2);
    expect(r.stdout).toBe("mmap a: ok\n");
    expect(r.stderr).toBe(
      `${file}:3: advice 'bogus' is not one of dontneed, hugepage, nohugepage, free, cold, pageout, collapse\n`,
    );
    expect(r.stderr).not.toMatch(/\bat .*\.ts:\d+/);
  });

  it("exits 0 and prints every line of a good scenario", () => {
    const r = runCli([], "mmap a 64K\ntouch a 0 64K w\nmadvise a 0 64K free\ndump a\n");
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(
      "mmap a: ok\ntouch a: ok faults 16\nmadvise a: ok\ndump p a [0,16) anon f0-f15 mc=1\nhuge p a 0\n",
    );
    expect(r.stderr).toBe("");
  });

  it("exits 2 on a bad option value", () => {
    const r = runCli(["--thp=sometimes"], "");
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--thp must be always, madvise or never, got 'sometimes'/);
  });
});
