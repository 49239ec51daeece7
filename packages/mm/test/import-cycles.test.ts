import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

/** Every .ts file under `dir`. */
function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sources(p));
    else if (name.endsWith(".ts")) out.push(p);
  }
  return out;
}

// Static imports and re-exports of relative modules, type-only ones included (a type cycle is
// still two modules that cannot be understood one without the other), and side-effect imports.
const IMPORT = /^\s*(?:import|export)\s+(?:type\s+)?(?:[^;"']*?\s+from\s+)?["'](\.{1,2}\/[^"']+)["']/gm;

/** file -> the files it imports, for every file of every packages/<pkg>/src. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const pkg of readdirSync(join(ROOT, "packages"))) {
    const src = join(ROOT, "packages", pkg, "src");
    if (!statSync(join(ROOT, "packages", pkg)).isDirectory()) continue;
    let files: string[];
    try {
      files = sources(src);
    } catch {
      continue;
    }
    for (const f of files) {
      const deps: string[] = [];
      for (const m of readFileSync(f, "utf8").matchAll(IMPORT)) {
        deps.push(resolve(dirname(f), m[1]).replace(/\.js$/, ".ts"));
      }
      graph.set(f, deps);
    }
  }
  return graph;
}

/** The strongly connected components with more than one file, or a file importing itself (Tarjan). */
function cycles(graph: Map<string, string[]>): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next);
    next++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) out.push(scc.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return out;
}

describe("module graph of packages/*/src", () => {
  it("the cycle finder reports a cycle through type-only imports and none in a chain", () => {
    const g = new Map([
      ["a", ["b"]],
      ["b", ["c"]],
      ["c", ["a"]],
      ["d", ["a"]],
    ]);
    expect(cycles(g)).toEqual([["a", "b", "c"]]);
    expect(
      cycles(
        new Map([
          ["a", ["b"]],
          ["b", []],
        ]),
      ),
    ).toEqual([]);
    const text =
      'import type { Mm } from "./mm.js";\nexport * from "./x.js";\nimport "./y.js";\nimport { z } from "zod";';
    expect([...text.matchAll(IMPORT)].map((m) => m[1])).toEqual(["./mm.js", "./x.js", "./y.js"]);
  });

  it("has no import cycle between files (modules take MmStruct / MachineState from types.ts, not mm.ts or machine.ts)", () => {
    const graph = importGraph();
    expect(graph.size).toBeGreaterThan(40);
    const found = cycles(graph).map((c) => c.map((f) => relative(ROOT, f)).join(" <-> "));
    expect(found).toEqual([]);
  });
});
