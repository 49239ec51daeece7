import { alignUp, HPAGE_PMD_SIZE, PAGE_SIZE } from "../constants.js";
import { ENTRY_KIND_MASK, ENTRY_NONE, ENTRY_PRESENT, ENTRY_ZERO } from "../entry.js";
import type { Mm } from "../mm.js";

/** Most ids a region remembers between dumps (the reference tool's bound, kept for identical output). */
const MAX_LIVE_IDS = (1 << 20) / 64;

/**
 * Canonical frame ids, numbered by first appearance in dumps, so output does not depend on which
 * physical frames an allocator picked. A frame a region's dump no longer shows is retired: if the
 * same frame is handed out again later it gets a new id. Port of the mmoracle numbering.
 */
export class FrameIds {
  private readonly idOf = new Map<number, number>();
  private readonly pfnOf: number[] = [];
  private readonly seenIn: number[] = [];
  /** Per id: in how many regions' latest dumps it appears. */
  private readonly liveIn: number[] = [];
  private readonly live = new Map<string, number[]>();
  private serial = 0;

  /** Start a dump (one serial per `dump` line, covering parent and child). */
  beginDump(): number {
    return ++this.serial;
  }

  /** Id of frame `pfn`, assigning the next one if it has none. */
  id(pfn: number): number {
    let id = this.idOf.get(pfn);
    if (id === undefined) {
      id = this.pfnOf.length;
      this.pfnOf.push(pfn);
      this.seenIn.push(0);
      this.liveIn.push(0);
      this.idOf.set(pfn, id);
    }
    this.seenIn[id] = this.serial;
    return id;
  }

  /**
   * After a region's dump: retire the ids its last dump showed and this one did not, unless
   * another region's latest dump still shows them (mremap can move frames between regions).
   */
  endDump(region: string): void {
    const s = this.serial;
    const prev = this.live.get(region) ?? [];
    for (const id of prev) this.liveIn[id]--;
    for (const id of prev) {
      if (this.seenIn[id] !== s && this.liveIn[id] === 0) {
        const pfn = this.pfnOf[id];
        if (this.idOf.get(pfn) === id) this.idOf.delete(pfn);
        this.pfnOf[id] = -1;
      }
    }
    const keep: number[] = [];
    for (let id = 0; id < this.seenIn.length && keep.length < MAX_LIVE_IDS; id++) {
      if (this.seenIn[id] === s) {
        keep.push(id);
        this.liveIn[id]++;
      }
    }
    this.live.set(region, keep);
  }
}

/** State of one page as /proc/pid/pagemap + kpageflags + kpagecount would show it. */
interface PageState {
  kind: "none" | "zero" | "anon" | "swap";
  pfn: number;
  mapcount: number;
}

function pageState(mm: Mm, va: number, out: PageState): void {
  const pt = mm.pt;
  const pool = mm.machine.pool;
  out.kind = "none";
  out.pfn = -1;
  out.mapcount = 0;
  const slot = pt.pmdSlot(va);
  if (slot < 0) return;
  let pfn: number;
  let flags: number;
  const leaf = pt.leafAt(slot);
  if (leaf >= 0) {
    const pos = leaf * 512 + (Math.floor(va / PAGE_SIZE) & 511);
    pfn = pt.ptePfn[pos];
    flags = pt.pteFlags[pos];
  } else {
    flags = pt.pmdFlags[slot];
    pfn = pt.pmdPfn[slot] + (Math.floor(va / PAGE_SIZE) & 511);
  }
  const kind = flags & ENTRY_KIND_MASK;
  if (kind === ENTRY_NONE) return;
  if (kind !== ENTRY_PRESENT) {
    out.kind = "swap"; // migration, device-private and device-exclusive entries read as swap entries
    return;
  }
  if (flags & ENTRY_ZERO) {
    out.kind = "zero";
    return;
  }
  out.kind = "anon";
  out.pfn = pfn;
  out.mapcount = pool.pageMapcount(pfn);
}

/**
 * The `dump P R` lines for region [addr, addr + size) of `mm`: run-length page states with
 * canonical frame ids and mapcounts, then the `huge` line (bytes mapped by PMDs in VMAs that lie
 * inside the region, as AnonHugePages in smaps).
 */
export function dumpRegion(
  who: string,
  name: string,
  mm: Mm,
  addr: number,
  size: number,
  ids: FrameIds,
): string[] {
  const lines: string[] = [];
  const np = Math.floor(size / PAGE_SIZE);
  const st: PageState = { kind: "none", pfn: -1, mapcount: 0 };
  let prevKind: string | null = null;
  let first = 0;
  let fidPrev = -2;
  let fidFirst = -1;
  let mcPrev = 0;
  for (let i = 0; i <= np; i++) {
    let kind = "end";
    let fid = -1;
    let mc = 0;
    if (i < np) {
      pageState(mm, addr + i * PAGE_SIZE, st);
      kind = st.kind;
      if (kind === "anon") {
        fid = ids.id(st.pfn);
        mc = st.mapcount;
      }
    }
    const same =
      prevKind !== null &&
      kind === prevKind &&
      mc === mcPrev &&
      (fid === -1 ? fidPrev === -1 : fid === fidPrev + 1);
    if (!same) {
      if (prevKind !== null) {
        if (fidFirst >= 0)
          lines.push(`dump ${who} ${name} [${first},${i}) ${prevKind} f${fidFirst}-f${fidPrev} mc=${mcPrev}`);
        else lines.push(`dump ${who} ${name} [${first},${i}) ${prevKind}`);
      }
      first = i;
      fidFirst = fid;
      prevKind = kind;
    }
    fidPrev = fid;
    mcPrev = mc;
  }
  let huge = 0;
  const pt = mm.pt;
  for (const v of mm.vmas) {
    if (v.start < addr || v.end > addr + size) continue;
    for (let a = alignUp(v.start, HPAGE_PMD_SIZE); a + HPAGE_PMD_SIZE <= v.end; a += HPAGE_PMD_SIZE) {
      const slot = pt.pmdSlot(a);
      if (slot < 0 || pt.leafAt(slot) >= 0) continue;
      const f = pt.pmdFlags[slot];
      if ((f & ENTRY_KIND_MASK) === ENTRY_PRESENT && !(f & ENTRY_ZERO)) huge += HPAGE_PMD_SIZE;
    }
  }
  lines.push(`huge ${who} ${name} ${huge}`);
  return lines;
}
