/**
 * Strict parser of the mmoracle scenario language. The oracle itself reads its input loosely
 * (strtod sizes, any unknown protection meaning PROT_NONE), so a typo silently runs a different
 * scenario; here every token is checked and a bad line is an error naming the file, the line
 * and what is wrong with it.
 */

/** Protection of an `mmap` / `mprotect` line: "rw", "r" or "none". */
export type ProtName = "rw" | "r" | "none";
/** Advice of a `madvise` line. */
export type AdviceName = "dontneed" | "hugepage" | "nohugepage" | "free" | "cold" | "pageout" | "collapse";

/** One parsed scenario line (the `c ` prefix is in `child`). */
export type ScenarioOp =
  | { op: "mmap"; region: string; size: number; prot: ProtName; shared: boolean; huge: boolean }
  | { op: "touch"; region: string; off: number; len: number; write: boolean }
  | { op: "mprotect"; region: string; off: number; len: number; prot: ProtName }
  | { op: "munmap"; region: string; off: number; len: number }
  | { op: "madvise"; region: string; off: number; len: number; advice: AdviceName }
  | {
      op: "mremap";
      region: string;
      off: number;
      oldLen: number;
      newLen: number;
      maymove: boolean;
      dontunmap: boolean;
      /** `fixed R2 OFF2`: the destination region and offset. */
      fixed: { region: string; off: number } | null;
    }
  | { op: "fork" }
  | { op: "exit" }
  | { op: "dump"; region: string };

/** A scenario line that does not parse: `file:line: what is wrong`. */
export class ScenarioSyntaxError extends Error {
  override name = "ScenarioSyntaxError";
  constructor(
    readonly file: string,
    readonly line: number,
    readonly what: string,
  ) {
    super(`${file}:${line}: ${what}`);
  }
}

/** What is wrong with one line (the runner adds the file and line: ScenarioSyntaxError). */
export class LineError extends Error {
  override name = "LineError";
}

const ADVICE: readonly AdviceName[] = [
  "dontneed",
  "hugepage",
  "nohugepage",
  "free",
  "cold",
  "pageout",
  "collapse",
];
const PROTS: readonly ProtName[] = ["rw", "r", "none"];
const SIZE = /^(\d+)([KMG]?)$/i;
const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,30}$/;
/** Sizes and offsets above this (128 TiB, the user address space) cannot name anything. */
const MAX_SIZE = 2 ** 47;

/**
 * A size or offset: decimal digits with an optional K, M or G suffix (KiB, MiB, GiB). Throws a
 * message naming `what` and the token for anything else (signs, fractions, other suffixes).
 */
export function parseSizeToken(token: string, what: string): number {
  const m = SIZE.exec(token);
  if (m === null) {
    throw new LineError(
      `${what} '${token}' is not a size (decimal digits with an optional K, M or G suffix, e.g. 4K or 2M)`,
    );
  }
  const unit = m[2].toUpperCase();
  const v = Number(m[1]) * (unit === "K" ? 1024 : unit === "M" ? 1024 ** 2 : unit === "G" ? 1024 ** 3 : 1);
  if (!Number.isSafeInteger(v) || v > MAX_SIZE) throw new LineError(`${what} '${token}' is larger than 128T`);
  return v;
}

function regionName(token: string | undefined, what: string): string {
  if (token === undefined) throw new LineError(`missing ${what}`);
  if (!NAME.test(token)) {
    throw new LineError(
      `${what} '${token}' is not a region name (a letter or _, then letters, digits or _, at most 31)`,
    );
  }
  return token;
}

function prot(token: string | undefined): ProtName {
  if (token === undefined) throw new LineError("missing protection (rw, r or none)");
  if (!(PROTS as readonly string[]).includes(token))
    throw new LineError(`protection '${token}' is not one of rw, r, none`);
  return token as ProtName;
}

function arity(t: string[], n: number, usage: string): void {
  if (t.length < n) throw new LineError(`too few arguments: usage: ${usage}`);
  if (t.length > n) throw new LineError(`unexpected '${t[n]}': usage: ${usage}`);
}

function size(t: string[], i: number, what: string, usage: string): number {
  const tok = t[i];
  if (tok === undefined) throw new LineError(`missing ${what}: usage: ${usage}`);
  return parseSizeToken(tok, what);
}

const USAGE = {
  mmap: "mmap R SIZE [rw|r|none] [shared] [huge]",
  touch: "touch R OFF LEN r|w",
  mprotect: "mprotect R OFF LEN rw|r|none",
  munmap: "munmap R OFF LEN",
  madvise: `madvise R OFF LEN ${ADVICE.join("|")}`,
  mremap: "mremap R OLDOFF OLDLEN NEWLEN [maymove] [fixed R2 OFF2] [dontunmap]",
  dump: "dump R",
};

/** Parse the tokens of one op (without the `c ` prefix). Throws an Error saying what is wrong. */
export function parseOp(t: string[]): ScenarioOp {
  const op = t[0];
  switch (op) {
    case "mmap": {
      if (t.length < 3) throw new LineError(`too few arguments: usage: ${USAGE.mmap}`);
      const region = regionName(t[1], "region");
      const sz = size(t, 2, "size", USAGE.mmap);
      if (sz === 0) throw new LineError("size is 0");
      let p: ProtName | null = null;
      let shared = false;
      let huge = false;
      for (const o of t.slice(3)) {
        if (o === "shared" && !shared) shared = true;
        else if (o === "huge" && !huge) huge = true;
        else if ((PROTS as readonly string[]).includes(o) && p === null) p = o as ProtName;
        else if (o === "shared" || o === "huge" || (PROTS as readonly string[]).includes(o))
          throw new LineError(`option '${o}' given twice (or two protections)`);
        else throw new LineError(`unknown mmap option '${o}': usage: ${USAGE.mmap}`);
      }
      return { op, region, size: sz, prot: p ?? "rw", shared, huge };
    }
    case "touch": {
      arity(t, 5, USAGE.touch);
      const region = regionName(t[1], "region");
      const off = size(t, 2, "offset", USAGE.touch);
      const len = size(t, 3, "length", USAGE.touch);
      if (t[4] !== "r" && t[4] !== "w") throw new LineError(`access '${t[4]}' is not r or w`);
      return { op, region, off, len, write: t[4] === "w" };
    }
    case "mprotect": {
      arity(t, 5, USAGE.mprotect);
      const region = regionName(t[1], "region");
      return {
        op,
        region,
        off: size(t, 2, "offset", USAGE.mprotect),
        len: size(t, 3, "length", USAGE.mprotect),
        prot: prot(t[4]),
      };
    }
    case "munmap": {
      arity(t, 4, USAGE.munmap);
      const region = regionName(t[1], "region");
      return { op, region, off: size(t, 2, "offset", USAGE.munmap), len: size(t, 3, "length", USAGE.munmap) };
    }
    case "madvise": {
      arity(t, 5, USAGE.madvise);
      const region = regionName(t[1], "region");
      const off = size(t, 2, "offset", USAGE.madvise);
      const len = size(t, 3, "length", USAGE.madvise);
      if (!(ADVICE as readonly string[]).includes(t[4]))
        throw new LineError(`advice '${t[4]}' is not one of ${ADVICE.join(", ")}`);
      return { op, region, off, len, advice: t[4] as AdviceName };
    }
    case "mremap": {
      if (t.length < 5) throw new LineError(`too few arguments: usage: ${USAGE.mremap}`);
      const region = regionName(t[1], "region");
      const off = size(t, 2, "old offset", USAGE.mremap);
      const oldLen = size(t, 3, "old length", USAGE.mremap);
      const newLen = size(t, 4, "new length", USAGE.mremap);
      let maymove = false;
      let dontunmap = false;
      let fixed: { region: string; off: number } | null = null;
      for (let i = 5; i < t.length; i++) {
        const o = t[i];
        if (o === "maymove" && !maymove) maymove = true;
        else if (o === "dontunmap" && !dontunmap) dontunmap = true;
        else if (o === "fixed" && fixed === null) {
          if (t[i + 2] === undefined)
            throw new LineError(`'fixed' needs a region and an offset: usage: ${USAGE.mremap}`);
          fixed = {
            region: regionName(t[i + 1], "fixed region"),
            off: parseSizeToken(t[i + 2], "fixed offset"),
          };
          i += 2;
        } else if (o === "maymove" || o === "dontunmap" || o === "fixed")
          throw new LineError(`option '${o}' given twice`);
        else throw new LineError(`unknown mremap option '${o}': usage: ${USAGE.mremap}`);
      }
      return { op, region, off, oldLen, newLen, maymove, dontunmap, fixed };
    }
    case "fork":
    case "exit":
      arity(t, 1, op);
      return { op };
    case "dump":
      arity(t, 2, USAGE.dump);
      return { op, region: regionName(t[1], "region") };
    default:
      throw new LineError(
        `unknown op '${op}' (expected mmap, touch, mprotect, munmap, madvise, mremap, fork, exit, dump, or c followed by an op)`,
      );
  }
}

/** A scenario line split into tokens, with its line number and whether it runs in the child. */
export interface ScenarioLine {
  line: number;
  child: boolean;
  tokens: string[];
}

/** The non-empty lines of `text` with `#` comments removed, tokenized. */
export function scenarioLines(text: string): ScenarioLine[] {
  const out: ScenarioLine[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    let s = lines[i];
    const hash = s.indexOf("#");
    if (hash >= 0) s = s.slice(0, hash);
    const tokens = s.split(/[ \t\r]+/).filter((x) => x.length > 0);
    if (tokens.length === 0) continue;
    const child = tokens[0] === "c";
    out.push({ line: i + 1, child, tokens: child ? tokens.slice(1) : tokens });
  }
  return out;
}
