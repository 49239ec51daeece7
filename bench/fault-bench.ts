import {
  ENTRY_DIRTY,
  ENTRY_PRESENT,
  ENTRY_WRITE,
  ENTRY_YOUNG,
  MADV_NOHUGEPAGE,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  Machine,
  PROT_READ,
  PROT_WRITE,
  type Process,
  stampToken,
} from "@hmmkit/mm";
import type { Bench } from "./harness.js";

const GiB = 1024 ** 3;
/** 4 KiB pages in 1 GiB: the pages every fault case handles per call. */
export const FAULT_PAGES = GiB / 4096;
const PTE_FLAGS = ENTRY_PRESENT | ENTRY_WRITE | ENTRY_DIRTY | ENTRY_YOUNG;

/** Names of the fault-path cases, for the result rows. */
export const FAULT_CASES = {
  touchBase: "baseline: minimal first-touch bookkeeping, 262,144 pages",
  touch: "mm: first-touch write faults, 1 GiB of 4 KiB pages",
  cowBase: "baseline: minimal COW-copy bookkeeping, 262,144 pages",
  cow: "mm: COW write faults after fork, 1 GiB of 4 KiB pages",
} as const;

let sink = 0;

/**
 * The baselines: what a page fault has to do at the least, written as a tight typed-array loop
 * over the same number of pages, with no page table walk, no VMA lookup, no notifier and no
 * statistics. First touch: pop a frame from a free stack, set its refcount and mapcount to 1,
 * stamp its content token (the write the measured case does, in tag mode), write the PTE's pfn and
 * flags words, count RSS. COW: the same for the new frame, plus read the old PTE, copy the old
 * frame's token (tag mode's 4 KiB copy) before the stamp, and drop the old frame's refcount and
 * mapcount. Frames are handed out in the same LIFO order as the pool's.
 */
function addBaselines(bench: Bench): void {
  const n = FAULT_PAGES;
  const stack = new Int32Array(n);
  const refcount = new Int32Array(2 * n);
  const mapcount = new Int32Array(2 * n);
  const tokens = new Uint32Array(2 * n);
  const ptePfn = new Int32Array(n);
  const pteFlags = new Int32Array(n);
  let sp = 0;
  const refill = (base: number) => {
    for (let i = 0; i < n; i++) stack[i] = base + n - 1 - i;
    sp = n;
  };
  bench.addWithSetup(
    FAULT_CASES.touchBase,
    n,
    () => {
      refill(0);
      pteFlags.fill(0);
    },
    () => {
      let rss = 0;
      const token = stampToken(1);
      for (let i = 0; i < n; i++) {
        const pfn = stack[--sp];
        refcount[pfn] = 1;
        mapcount[pfn] = 1;
        tokens[pfn] = token;
        ptePfn[i] = pfn;
        pteFlags[i] = PTE_FLAGS;
        rss++;
      }
      sink ^= rss;
    },
  );
  bench.addWithSetup(
    FAULT_CASES.cowBase,
    n,
    () => {
      // The parent's pages are frames 0..n-1, each mapped twice; new frames come from n..2n-1.
      refill(n);
      for (let i = 0; i < n; i++) {
        ptePfn[i] = i;
        pteFlags[i] = ENTRY_PRESENT | ENTRY_YOUNG;
        refcount[i] = 2;
        mapcount[i] = 2;
      }
    },
    () => {
      let rss = 0;
      const token = stampToken(3);
      for (let i = 0; i < n; i++) {
        const old = ptePfn[i];
        const pfn = stack[--sp];
        tokens[pfn] = tokens[old];
        refcount[pfn] = 1;
        mapcount[pfn] = 1;
        ptePfn[i] = pfn;
        pteFlags[i] = PTE_FLAGS;
        refcount[old]--;
        mapcount[old]--;
        tokens[pfn] = token;
        rss++;
      }
      sink ^= rss;
    },
  );
}

function mapGiB(p: Process): number {
  const a = p.mm.mmap({ length: GiB, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
  p.mm.madvise(a, GiB, MADV_NOHUGEPAGE);
  return a;
}

/**
 * The CPU fault path on its own machine (tag content mode, THP off for the range): first-touch
 * write faults over a fresh 1 GiB mapping, and COW write faults of a fork child over 1 GiB its
 * parent populated. Setup (mmap, fork, exit) is outside the timed part.
 */
export function addFaultCases(bench: Bench): void {
  addBaselines(bench);
  const machine = new Machine({ contentMode: "tag", memoryBytes: 2 * GiB + 64 * 1024 * 1024 });
  // At most two GiB are populated at a time: each setup first exits what the other case left.
  let toucher: Process | null = null;
  let child: Process | null = null;
  let touchAt = 0;
  bench.addWithSetup(
    FAULT_CASES.touch,
    FAULT_PAGES,
    () => {
      child?.exit();
      child = null;
      toucher?.exit();
      toucher = machine.createProcess();
      touchAt = mapGiB(toucher);
    },
    () => {
      toucher!.touch(touchAt, GiB, true, 1);
    },
  );
  const parent = machine.createProcess();
  const cowAt = mapGiB(parent);
  parent.touch(cowAt, GiB, true, 2);
  bench.addWithSetup(
    FAULT_CASES.cow,
    FAULT_PAGES,
    () => {
      toucher?.exit();
      toucher = null;
      child?.exit();
      child = parent.fork();
    },
    () => {
      child!.touch(cowAt, GiB, true, 3);
    },
  );
  if (sink === 42) console.log("");
}
