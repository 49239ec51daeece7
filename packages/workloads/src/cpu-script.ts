import { cpuOpSteps, type Steps } from "@hmmkit/core";
import {
  ACCESS_OK,
  ACCESS_SEGV_ACCERR,
  ACCESS_SEGV_MAPERR,
  ACCESS_WAIT_MIGRATION,
  hex,
  MmError,
  type Process,
  SegvError,
  stampToken,
} from "@hmmkit/mm";
import type { DataOracle, ReadAgent } from "./oracle.js";
import type { Region } from "./region.js";

const CPU_READ = 0;
const CPU_WRITE = 1;
const CPU_OP = 2;

/** Pages a CPU thread touches between two preemption points. */
export const CPU_PAGES_PER_STEP = 8;

/** A CPU-side operation of a phase (an mmap, munmap, mprotect, mremap, madvise or fork). */
export interface CpuOp {
  /** Names the preemption point (`cpu:<label>`). */
  readonly label: string;
  /** Does the syscall and updates the shadow to match. */
  readonly run: () => void;
  /** The mmap_lock it takes, as the kernel's syscall does. */
  readonly lock: "read" | "write";
}

/**
 * One CPU thread's work in a phase, in program order: page reads (checked against the shadow),
 * page writes (stamps, recorded in the shadow) and operations. Typed arrays, reused per phase.
 */
export class CpuScript {
  kind = new Uint8Array(1024);
  region = new Uint8Array(1024);
  page = new Int32Array(1024);
  stamp = new Int32Array(1024);
  count = 0;
  readonly regions: Region[] = [];
  readonly ops: CpuOp[] = [];

  clear(): void {
    this.count = 0;
    this.ops.length = 0;
  }

  private grow(): void {
    const n = this.kind.length * 2;
    const kind = new Uint8Array(n);
    kind.set(this.kind);
    this.kind = kind;
    const region = new Uint8Array(n);
    region.set(this.region);
    this.region = region;
    const page = new Int32Array(n);
    page.set(this.page);
    this.page = page;
    const stamp = new Int32Array(n);
    stamp.set(this.stamp);
    this.stamp = stamp;
  }

  private add(kind: number, r: Region | null, page: number, stamp: number): void {
    if (this.count === this.kind.length) this.grow();
    const i = this.count++;
    this.kind[i] = kind;
    if (r !== null) {
      let k = this.regions.indexOf(r);
      if (k < 0) k = this.regions.push(r) - 1;
      this.region[i] = k;
    }
    this.page[i] = page;
    this.stamp[i] = stamp;
  }

  read(r: Region, page: number): void {
    this.add(CPU_READ, r, page, 0);
  }

  write(r: Region, page: number, stamp: number): void {
    this.add(CPU_WRITE, r, page, stamp);
  }

  op(op: CpuOp): void {
    this.add(CPU_OP, null, this.ops.push(op) - 1, 0);
  }
}

/**
 * The thread running `script` for `proc`, as a step generator for the scheduler: a preemption
 * point every CPU_PAGES_PER_STEP pages and at each operation (which first takes its mmap_lock).
 * Reads are checked by `oracle` against the shadow as it is then; writes stamp the page and set
 * its shadow token.
 */
export function* cpuScriptSteps(
  proc: Process,
  script: CpuScript,
  oracle: DataOracle,
  agent: ReadAgent,
): Steps<void> {
  const content = proc.machine.pool.content;
  const child = agent === "child";
  let since = 0;
  for (let i = 0; i < script.count; i++) {
    const kind = script.kind[i];
    if (kind === CPU_OP) {
      const op = script.ops[script.page[i]];
      yield* cpuOpSteps(op.label, op.run, { mm: proc.mm, mode: op.lock });
      since = 0;
      continue;
    }
    const r = script.regions[script.region[i]];
    const page = script.page[i];
    const write = kind === CPU_WRITE;
    const va = r.va(page);
    // The access loop is inline (no generator per page): a page under migration makes the thread
    // wait and retry, as a CPU fault on a migration entry sleeps until the migration ends.
    for (;;) {
      const code = proc.accessPage(va, write);
      if (code === ACCESS_OK) break;
      if (code === ACCESS_WAIT_MIGRATION) {
        yield "cpu:wait-migration";
        continue;
      }
      if (code === ACCESS_SEGV_MAPERR || code === ACCESS_SEGV_ACCERR)
        throw new SegvError(va, code === ACCESS_SEGV_MAPERR ? "no-vma" : "access", write ? "write" : "read");
      throw new MmError(
        "EFAULT",
        `CPU ${write ? "write" : "read"} at ${hex(va)} failed (access code ${code})`,
      );
    }
    if (write) {
      content.stamp(proc.lastPfn, script.stamp[i]);
      r.shadow[page] = stampToken(script.stamp[i]);
    } else oracle.check(r, page, content.hash(proc.lastPfn), agent, child);
    if (++since === CPU_PAGES_PER_STEP) {
      since = 0;
      yield write ? "cpu:write" : "cpu:read";
    }
  }
}
