import {
  contentDigest,
  ENTRY_KIND_MASK,
  type Machine,
  type Mm,
  PageTableCursor,
  SEG_HUGE,
  SEG_TABLE,
  TASK_SIZE,
} from "../src/index.js";

/** Every VMA of `mm` with the fields that decide faults, merges and fork. */
function vmaDump(mm: Mm): string {
  return mm.vmas
    .toArray()
    .map(
      (v) =>
        `${v.toString()} prot=${v.prot} thp=${v.thpAdvice} anon=${v.anonVma} acct=${v.account} nores=${v.noreserve} pgoff=${v.pgoff}`,
    )
    .join("\n");
}

/** Every entry of `mm`'s page table over the whole address space (pfn and flags). */
function entryDump(mm: Mm): string {
  const out: string[] = [];
  const cur = new PageTableCursor(mm.pt).reset(0, TASK_SIZE);
  while (cur.next()) {
    if (cur.kind === SEG_HUGE) {
      if ((cur.flags & ENTRY_KIND_MASK) !== 0) out.push(`H ${cur.addr.toString(16)} ${cur.pfn} ${cur.flags}`);
    } else if (cur.kind === SEG_TABLE) {
      for (let i = 0; i < cur.count; i++) {
        const f = mm.pt.pteFlags[cur.leafBase + cur.index + i];
        if (f !== 0)
          out.push(
            `${(cur.addr + i * 4096).toString(16)} ${mm.pt.ptePfn[cur.leafBase + cur.index + i]} ${f}`,
          );
      }
    }
  }
  return out.join("\n");
}

/**
 * Everything a call could change, as one comparable string: per live address space its VMAs, its
 * page-table entries, RSS, notifier sequence and content digest; machine-wide the frames in use,
 * the refcount and mapcount of every frame, and every counter. Two machines driven through the
 * same successful calls give the same string; a rejected call must leave it unchanged.
 */
export function machineState(machine: Machine): string {
  const parts: string[] = [];
  for (const mm of machine.mms) {
    parts.push(
      `mm ${mm.id} rss ${mm.rssAnon}/${mm.rssShmem}/${mm.rssDevice} seq ${mm.notifiers.invalidateSeq} notifiers ${mm.notifiers.size}`,
      vmaDump(mm),
      entryDump(mm),
      contentDigest(mm),
    );
  }
  const pool = machine.pool;
  let h = 0;
  for (let pfn = 0; pfn < pool.nframes; pfn++) {
    h = (Math.imul(h, 31) + pool.refcount[pfn] * 7 + pool.mapcount[pfn] * 3 + pool.flags[pfn]) | 0;
  }
  parts.push(`used ${machine.usedFrames} frames ${h}`, JSON.stringify(machine.stats.snapshot()));
  return parts.join("\n");
}
