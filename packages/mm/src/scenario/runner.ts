import {
  alignDown,
  HPAGE_PMD_SIZE,
  MADV_DONTNEED,
  MADV_HUGEPAGE,
  MADV_NOHUGEPAGE,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_NORESERVE,
  MAP_PRIVATE,
  MAP_SHARED,
  PAGE_SIZE,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
} from "../constants.js";
import { MmError } from "../errors.js";
import { Machine, type MachineConfig } from "../machine.js";
import type { Process } from "../process.js";
import { dumpRegion, FrameIds } from "./dump.js";

/**
 * Runs scenarios written in the mmoracle language on a simulated machine and prints what the
 * simulated kernel did in the mmoracle's output format, so the two outputs can be diffed:
 *
 *   mmap R SIZE [rw|r|none] [shared] [huge]   touch R OFF LEN r|w
 *   mprotect R OFF LEN rw|r|none   munmap R OFF LEN   madvise R OFF LEN dontneed|hugepage|nohugepage
 *   fork   c <op>   c exit   exit   dump R
 *
 * Regions are placed as the oracle places them: a PROT_NONE reservation of SIZE + 4 MiB, the
 * region MAP_FIXED at the first 2 MiB boundary at least one page into it, then MADV_HUGEPAGE
 * (`huge`) or MADV_NOHUGEPAGE.
 */

interface Region {
  name: string;
  addr: number;
  size: number;
}

/** strtod with K/M/G suffixes, as the oracle parses sizes and offsets. */
export function parseSize(s: string | undefined): number {
  if (s === undefined) return 0;
  const m = /^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)([a-zA-Z]?)/.exec(s);
  if (!m) return 0;
  let v = Number.parseFloat(m[1]);
  const suf = m[2];
  if (suf === "K" || suf === "k") v *= 1024;
  else if (suf === "M" || suf === "m") v *= 1 << 20;
  else if (suf === "G" || suf === "g") v *= 1 << 30;
  return v < 0 ? 0 : Math.floor(v);
}

function parseProt(s: string | undefined): number {
  if (s === "rw") return PROT_READ | PROT_WRITE;
  if (s === "r") return PROT_READ;
  return PROT_NONE;
}

const KNOWN_ERRNOS = new Set(["EINVAL", "ENOMEM", "EFAULT", "EACCES", "EPERM"]);

function errName(e: unknown): string {
  if (e instanceof MmError) return KNOWN_ERRNOS.has(e.errno) ? e.errno : "EOTHER";
  throw e;
}

/** One process of the scenario, with its own view of the region table (the oracle's forked copy). */
class Actor {
  readonly regions: Region[];
  constructor(
    readonly proc: Process,
    regions: Region[],
  ) {
    this.regions = regions.map((r) => ({ ...r }));
  }

  find(name: string): Region | undefined {
    return this.regions.find((r) => r.name === name);
  }

  /** Execute one op line; returns the result line without the `c ` prefix. */
  exec(line: string): string {
    const t = line
      .split(/[ \t\n]+/)
      .filter((x) => x.length > 0)
      .slice(0, 7);
    const op = (t[0] ?? "").slice(0, 15);
    const rn = (t[1] ?? "").slice(0, 31);
    const mm = this.proc.mm;
    if (op === "mmap") {
      const size = parseSize(t[2]);
      let prot = PROT_READ | PROT_WRITE;
      let flags = MAP_PRIVATE | MAP_ANONYMOUS;
      let huge = false;
      for (const o of t.slice(3, 6)) {
        if (o === "shared") flags = MAP_SHARED | MAP_ANONYMOUS;
        else if (o === "huge") huge = true;
        else prot = parseProt(o);
      }
      if (size === 0) return `mmap ${rn}: EINVAL`;
      let raw: number;
      try {
        raw = mm.mmap({
          length: size + 2 * HPAGE_PMD_SIZE,
          prot: PROT_NONE,
          flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
        });
      } catch (e) {
        return `mmap ${rn}: ${errName(e)}`;
      }
      const al = alignDown(raw + PAGE_SIZE + HPAGE_PMD_SIZE - 1, HPAGE_PMD_SIZE);
      try {
        mm.mmap({ addr: al, length: size, prot, flags: flags | MAP_FIXED });
      } catch (e) {
        return `mmap ${rn}: ${errName(e)}`;
      }
      try {
        mm.madvise(al, size, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
      } catch {
        // the oracle ignores madvise's result here
      }
      this.regions.push({ name: rn, addr: al, size });
      return `mmap ${rn}: ok`;
    }
    const r = this.find(rn);
    if (r === undefined) return `${op} ${rn}: no such region`;
    const off = parseSize(t[2]);
    const len = parseSize(t[3]);
    const p = r.addr + off;
    if (op === "touch") {
      const write = t[4] === "w";
      const res = this.proc.touch(p, len, write);
      if (res.segvAt >= 0) {
        const page = Math.floor((p - r.addr) / PAGE_SIZE) + (res.segvAt - p) / PAGE_SIZE;
        return `touch ${rn}: segv at page ${page} faults ${res.faults}`;
      }
      return `touch ${rn}: ok faults ${res.faults}`;
    }
    let result = "ok";
    try {
      if (op === "mprotect") mm.mprotect(p, len, parseProt(t[4]));
      else if (op === "munmap") mm.munmap(p, len);
      else if (op === "madvise") {
        const a = t[4];
        mm.madvise(
          p,
          len,
          a === "dontneed" ? MADV_DONTNEED : a === "hugepage" ? MADV_HUGEPAGE : MADV_NOHUGEPAGE,
        );
      } else return `${op}: unknown op`;
    } catch (e) {
      result = errName(e);
    }
    return `${op} ${rn}: ${result}`;
  }
}

/** Run the scenario `text` and return the output lines. */
export function runScenario(text: string, config: Partial<MachineConfig> = {}): string[] {
  const machine = new Machine({ contentMode: "tag", memoryBytes: 16 * 1024 ** 3, ...config });
  const out: string[] = [];
  const parent = new Actor(machine.createProcess(), []);
  let child: Actor | null = null;
  const ids = new FrameIds();
  const orphans: Process[] = [];
  for (const raw of text.split("\n")) {
    let s = raw;
    const hash = s.indexOf("#");
    if (hash >= 0) s = s.slice(0, hash);
    s = s.replace(/^[ \t]+/, "").replace(/[ \n\r]+$/, "");
    if (s.length === 0) continue;
    if (s === "fork") {
      // A second fork leaves the first child running unreachable, as the oracle does.
      if (child !== null) orphans.push(child.proc);
      child = new Actor(parent.proc.fork(), parent.regions);
      out.push("fork: ok");
      continue;
    }
    if (s.startsWith("c ")) {
      if (child === null) {
        out.push(`${s}: no child`);
        continue;
      }
      if (s.slice(2) === "exit") {
        child.proc.exit();
        child = null;
        out.push("c exit: ok");
        continue;
      }
      out.push(`c ${child.exec(s.slice(2))}`);
      continue;
    }
    if (s === "exit") {
      child?.proc.exit();
      child = null;
      out.push("exit: ok");
      continue;
    }
    if (s.startsWith("dump ")) {
      const name = s.slice(5);
      const r = parent.find(name);
      if (r === undefined) {
        out.push(`${s}: no such region`);
        continue;
      }
      ids.beginDump();
      out.push(...dumpRegion("p", r.name, parent.proc.mm, r.addr, r.size, ids));
      if (child !== null) out.push(...dumpRegion("c", r.name, child.proc.mm, r.addr, r.size, ids));
      ids.endDump(r.name);
      continue;
    }
    out.push(parent.exec(s));
  }
  child?.proc.exit();
  for (const o of orphans) o.exit();
  parent.proc.exit();
  return out;
}
