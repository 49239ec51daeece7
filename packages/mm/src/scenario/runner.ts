import {
  alignDown,
  HPAGE_PMD_SIZE,
  MADV_COLD,
  MADV_COLLAPSE,
  MADV_DONTNEED,
  MADV_FREE,
  MADV_HUGEPAGE,
  MADV_NOHUGEPAGE,
  MADV_PAGEOUT,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_FIXED_NOREPLACE,
  MAP_NORESERVE,
  MAP_PRIVATE,
  MAP_SHARED,
  MREMAP_DONTUNMAP,
  MREMAP_FIXED,
  MREMAP_MAYMOVE,
  PAGE_SIZE,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
} from "../constants.js";
import { MmError } from "../errors.js";
import { Machine, type MachineConfig } from "../machine.js";
import type { Process } from "../process.js";
import { dumpRegion, FrameIds } from "./dump.js";
import {
  type AdviceName,
  LineError,
  type ProtName,
  parseOp,
  parseSizeToken,
  type ScenarioOp,
  ScenarioSyntaxError,
  scenarioLines,
} from "./parse.js";

/**
 * Runs scenarios written in the mmoracle language on a simulated machine and prints what the
 * simulated kernel did in the mmoracle's output format, so the two outputs can be diffed:
 *
 *   mmap R SIZE [rw|r|none] [shared] [huge]   touch R OFF LEN r|w
 *   mprotect R OFF LEN rw|r|none   munmap R OFF LEN
 *   madvise R OFF LEN dontneed|hugepage|nohugepage|free|cold|pageout|collapse
 *   mremap R OLDOFF OLDLEN NEWLEN [maymove] [fixed R2 OFF2] [dontunmap]
 *   fork   c <op>   c exit   exit   dump R
 *
 * Regions are placed as the oracle places them: a PROT_NONE reservation of SIZE + 4 MiB, the
 * region MAP_FIXED at the first 2 MiB boundary at least one page into it, then MADV_HUGEPAGE
 * (`huge`) or MADV_NOHUGEPAGE. What is left of the reservation after the region is its guard: a
 * growing mremap unmaps the part it needs first (and puts it back if the kernel moved instead),
 * so the kernel sees free room after the region. After an mremap a region tracks where its pages
 * went: its own range (extended) if the new mapping starts inside it, else the new mapping alone.
 *
 * Parsing is strict (see parse.ts): a bad line throws {@link ScenarioSyntaxError} naming the file
 * and line, after the lines before it have run (their output went to `onLine`).
 */

interface Region {
  name: string;
  addr: number;
  size: number;
  /** What is left of the PROT_NONE guard after the region's original end. */
  guardStart: number;
  guardEnd: number;
}

/**
 * A size with K/M/G suffixes, as the scenario language writes sizes and offsets. Throws for
 * anything else (signs, fractions, other suffixes, sizes above 128T).
 */
export function parseSize(s: string): number {
  return parseSizeToken(s, "size");
}

function protBits(p: ProtName): number {
  return p === "rw" ? PROT_READ | PROT_WRITE : p === "r" ? PROT_READ : PROT_NONE;
}

const ADVICE: Record<AdviceName, number> = {
  dontneed: MADV_DONTNEED,
  hugepage: MADV_HUGEPAGE,
  nohugepage: MADV_NOHUGEPAGE,
  free: MADV_FREE,
  cold: MADV_COLD,
  pageout: MADV_PAGEOUT,
  collapse: MADV_COLLAPSE,
};

/** errno names the oracle prints; anything else is EOTHER. */
const KNOWN_ERRNOS = new Set([
  "EINVAL",
  "ENOMEM",
  "EFAULT",
  "EACCES",
  "EPERM",
  "EAGAIN",
  "EBUSY",
  "EOPNOTSUPP",
  "EEXIST",
  "ENODEV",
  "EIO",
  "ENOSPC",
  "ESRCH",
  "EHWPOISON",
]);

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

  private region(name: string): Region {
    const r = this.find(name);
    if (r === undefined) throw new LineError(`no region named '${name}' (map it with mmap first)`);
    return r;
  }

  mmap(op: Extract<ScenarioOp, { op: "mmap" }>): string {
    const mm = this.proc.mm;
    const rn = op.region;
    if (this.find(rn) !== undefined) throw new LineError(`region '${rn}' is already mapped`);
    const flags = (op.shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS;
    let raw: number;
    try {
      raw = mm.mmap({
        length: op.size + 2 * HPAGE_PMD_SIZE,
        prot: PROT_NONE,
        flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
      });
    } catch (e) {
      return `mmap ${rn}: ${errName(e)}`;
    }
    const al = alignDown(raw + PAGE_SIZE + HPAGE_PMD_SIZE - 1, HPAGE_PMD_SIZE);
    try {
      mm.mmap({ addr: al, length: op.size, prot: protBits(op.prot), flags: flags | MAP_FIXED });
    } catch (e) {
      return `mmap ${rn}: ${errName(e)}`;
    }
    try {
      mm.madvise(al, op.size, op.huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    } catch {
      // the oracle ignores madvise's result here
    }
    this.regions.push({
      name: rn,
      addr: al,
      size: op.size,
      guardStart: al + op.size,
      guardEnd: raw + op.size + 2 * HPAGE_PMD_SIZE,
    });
    return `mmap ${rn}: ok`;
  }

  /** Execute one op; returns the result line without the `c ` prefix. */
  exec(op: ScenarioOp): string {
    const mm = this.proc.mm;
    if (op.op === "mmap") return this.mmap(op);
    if (op.op === "fork" || op.op === "exit" || op.op === "dump")
      throw new LineError(`${op.op} is not an op here`);
    const r = this.region(op.region);
    const rn = r.name;
    if (op.op === "mremap") return this.mremap(op, r);
    const p = r.addr + op.off;
    if (op.op === "touch") {
      const res = this.proc.touch(p, op.len, op.write);
      if (res.segvAt >= 0) {
        const page = Math.floor((p - r.addr) / PAGE_SIZE) + (res.segvAt - p) / PAGE_SIZE;
        return `touch ${rn}: segv at page ${page} faults ${res.faults}`;
      }
      return `touch ${rn}: ok faults ${res.faults}`;
    }
    let result = "ok";
    try {
      if (op.op === "mprotect") mm.mprotect(p, op.len, protBits(op.prot));
      else if (op.op === "munmap") mm.munmap(p, op.len);
      else mm.madvise(p, op.len, ADVICE[op.advice]);
    } catch (e) {
      result = errName(e);
    }
    return `${op.op} ${rn}: ${result}`;
  }

  private mremap(op: Extract<ScenarioOp, { op: "mremap" }>, r: Region): string {
    const mm = this.proc.mm;
    let flags = 0;
    let dst = 0;
    if (op.maymove) flags |= MREMAP_MAYMOVE;
    if (op.dontunmap) flags |= MREMAP_DONTUNMAP;
    if (op.fixed !== null) {
      flags |= MREMAP_FIXED;
      dst = this.region(op.fixed.region).addr + op.fixed.off;
    }
    const old = r.addr + op.off;
    let g0 = 0;
    let g1 = 0;
    if (
      !(flags & MREMAP_FIXED) &&
      op.newLen > op.oldLen &&
      old + op.oldLen <= r.guardStart &&
      old + op.newLen > r.guardStart &&
      r.guardStart < r.guardEnd
    ) {
      g0 = r.guardStart;
      g1 = Math.min(old + op.newLen, r.guardEnd);
      try {
        mm.munmap(g0, g1 - g0);
      } catch {
        g0 = g1 = 0;
      }
    }
    let res = -1;
    let err = "";
    try {
      res = mm.mremap(old, op.oldLen, op.newLen, flags, dst);
    } catch (e) {
      err = errName(e);
    }
    if (g1 > g0) {
      if (res === old) r.guardStart = g1;
      else {
        try {
          mm.mmap({
            addr: g0,
            length: g1 - g0,
            prot: PROT_NONE,
            flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE,
          });
        } catch {
          r.guardStart = g1;
        }
      }
    }
    if (res < 0) return `mremap ${r.name}: ${err}`;
    const newLen = Math.ceil(op.newLen / PAGE_SIZE) * PAGE_SIZE;
    if (res >= r.addr && res < r.addr + r.size) {
      if (res + op.newLen > r.addr + r.size) r.size = res + op.newLen - r.addr;
    } else {
      r.addr = res;
      r.size = newLen;
      r.guardStart = r.guardEnd = 0;
    }
    return `mremap ${r.name}: ok ${res === old ? "inplace" : "moved"}`;
  }
}

/** Options of {@link runScenario}. */
export interface RunScenarioOptions {
  /** File name for error messages (default `<scenario>`). */
  file?: string;
  /** Called with each output line as soon as it is produced. */
  onLine?: (line: string) => void;
}

/**
 * Run the scenario `text` and return the output lines. A line that does not parse, or names a
 * region or child that does not exist, throws {@link ScenarioSyntaxError} (`file:line: what`); the
 * lines before it have run and their output went to `opts.onLine`.
 */
export function runScenario(
  text: string,
  config: Partial<MachineConfig> = {},
  opts: RunScenarioOptions = {},
): string[] {
  const file = opts.file ?? "<scenario>";
  const machine = new Machine({ contentMode: "tag", memoryBytes: 16 * 1024 ** 3, ...config });
  const out: string[] = [];
  const emit = (s: string) => {
    out.push(s);
    opts.onLine?.(s);
  };
  const parent = new Actor(machine.createProcess(), []);
  let child: Actor | null = null;
  const ids = new FrameIds();
  const orphans: Process[] = [];
  let forked = false;
  try {
    for (const l of scenarioLines(text)) {
      try {
        const op = parseOp(l.tokens);
        if (l.child) {
          if (child === null) throw new LineError("'c' op but there is no child (fork first)");
          if (op.op === "exit") {
            child.proc.exit();
            child = null;
            emit("c exit: ok");
          } else if (op.op === "mmap") throw new LineError("mmap is only allowed in the parent, before fork");
          else if (op.op === "fork" || op.op === "dump")
            throw new LineError(`'c ${op.op}' is not allowed: ${op.op} runs in the parent`);
          else emit(`c ${child.exec(op)}`);
          continue;
        }
        switch (op.op) {
          case "fork":
            // A second fork leaves the first child running unreachable, as the oracle does.
            if (child !== null) orphans.push(child.proc);
            child = new Actor(parent.proc.fork(), parent.regions);
            forked = true;
            emit("fork: ok");
            break;
          case "exit":
            child?.proc.exit();
            child = null;
            emit("exit: ok");
            break;
          case "dump": {
            const r = parent.find(op.region);
            if (r === undefined)
              throw new LineError(`no region named '${op.region}' (map it with mmap first)`);
            ids.beginDump();
            for (const s of dumpRegion("p", r.name, parent.proc.mm, r.addr, r.size, ids)) emit(s);
            const cr = child?.find(op.region);
            if (child !== null && cr !== undefined)
              for (const s of dumpRegion("c", r.name, child.proc.mm, cr.addr, cr.size, ids)) emit(s);
            ids.endDump(r.name);
            break;
          }
          case "mmap":
            if (forked) throw new LineError("mmap is only allowed before fork");
            emit(parent.exec(op));
            break;
          default:
            emit(parent.exec(op));
        }
      } catch (e) {
        if (e instanceof LineError) throw new ScenarioSyntaxError(file, l.line, e.message);
        throw e;
      }
    }
  } finally {
    child?.proc.exit();
    for (const o of orphans) o.exit();
    parent.proc.exit();
  }
  return out;
}
