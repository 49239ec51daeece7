import { PAGE_SIZE } from "./constants.js";
import {
  ENTRY_DEVICE_EXCLUSIVE,
  ENTRY_DEVICE_PRIVATE,
  ENTRY_KIND_MASK,
  ENTRY_MIGRATION,
  ENTRY_PRESENT,
  ENTRY_ZERO,
  entryOwner,
} from "./entry.js";
import type { MmStruct as Mm } from "./types.js";
import { PageTableCursor, SEG_HUGE, SEG_TABLE } from "./walker.js";

function mix(h: number, v: number): number {
  h = Math.imul(h ^ v, 0x9e3779b1);
  return (h ^ (h >>> 15)) | 0;
}

/**
 * Digest of the memory an address space can read: every page whose content is not all zeros,
 * keyed by its virtual page number, in address order. A page that is unmapped, maps the zero
 * page or holds zeros contributes nothing, so the digest depends only on what was written, not on
 * how memory happens to be backed (THP or not, system RAM or device memory, migrated or not), and
 * is the same in both content modes for the same writes.
 */
export function contentDigest(mm: Mm): string {
  const machine = mm.machine;
  const content = machine.pool.content;
  const pt = mm.pt;
  const cur = new PageTableCursor(pt);
  let h1 = 0x243f6a88;
  let h2 = 0x85a308d3 | 0;
  let pages = 0;
  const add = (va: number, hash: number) => {
    if (hash === 0) return;
    const vpn = va / PAGE_SIZE;
    const lo = vpn | 0;
    const hi = Math.floor(vpn / 2 ** 32);
    h1 = mix(mix(mix(h1, lo), hi), hash);
    h2 = mix(mix(h2, hash), lo ^ 0x5bd1e995);
    pages++;
  };
  for (const vma of mm.vmas) {
    cur.reset(vma.start, vma.end);
    while (cur.next()) {
      if (cur.kind === SEG_HUGE) {
        const hkind = cur.flags & ENTRY_KIND_MASK;
        const howner = entryOwner(cur.flags);
        if (hkind === ENTRY_DEVICE_PRIVATE || (hkind === ENTRY_MIGRATION && howner !== 0)) {
          // A device-private PMD (or one being migrated from device memory): the device's pages.
          const ops = machine.devicePagemap(howner);
          for (let i = 0; i < cur.count; i++)
            add(cur.addr + i * PAGE_SIZE, ops.pageHash(cur.pfn + cur.index + i));
          continue;
        }
        if ((hkind !== ENTRY_PRESENT && hkind !== ENTRY_MIGRATION) || cur.flags & ENTRY_ZERO) continue;
        for (let i = 0; i < cur.count; i++)
          add(cur.addr + i * PAGE_SIZE, content.hash(cur.pfn + cur.index + i));
      } else if (cur.kind === SEG_TABLE) {
        const base = cur.leafBase + cur.index;
        for (let i = 0; i < cur.count; i++) {
          const f = pt.pteFlags[base + i];
          const kind = f & ENTRY_KIND_MASK;
          if (kind === 0 || f & ENTRY_ZERO) continue;
          const pfn = pt.ptePfn[base + i];
          const owner = entryOwner(f);
          let hash: number;
          if (kind === ENTRY_DEVICE_PRIVATE || (kind === ENTRY_MIGRATION && owner !== 0)) {
            hash = machine.devicePagemap(owner).pageHash(pfn);
          } else if (kind === ENTRY_PRESENT || kind === ENTRY_DEVICE_EXCLUSIVE || kind === ENTRY_MIGRATION) {
            hash = content.hash(pfn);
          } else continue;
          add(cur.addr + i * PAGE_SIZE, hash);
        }
      }
    }
  }
  const hex8 = (x: number) => (x >>> 0).toString(16).padStart(8, "0");
  return `${hex8(h1)}${hex8(h2)}:${pages}`;
}
