import { describe, expect, it } from "vitest";
import {
  alignDown,
  alignUp,
  ENTRY_PRESENT,
  ENTRY_WRITE,
  HPAGE_PMD_SIZE,
  MADV_DONTNEED,
  MAP_FIXED,
  Machine,
  PageTable,
  PageTableCursor,
  SEG_HUGE,
  SEG_NONE,
  SEG_TABLE,
  TASK_SIZE,
} from "../src/index.js";
import { MiB, mmapHuge, mmapPrivate, PAGE, PRIVATE, RW } from "./helpers.js";

const GiB = 1024 * MiB;

interface Segment {
  kind: number;
  addr: number;
  end: number;
  index: number;
  count: number;
  pfn?: number;
}

function segments(pt: PageTable, start: number, end: number): Segment[] {
  const cur = new PageTableCursor(pt).reset(start, end);
  const out: Segment[] = [];
  while (cur.next()) {
    const s: Segment = { kind: cur.kind, addr: cur.addr, end: cur.end, index: cur.index, count: cur.count };
    if (cur.kind === SEG_HUGE) s.pfn = cur.pfn;
    out.push(s);
  }
  return out;
}

function setPte(pt: PageTable, va: number, pfn: number): void {
  pt.setPte(pt.ptePosAlloc(va), pfn, ENTRY_PRESENT | ENTRY_WRITE);
}

describe("PageTable", () => {
  it("starts with no tables, and lookups of any address find nothing", () => {
    const pt = new PageTable();
    expect(pt.empty).toBe(true);
    expect(pt.tablePages).toBe(0);
    expect(pt.pmdSlot(0x7f00_0000_0000)).toBe(-1);
    expect(pt.ptePos(0x1000)).toBe(-1);
  });

  it("allocates the PUD, PMD and leaf table on first use and shares them within their span", () => {
    const pt = new PageTable();
    const va = 0x7f12_3440_0000;
    const pos = pt.ptePosAlloc(va);
    expect(pt.tablePages).toBe(3);
    expect(pt.leafTables).toBe(1);
    // Same 2 MiB: same leaf, next entry.
    expect(pt.ptePosAlloc(va + PAGE)).toBe(pos + 1);
    expect(pt.tablePages).toBe(3);
    // Same 1 GiB, next 2 MiB: one more leaf.
    pt.ptePosAlloc(va + HPAGE_PMD_SIZE);
    expect(pt.tablePages).toBe(4);
    // Another 1 GiB of the same 512 GiB: a PMD table and a leaf.
    pt.ptePosAlloc(va + GiB);
    expect(pt.tablePages).toBe(6);
    // Another 512 GiB: a PUD, a PMD and a leaf.
    pt.ptePosAlloc(va - 512 * GiB);
    expect(pt.tablePages).toBe(9);
  });

  it("keeps entries whose addresses differ only above bit 32 apart", () => {
    const pt = new PageTable();
    const low = 0x0000_5000;
    const high = 2 ** 32 + low;
    const higher = 2 ** 40 + low;
    setPte(pt, low, 11);
    setPte(pt, high, 22);
    setPte(pt, higher, 33);
    expect(pt.ptePfn[pt.ptePos(low)]).toBe(11);
    expect(pt.ptePfn[pt.ptePos(high)]).toBe(22);
    expect(pt.ptePfn[pt.ptePos(higher)]).toBe(33);
  });

  it("maps the last user page below 2^47 without aliasing its low 32 bits", () => {
    const pt = new PageTable();
    const top = TASK_SIZE - PAGE;
    const alias = top % 2 ** 32;
    setPte(pt, top, 44);
    expect(pt.ptePos(alias)).toBe(-1);
    setPte(pt, alias, 55);
    expect(pt.ptePfn[pt.ptePos(top)]).toBe(44);
    expect(pt.ptePfn[pt.ptePos(alias)]).toBe(55);
    expect(pt.ptePos(top)).not.toBe(pt.ptePos(alias));
  });

  it("frees a leaf and the emptied upper tables only when their last entry is cleared", () => {
    const pt = new PageTable();
    const va = 0x4000_0000;
    setPte(pt, va, 1);
    setPte(pt, va + PAGE, 2);
    const leaf = pt.leafAt(pt.pmdSlot(va));
    pt.clearPte(pt.ptePos(va));
    expect(pt.freeLeafIfEmpty(leaf)).toBe(false);
    expect(pt.tablePages).toBe(3);
    pt.clearPte(pt.ptePos(va + PAGE));
    expect(pt.freeLeafIfEmpty(leaf)).toBe(true);
    expect(pt.tablePages).toBe(0);
    expect(pt.empty).toBe(true);
    expect(pt.ptePos(va)).toBe(-1);
  });

  it("keeps a PMD table alive while another slot of it still holds a leaf", () => {
    const pt = new PageTable();
    const va = 0x4000_0000;
    setPte(pt, va, 1);
    setPte(pt, va + HPAGE_PMD_SIZE, 2);
    const leaf = pt.leafAt(pt.pmdSlot(va));
    pt.clearPte(pt.ptePos(va));
    pt.freeLeafIfEmpty(leaf);
    expect(pt.tablePages).toBe(3);
    expect(pt.ptePfn[pt.ptePos(va + HPAGE_PMD_SIZE)]).toBe(2);
  });

  it("finds nothing at an address whose PMD table was freed, even right after looking it up", () => {
    const pt = new PageTable();
    const va = 0x7f12_3400_0000;
    setPte(pt, va, 1);
    expect(pt.pmdSlot(va)).toBeGreaterThanOrEqual(0);
    pt.clearPte(pt.ptePos(va));
    pt.freeLeafIfEmpty(pt.leafAt(pt.pmdSlot(va)));
    expect(pt.pmdSlot(va)).toBe(-1);
    expect(pt.ptePos(va)).toBe(-1);
  });

  it("gives each 1 GiB region its own PMD table when lookups alternate between regions", () => {
    const pt = new PageTable();
    const a = 0x7f00_0000_0000;
    const b = a + GiB;
    const c = a + 512 * GiB;
    setPte(pt, a, 1);
    setPte(pt, b, 2);
    setPte(pt, c, 3);
    for (let round = 0; round < 2; round++) {
      expect(pt.ptePfn[pt.ptePos(a)]).toBe(1);
      expect(pt.ptePfn[pt.ptePos(c)]).toBe(3);
      expect(pt.ptePfn[pt.ptePos(b)]).toBe(2);
    }
    // Free a's PMD table and reuse its id for a new region: a must not resolve to d's table.
    pt.clearPte(pt.ptePos(a));
    pt.freeLeafIfEmpty(pt.leafAt(pt.pmdSlot(a)));
    const d = a + 3 * GiB;
    setPte(pt, d, 4);
    expect(pt.pmdSlot(a)).toBe(-1);
    expect(pt.ptePfn[pt.ptePos(d)]).toBe(4);
    expect(pt.ptePfn[pt.ptePos(b)]).toBe(2);
  });
});

describe("alignDown and alignUp", () => {
  it("round addresses above 2^32 and up to TASK_SIZE exactly", () => {
    expect(alignDown(0x7fff_ffff_f123, PAGE)).toBe(0x7fff_ffff_f000);
    expect(alignUp(0x7fff_ffff_e001, PAGE)).toBe(0x7fff_ffff_f000);
    expect(alignDown(0x1_0000_1fff, HPAGE_PMD_SIZE)).toBe(0x1_0000_0000);
    expect(alignUp(0x1_0000_0001, HPAGE_PMD_SIZE)).toBe(0x1_0020_0000);
    expect(alignUp(TASK_SIZE, PAGE)).toBe(TASK_SIZE);
    expect(alignDown(0, PAGE)).toBe(0);
    expect(alignUp(1, PAGE)).toBe(PAGE);
  });
});

describe("PageTableCursor", () => {
  it("reports a hole over an empty table as SEG_NONE segments that span whole upper-level entries", () => {
    const pt = new PageTable();
    const segs = segments(pt, 0, 4 * MiB);
    expect(segs).toEqual([{ kind: SEG_NONE, addr: 0, end: 4 * MiB, index: 0, count: 1024 }]);
    // Without a PUD, one segment reaches the end of the 512 GiB entry.
    const far = segments(pt, 3 * GiB, 600 * GiB);
    expect(far.map((s) => [s.kind, s.addr, s.end])).toEqual([
      [SEG_NONE, 3 * GiB, 512 * GiB],
      [SEG_NONE, 512 * GiB, 600 * GiB],
    ]);
  });

  it("walks one PMD at a time where tables exist, giving the leaf, index and count", () => {
    const pt = new PageTable();
    setPte(pt, 2 * MiB + 2 * PAGE, 7);
    const segs = segments(pt, PAGE, 5 * MiB);
    expect(segs.map((s) => [s.kind, s.addr, s.end, s.index, s.count])).toEqual([
      [SEG_NONE, PAGE, 2 * MiB, 1, 511],
      [SEG_TABLE, 2 * MiB, 4 * MiB, 0, 512],
      [SEG_NONE, 4 * MiB, 5 * MiB, 0, 256],
    ]);
    const cur = new PageTableCursor(pt).reset(2 * MiB + PAGE, 2 * MiB + 4 * PAGE);
    expect(cur.next()).toBe(true);
    expect(cur.kind).toBe(SEG_TABLE);
    expect(cur.index).toBe(1);
    expect(cur.count).toBe(3);
    expect(pt.ptePfn[cur.leafBase + cur.index + 1]).toBe(7);
    expect(cur.next()).toBe(false);
  });

  it("reports a huge PMD as SEG_HUGE with its frame, also for a part of it", () => {
    const pt = new PageTable();
    const slot = pt.pmdSlotAlloc(4 * MiB);
    pt.setPmdHuge(slot, 1024, ENTRY_PRESENT | ENTRY_WRITE);
    const segs = segments(pt, 4 * MiB + 8 * PAGE, 6 * MiB);
    expect(segs).toEqual([
      { kind: SEG_HUGE, addr: 4 * MiB + 8 * PAGE, end: 6 * MiB, index: 8, count: 504, pfn: 1024 },
    ]);
  });

  it("walks ranges near the top of the user address space", () => {
    const pt = new PageTable();
    const top = TASK_SIZE - PAGE;
    setPte(pt, top, 9);
    // The last PMD of the 47-bit address space starts at 2^47 - 2 MiB.
    const lastPmd = 2 ** 47 - HPAGE_PMD_SIZE;
    const segs = segments(pt, top - HPAGE_PMD_SIZE, TASK_SIZE);
    expect(segs.map((s) => [s.kind, s.addr, s.end])).toEqual([
      [SEG_NONE, top - HPAGE_PMD_SIZE, lastPmd],
      [SEG_TABLE, lastPmd, TASK_SIZE],
    ]);
    const last = new PageTableCursor(pt).reset(top, TASK_SIZE);
    last.next();
    // TASK_SIZE is 2^47 - 4 KiB (the top page is a guard), so the last user page is entry 510.
    expect(last.index).toBe(510);
    expect(pt.ptePfn[last.leafBase + last.index]).toBe(9);
  });
});

describe("page tables of an address space", () => {
  it("allocates a leaf table only when a page is first faulted in", () => {
    const m = new Machine();
    const p = m.createProcess();
    const a = mmapPrivate(p, 64 * PAGE);
    expect(p.mm.pt.tablePages).toBe(0);
    p.writeStamp(a, PAGE, 1);
    expect(p.mm.pt.leafTables).toBe(1);
  });

  it("frees all tables when the only mapping is unmapped", () => {
    const m = new Machine();
    const p = m.createProcess();
    const a = mmapPrivate(p, 4 * MiB);
    p.writeStamp(a, 4 * MiB, 1);
    expect(p.mm.pt.leafTables).toBe(2);
    p.mm.munmap(a, 4 * MiB);
    expect(p.mm.pt.tablePages).toBe(0);
    expect(m.usedFrames).toBe(0);
  });

  it("frees emptied leaf tables after MADV_DONTNEED (PT_RECLAIM) but keeps partly used ones", () => {
    const m = new Machine();
    const p = m.createProcess();
    const a = mmapPrivate(p, 4 * MiB);
    p.writeStamp(a, 4 * MiB, 1);
    p.mm.madvise(a, 2 * MiB + PAGE, MADV_DONTNEED);
    expect(p.mm.pt.leafTables).toBe(1);
    expect(p.mm.findVma(a)).not.toBeNull();
    p.mm.madvise(a + 2 * MiB, 2 * MiB, MADV_DONTNEED);
    expect(p.mm.pt.leafTables).toBe(0);
    expect(m.usedFrames).toBe(0);
  });

  it("keeps a leaf table that MADV_DONTNEED empties without covering its whole 2 MiB", () => {
    const m = new Machine();
    const p = m.createProcess();
    const a = mmapPrivate(p, 4 * MiB);
    p.writeStamp(a, 4 * PAGE, 1);
    // PT_RECLAIM only frees a table whose whole range the zap covers.
    p.mm.madvise(a, 4 * PAGE, MADV_DONTNEED);
    expect(m.usedFrames).toBe(0);
    expect(p.mm.pt.leafTables).toBe(1);
    // A fork copies the empty table too (copy_pte_range allocates the child's first).
    const c = p.fork();
    expect(c.mm.pt.leafTables).toBe(1);
    c.exit();
    p.mm.madvise(a, 2 * MiB, MADV_DONTNEED);
    expect(p.mm.pt.leafTables).toBe(0);
  });

  it("frees a huge PMD's tables when the THP is unmapped", () => {
    const m = new Machine();
    const p = m.createProcess();
    const a = mmapHuge(p);
    p.writeStamp(a, PAGE, 1);
    expect(p.mm.pt.leafTables).toBe(0);
    expect(p.mm.pt.tablePages).toBe(2);
    p.mm.munmap(a, HPAGE_PMD_SIZE);
    expect(p.mm.pt.tablePages).toBe(0);
  });

  it("maps and unmaps pages above 2^32 and just below 2^47 independently", () => {
    const m = new Machine({ contentMode: "tag" });
    const p = m.createProcess();
    const hi = p.mm.mmap({
      addr: TASK_SIZE - 4 * PAGE,
      length: 4 * PAGE,
      prot: RW,
      flags: PRIVATE | MAP_FIXED,
    });
    const lo = p.mm.mmap({ addr: hi % 2 ** 32, length: 4 * PAGE, prot: RW, flags: PRIVATE | MAP_FIXED });
    expect(hi).toBe(TASK_SIZE - 4 * PAGE);
    p.writeStamp(hi, 4 * PAGE, 1);
    p.writeStamp(lo, 4 * PAGE, 2);
    p.mm.munmap(lo, 4 * PAGE);
    expect(p.readPageHash(hi + 3 * PAGE)).toBe(p.readPageHash(hi));
    expect(p.readPageHash(hi)).not.toBe(0);
    p.exit();
    expect(m.usedFrames).toBe(0);
  });
});
