import { alignDown, HPAGE_PMD_SIZE, hex, PAGE_SIZE } from "./constants.js";
import {
  deviceEntryFlags,
  ENTRY_DEVICE_EXCLUSIVE,
  ENTRY_KIND_MASK,
  ENTRY_PRESENT,
  ENTRY_WRITE,
  ENTRY_ZERO,
} from "./entry.js";
import { MmError } from "./errors.js";
import { FAULT_FLAG_REMOTE, FAULT_FLAG_WRITE, handleMmFault, VM_FAULT_OK } from "./fault.js";
import { FRAME_ANON } from "./frame-pool.js";
import { MmuNotifyEvent } from "./notifier.js";
import { splitHugePmd } from "./thp.js";
import type { MmStruct as Mm } from "./types.js";
import { checkIntegerIn, checkUnsigned, checkUserRange } from "./validate.js";

/**
 * make_device_exclusive: give device `owner` exclusive access to the anonymous page at `va`. The
 * page is faulted in for write (breaking COW), a THP mapping is split, mirrors are told with an
 * EXCLUSIVE invalidation carrying `owner`, and the PTE becomes a device-exclusive entry that keeps
 * the page mapped. The next CPU access restores the PTE and sends EXCLUSIVE with owner null.
 * Returns the page's frame. Errors are the kernel's (mm/rmap.c, 6.15 and later): the write
 * lookup (get_user_page_vma_remote with FOLL_WRITE) gives EFAULT for no VMA, a PROT_NONE or a
 * read-only mapping; a page that is not anonymous (MAP_SHARED memory is shmem) gives EOPNOTSUPP,
 * after the write fault populated it.
 */
export function makeDeviceExclusive(mm: Mm, va: number, owner: number): number {
  checkUnsigned("make_device_exclusive", "address", va);
  checkIntegerIn("make_device_exclusive", "owner", owner, 1, 255);
  // get_user_pages_remote on an address outside user space: EFAULT.
  checkUserRange("make_device_exclusive", va, 1, "EFAULT");
  const page = alignDown(va, PAGE_SIZE);
  const vma = mm.findVma(page);
  if (vma === null || !vma.readable || !vma.writable) {
    const why = vma === null ? "no mapping there" : `mapping ${vma} is not writable`;
    throw new MmError("EFAULT", `make_device_exclusive: ${hex(page)}: ${why}`);
  }
  for (let attempt = 0; attempt < 4; attempt++) {
    const slot = mm.pt.pmdSlot(page);
    if (slot >= 0 && mm.pt.leafAt(slot) < 0 && (mm.pt.pmdFlags[slot] & ENTRY_KIND_MASK) === ENTRY_PRESENT) {
      splitHugePmd(mm, slot, alignDown(page, HPAGE_PMD_SIZE));
    }
    const pos = mm.pt.ptePos(page);
    const f = pos < 0 ? 0 : mm.pt.pteFlags[pos];
    const ready = (f & ENTRY_KIND_MASK) === ENTRY_PRESENT && f & ENTRY_WRITE && !(f & ENTRY_ZERO);
    if (ready) {
      const pfn = mm.pt.ptePfn[pos];
      if (!(mm.machine.pool.flags[pfn] & FRAME_ANON))
        throw new MmError(
          "EOPNOTSUPP",
          `make_device_exclusive: ${hex(page)} is not anonymous memory (mapping ${vma}); only private anonymous pages can be made exclusive`,
        );
      mm.notifiers.invalidate(page, page + PAGE_SIZE, MmuNotifyEvent.EXCLUSIVE, owner, () => {
        mm.pt.pteFlags[pos] =
          deviceEntryFlags(ENTRY_DEVICE_EXCLUSIVE, owner, true) | (f & ~ENTRY_KIND_MASK & 0xff);
      });
      return pfn;
    }
    if (handleMmFault(mm, vma, page, FAULT_FLAG_WRITE | FAULT_FLAG_REMOTE) !== VM_FAULT_OK) break;
  }
  throw new MmError("EFAULT", `make_device_exclusive: could not fault ${hex(page)} in for write`);
}
