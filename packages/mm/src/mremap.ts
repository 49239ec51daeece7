import {
  alignUp,
  HPAGE_PMD_SIZE,
  hex,
  MREMAP_DONTUNMAP,
  MREMAP_FIXED,
  MREMAP_MAYMOVE,
  PAGE_SIZE,
  TASK_SIZE,
} from "./constants.js";
import { ENTRY_KIND_MASK, ENTRY_NONE } from "./entry.js";
import { MmError } from "./errors.js";
import { MmuNotifyEvent } from "./notifier.js";
import { splitHugePmd } from "./thp.js";
import type { MmStruct } from "./types.js";
import { checkFlagWord, checkUnsigned } from "./validate.js";
import { Vma } from "./vma.js";

const MREMAP_FLAGS = MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP;

/** The address space as mremap uses it: the fault paths' view plus munmap and free-area search. */
export interface MremapMm extends MmStruct {
  /** munmap of [addr, addr + len) inside the syscall (no safe point of its own). */
  munmapOp(addr: number, len: number): void;
  /** get_unmapped_area for an anonymous mapping of `len` bytes. */
  getUnmappedArea(hint: number | undefined, len: number): number;
}

function fail(errno: "EINVAL" | "EFAULT" | "ENOMEM", why: string): never {
  throw new MmError(errno, `mremap: ${why}`);
}

/**
 * mremap(2) of [addr, addr + oldLen) in `mm` (do_mremap), with the kernel's checks in its order
 * (check_mremap_params, then check_prep_vma):
 *  - EINVAL: unknown flags, unaligned `addr`, newLen 0 or above TASK_SIZE; with MREMAP_FIXED or
 *    MREMAP_DONTUNMAP: a destination beyond TASK_SIZE or unaligned, no MREMAP_MAYMOVE,
 *    MREMAP_DONTUNMAP with newLen ≠ oldLen, a destination overlapping the source; oldLen 0 on a
 *    private mapping when something new would be mapped (a shared one is mapped again instead).
 *  - EFAULT: `addr` not mapped, or the old range not inside that one VMA when it grows or moves.
 *  - ENOMEM: growing in place without room and without MREMAP_MAYMOVE; no free range to move to.
 * Shrinking unmaps the tail in place. A same-size MREMAP_FIXED move (with or without
 * MREMAP_DONTUNMAP) may take several VMAs, and the gaps between them, along. A move keeps every entry (present, migration, device-private, device-exclusive)
 * with its frame and mapcount: the page tables move (move_page_tables), mirrors get UNMAP over
 * the source range first. Returns the new address.
 */
export function mremap(
  mm: MremapMm,
  addr: number,
  oldLength: number,
  newLength: number,
  flags: number,
  newAddr: number,
): number {
  checkUnsigned("mremap", "old_len", oldLength);
  checkUnsigned("mremap", "new_len", newLength);
  checkFlagWord("mremap", "flags", flags);
  checkUnsigned("mremap", "new_addr", newAddr);
  checkUnsigned("mremap", "address", addr);
  if (flags & ~MREMAP_FLAGS) fail("EINVAL", `unknown flags 0x${(flags & ~MREMAP_FLAGS).toString(16)}`);
  if (addr % PAGE_SIZE !== 0) fail("EINVAL", `address ${hex(addr)} is not page aligned`);
  const oldLen = alignUp(oldLength, PAGE_SIZE);
  const newLen = alignUp(newLength, PAGE_SIZE);
  if (newLen === 0) fail("EINVAL", "new_len is 0");
  if (newLen > TASK_SIZE) fail("EINVAL", `new_len ${newLen} exceeds TASK_SIZE`);
  const impliesNewAddr = (flags & (MREMAP_FIXED | MREMAP_DONTUNMAP)) !== 0;
  if (impliesNewAddr) {
    if (newAddr > TASK_SIZE - newLen)
      fail("EINVAL", `new_addr ${hex(newAddr)} + ${newLen} is beyond TASK_SIZE`);
    if (newAddr % PAGE_SIZE !== 0) fail("EINVAL", `new_addr ${hex(newAddr)} is not page aligned`);
    if (!(flags & MREMAP_MAYMOVE)) fail("EINVAL", "MREMAP_FIXED and MREMAP_DONTUNMAP need MREMAP_MAYMOVE");
    if (flags & MREMAP_DONTUNMAP && oldLen !== newLen)
      fail("EINVAL", `MREMAP_DONTUNMAP cannot resize (old_len ${oldLen}, new_len ${newLen})`);
    if (flags & MREMAP_FIXED && newAddr < addr + oldLen && addr < newAddr + newLen) {
      fail(
        "EINVAL",
        `destination [${hex(newAddr)}, +${newLen}) overlaps the source [${hex(addr)}, +${oldLen})`,
      );
    }
  }
  // A same-size MREMAP_FIXED move may move every VMA in the range (remap_move).
  if (flags & MREMAP_FIXED && oldLen === newLen && oldLen > 0) {
    return moveMany(mm, addr, oldLen, newAddr, (flags & MREMAP_DONTUNMAP) !== 0);
  }
  const vma = mm.findVma(addr);
  if (vma === null) fail("EFAULT", `${hex(addr)} is not mapped`);
  const shrink = oldLen > newLen;
  const expand = newLen > oldLen;
  if (!impliesNewAddr) {
    if (shrink) {
      mm.munmapOp(addr + newLen, oldLen - newLen);
      return addr;
    }
    if (!expand) return addr;
  }
  if (oldLen === 0 && !vma.shared)
    fail("EINVAL", `old_len 0 duplicates only shared mappings; ${hex(addr)} is private`);
  const span = shrink ? newLen : oldLen;
  if (span > vma.end - addr)
    fail("EFAULT", `[${hex(addr)}, +${span}) is not inside one mapping (${vma} ends at ${hex(vma.end)})`);
  if (impliesNewAddr) return mremapTo(mm, vma, addr, oldLen, newLen, flags, newAddr);
  // mremap_at, growing: in place if the range ends the VMA and the room after it is free.
  if (
    addr + oldLen === vma.end &&
    vma.end + (newLen - oldLen) <= TASK_SIZE &&
    !mm.vmas.intersects(vma.end, addr + newLen)
  ) {
    mm.vmas.adjust(vma, vma.start, addr + newLen);
    mm.vmas.mergeAround(vma.start, vma.end);
    return addr;
  }
  if (!(flags & MREMAP_MAYMOVE)) {
    fail(
      "ENOMEM",
      `cannot grow [${hex(addr)}, +${oldLen}) to ${newLen} in place and MREMAP_MAYMOVE is not set`,
    );
  }
  const dst = mm.getUnmappedArea(undefined, newLen);
  return moveVma(mm, vma, addr, oldLen, newLen, dst, false);
}

/** mremap_to: a move to `newAddr` (MREMAP_FIXED) or to a free range (MREMAP_DONTUNMAP alone). */
function mremapTo(
  mm: MremapMm,
  vma: Vma,
  addr: number,
  oldLen: number,
  newLen: number,
  flags: number,
  newAddr: number,
): number {
  let len = oldLen;
  if (flags & MREMAP_FIXED) mm.munmapOp(newAddr, newLen);
  if (oldLen > newLen) {
    mm.munmapOp(addr + newLen, oldLen - newLen);
    len = newLen;
  }
  const v = mm.findVma(addr) ?? vma;
  const dst = flags & MREMAP_FIXED ? newAddr : mm.getUnmappedArea(undefined, newLen);
  return moveVma(mm, v, addr, len, newLen, dst, (flags & MREMAP_DONTUNMAP) !== 0);
}

/**
 * A same-size MREMAP_FIXED move of every VMA part in [addr, addr + len) (remap_move), gaps kept
 * as gaps; `addr` itself must be mapped (EFAULT).
 */
function moveMany(mm: MremapMm, addr: number, len: number, newAddr: number, dontunmap: boolean): number {
  const end = addr + len;
  if (mm.findVma(addr) === null) fail("EFAULT", `${hex(addr)} is not mapped`);
  mm.munmapOp(newAddr, len);
  let cur = addr;
  while (cur < end) {
    const v = mm.vmas.findFrom(cur);
    if (v === null || v.start >= end) break;
    const s = Math.max(cur, v.start);
    const e = Math.min(end, v.end);
    moveVma(mm, v, s, e - s, e - s, newAddr + (s - addr), dontunmap);
    cur = e;
  }
  return newAddr;
}

/**
 * move_vma: a new VMA at `dst` (copy_vma: same flags, anon_vma and linear page index), the
 * entries of [oldAddr, oldAddr + oldLen) moved to it, then the old range unmapped (or, with
 * DONTUNMAP, left mapped and empty, its anon_vma unlinked when the whole VMA moved).
 */
function moveVma(
  mm: MremapMm,
  vma: Vma,
  oldAddr: number,
  oldLen: number,
  newLen: number,
  dst: number,
  dontunmap: boolean,
): number {
  const pgoff = vma.pgoff + (oldAddr - vma.start) / PAGE_SIZE;
  const nv = new Vma(
    dst,
    dst + newLen,
    vma.prot,
    vma.shared,
    vma.thpAdvice,
    vma.noreserve,
    vma.anonVma,
    vma.shmem,
    pgoff,
  );
  nv.forkChild = vma.forkChild;
  nv.account = vma.account;
  if (nv.shmem) nv.shmem.users++;
  mm.vmas.insert(nv);
  if (!vma.shared && dst !== oldAddr) mm.machine.anonMoved = true;
  if (oldLen > 0) {
    // move_page_tables tells mirrors the source is going away; the destination was empty.
    mm.notifiers.invalidate(oldAddr, oldAddr + oldLen, MmuNotifyEvent.UNMAP, null, () =>
      movePageTables(mm, oldAddr, dst, oldLen),
    );
  }
  if (dontunmap) {
    const whole = vma.start === oldAddr && vma.end === oldAddr + oldLen;
    if (whole && !vma.shared) {
      vma.anonVma = 0;
      vma.forkChild = false;
    }
  } else if (oldLen > 0) {
    mm.munmapOp(oldAddr, oldLen);
  }
  mm.vmas.mergeAround(dst, dst + newLen);
  return dst;
}

/**
 * Move the entries of [oldAddr, oldAddr + len) to [newAddr, ...) one extent at a time, an
 * extent ending at the next PMD boundary of either side (move_page_tables). A huge PMD moves
 * whole when the extent is a whole aligned 2 MiB on both sides (move_huge_pmd), else it is split
 * first; a whole aligned table moves with its PMD, an empty one too (move_normal_pmd); otherwise
 * the destination gets a table wherever the source had one and the PTEs move one by one
 * (move_ptes), whatever their kind.
 */
function movePageTables(mm: MremapMm, oldAddr: number, newAddr: number, len: number): void {
  const pt = mm.pt;
  for (let off = 0; off < len; ) {
    const o = oldAddr + off;
    const n = newAddr + off;
    const extent = Math.min(
      HPAGE_PMD_SIZE - (o % HPAGE_PMD_SIZE),
      HPAGE_PMD_SIZE - (n % HPAGE_PMD_SIZE),
      len - off,
    );
    off += extent;
    const slot = pt.pmdSlot(o);
    if (slot < 0) continue;
    if (pt.leafAt(slot) < 0) {
      const kind = pt.pmdFlags[slot] & ENTRY_KIND_MASK;
      if (kind === ENTRY_NONE) continue;
      if (extent === HPAGE_PMD_SIZE) {
        const pfn = pt.pmdPfn[slot];
        const flags = pt.pmdFlags[slot];
        pt.clearPmd(slot);
        pt.setPmdHuge(pt.pmdSlotAlloc(n), pfn, flags);
        continue;
      }
      // Present, migration and device-private PMDs alike become 512 PTEs (split_huge_pmd).
      splitHugePmd(mm, slot, o - (o % HPAGE_PMD_SIZE));
    }
    const srcSlot = pt.pmdSlot(o);
    const leaf = pt.leafAt(srcSlot);
    if (leaf < 0) continue;
    // The destination's table exists from here on, even if no entry ends up in it.
    pt.ptePosAlloc(n);
    for (let i = 0; i < extent / PAGE_SIZE; i++) {
      const sp = pt.ptePos(o + i * PAGE_SIZE);
      const f = pt.pteFlags[sp];
      if ((f & ENTRY_KIND_MASK) === ENTRY_NONE) continue;
      const pfn = pt.ptePfn[sp];
      pt.clearPte(sp);
      pt.setPte(pt.ptePosAlloc(n + i * PAGE_SIZE), pfn, f);
    }
    if (extent === HPAGE_PMD_SIZE) pt.freeLeafIfEmpty(pt.leafAt(pt.pmdSlot(o)));
  }
}
