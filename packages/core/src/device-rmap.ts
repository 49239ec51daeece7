import {
  ENTRY_DEVICE_PRIVATE,
  ENTRY_KIND_MASK,
  entryOwner,
  HPAGE_PMD_NR,
  type Machine,
  type Mm,
  PAGE_SIZE,
  PageTableCursor,
  SEG_HUGE,
  SEG_TABLE,
} from "@hmmkit/mm";
import type { Device } from "./device.js";

/** Where a device folio is mapped: an address space and the address of the folio's head page. */
export interface DeviceFolioPlace {
  mm: Mm;
  va: number;
}

/** True if `mm` maps device page `dpfn` of `owner` at `va` with a device-private PTE. */
function mapsDevicePage(mm: Mm, owner: number, va: number, dpfn: number): boolean {
  const pos = mm.pt.ptePos(va);
  if (pos < 0) return false;
  const f = mm.pt.pteFlags[pos];
  return (
    (f & ENTRY_KIND_MASK) === ENTRY_DEVICE_PRIVATE && entryOwner(f) === owner && mm.pt.ptePfn[pos] === dpfn
  );
}

/** True if `mm` maps any page of the order-9 device folio `head` of `owner` placed at `va`. */
function mapsDeviceFolio(mm: Mm, owner: number, va: number, head: number): boolean {
  const pt = mm.pt;
  const slot = pt.pmdSlot(va);
  if (slot < 0) return false;
  if (pt.pmdChild[slot] === 0) {
    const f = pt.pmdFlags[slot];
    return (
      (f & ENTRY_KIND_MASK) === ENTRY_DEVICE_PRIVATE && entryOwner(f) === owner && pt.pmdPfn[slot] === head
    );
  }
  for (let i = 0; i < HPAGE_PMD_NR; i++)
    if (mapsDevicePage(mm, owner, va + i * PAGE_SIZE, head + i)) return true;
  return false;
}

/**
 * Where `dev`'s folio headed by `dpfn` (one frame, or an order-9 folio) is mapped now: at the
 * place recorded when it was installed, in the recorded address space if it still maps it, else
 * in any live one. If none maps it there (an mremap moved it), every address space's page table
 * is searched (slow, but only after a move), and the place found is recorded again.
 */
export function findDeviceFolio(machine: Machine, dev: Device, dpfn: number): DeviceFolioPlace | null {
  const mem = dev.memory;
  const va = mem.installedVa[dpfn];
  const want = mem.installedMm[dpfn];
  const huge = mem.isHuge(dpfn);
  const owner = dev.ownerId;
  let found: DeviceFolioPlace | null = null;
  for (const mm of machine.mms) {
    if (!(huge ? mapsDeviceFolio(mm, owner, va, dpfn) : mapsDevicePage(mm, owner, va, dpfn))) continue;
    if (mm.id === want) return { mm, va };
    found ??= { mm, va };
  }
  if (found !== null || want === 0) return found;
  found = searchDeviceFolio(machine, owner, dpfn, huge ? HPAGE_PMD_NR : 1);
  if (found !== null) mem.noteInstalled(dpfn, found.mm.id, found.va);
  return found;
}

/** The first place any live mm maps a page of the device folio [head, head + nr) of `owner`. */
function searchDeviceFolio(
  machine: Machine,
  owner: number,
  head: number,
  nr: number,
): DeviceFolioPlace | null {
  for (const mm of machine.mms) {
    const pt = mm.pt;
    const cur = new PageTableCursor(pt);
    for (const vma of mm.vmas) {
      cur.reset(vma.start, vma.end);
      while (cur.next()) {
        if (cur.kind === SEG_HUGE) {
          const f = cur.flags;
          if ((f & ENTRY_KIND_MASK) === ENTRY_DEVICE_PRIVATE && entryOwner(f) === owner && cur.pfn === head)
            return { mm, va: cur.addr - cur.index * PAGE_SIZE };
        } else if (cur.kind === SEG_TABLE) {
          for (let i = 0; i < cur.count; i++) {
            const p = cur.leafBase + cur.index + i;
            const f = pt.pteFlags[p];
            const d = pt.ptePfn[p] - head;
            if ((f & ENTRY_KIND_MASK) !== ENTRY_DEVICE_PRIVATE || entryOwner(f) !== owner || d < 0 || d >= nr)
              continue;
            return { mm, va: cur.addr + (i - d) * PAGE_SIZE };
          }
        }
      }
    }
  }
  return null;
}
