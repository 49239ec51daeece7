/**
 * hmm-tests.c, ported: THP windows migrated whole (the current dmirror, MIGRATE_VMA_SELECT_COMPOUND)
 * or page by page, with allocation failures, partial unmaps and mremap.
 */
import {
  HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL,
  HMM_DMIRROR_PROT_PMD,
  HMM_DMIRROR_PROT_WRITE,
} from "@hmmkit/core";
import {
  MADV_COLLAPSE,
  MADV_FREE,
  MADV_HUGEPAGE,
  MADV_NOHUGEPAGE,
  MREMAP_DONTUNMAP,
  MREMAP_FIXED,
  MREMAP_MAYMOVE,
  PROT_READ,
} from "@hmmkit/mm";
import { describe, expect, it } from "vitest";
import {
  ENOENT,
  HMM_DMIRROR_FLAG_FAIL_ALLOC,
  HMM_DMIRROR_FLAGS,
  HMM_DMIRROR_MIGRATE_TO_DEV,
  HMM_DMIRROR_MIGRATE_TO_SYS,
  HMM_DMIRROR_SNAPSHOT,
  hmmDmirrorCmd,
  PAGE_SIZE,
} from "./dmirror-fake.js";
import {
  align,
  asInts,
  cpuInts,
  expectInts,
  fixture,
  initInts,
  mmap,
  newBuffer,
  PMD,
  RW,
} from "./selftest-helpers.js";

describe("hmm-tests.c on a DEVICE_PRIVATE dmirror: THP migration", () => {
  for (const compound of [true, false]) {
    const mode = compound ? "compound" : "base pages";

    it(`migrate_anon_huge_empty (${mode}): an untouched read-only THP window migrates as zero-filled device pages`, () => {
      const { p, fd } = fixture(compound);
      const raw = mmap(p, 2 * PMD, PROT_READ);
      const ptr = align(raw, PMD);
      p.mm.madvise(ptr, PMD, MADV_HUGEPAGE);
      const npages = PMD / PAGE_SIZE;
      const buf = newBuffer(ptr, PMD);
      buf.mirror.fill(0xff);
      expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, npages)).toBe(0);
      expect(buf.cpages).toBe(npages);
      expectInts(asInts(buf.mirror), () => 0, "mirror");
    });

    it(`migrate_anon_huge_zero (${mode}): a huge zero page migrates as zero-filled device pages and faults back as zeros`, () => {
      const { p, fd } = fixture(compound);
      const raw = mmap(p, 2 * PMD, PROT_READ);
      const ptr = align(raw, PMD);
      p.mm.madvise(ptr, PMD, MADV_HUGEPAGE);
      const npages = PMD / PAGE_SIZE;
      const buf = newBuffer(ptr, PMD);
      buf.mirror.fill(0xff);
      expect(cpuInts(p, ptr, 4)[0]).toBe(0);
      expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, npages)).toBe(0);
      expect(buf.cpages).toBe(npages);
      expectInts(asInts(buf.mirror), () => 0, "mirror");
      expectInts(cpuInts(p, ptr, PMD), () => 0, "ptr");
    });

    it(`migrate_anon_huge_free (${mode}): a migrated THP can be MADV_FREEd`, () => {
      const { p, fd } = fixture(compound);
      const raw = mmap(p, 2 * PMD, RW);
      const ptr = align(raw, PMD);
      p.mm.madvise(ptr, PMD, MADV_HUGEPAGE);
      const npages = PMD / PAGE_SIZE;
      initInts(p, ptr, PMD, (i) => i);
      const buf = newBuffer(ptr, PMD);
      expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, npages)).toBe(0);
      expect(buf.cpages).toBe(npages);
      expectInts(asInts(buf.mirror), (i) => i, "mirror");
      expect(() => p.mm.madvise(ptr, PMD, MADV_FREE)).not.toThrow();
    });

    it(`migrate_anon_huge_fault (${mode}): a collapsed THP migrates, snapshots as this device's pages, and faults back intact`, () => {
      const { p, fd } = fixture(compound);
      const raw = mmap(p, 2 * PMD, RW);
      const ptr = align(raw, PMD);
      const npages = PMD / PAGE_SIZE;
      initInts(p, ptr, PMD, (i) => i);
      p.mm.madvise(ptr, PMD, MADV_COLLAPSE);
      const buf = newBuffer(ptr, PMD);
      expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, npages)).toBe(0);
      expect(buf.cpages).toBe(npages);
      expectInts(asInts(buf.mirror), (i) => i, "mirror");
      expect(hmmDmirrorCmd(fd, HMM_DMIRROR_SNAPSHOT, buf, npages)).toBe(0);
      expect(buf.cpages).toBe(npages);
      // The kernel's expectation (compound): DEV_PRIVATE_LOCAL|WRITE|PMD on every page.
      const want =
        HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE | (compound ? HMM_DMIRROR_PROT_PMD : 0);
      expect(buf.mirror.subarray(0, npages).every((b) => b === want)).toBe(true);
      expectInts(cpuInts(p, ptr, PMD), (i) => i, "ptr");
    });

    it(`migrate_anon_huge_err (${mode}): FAIL_ALLOC on the way to the device and back loses no data`, () => {
      const { p, fd, devices } = fixture(compound);
      let raw = mmap(p, 2 * PMD, RW);
      let ptr = align(raw, PMD);
      p.mm.madvise(ptr, PMD, MADV_HUGEPAGE);
      const npages = PMD / PAGE_SIZE;
      initInts(p, ptr, PMD, (i) => i);
      const buf = newBuffer(ptr, PMD);
      expect(hmmDmirrorCmd(fd, HMM_DMIRROR_FLAGS, buf, HMM_DMIRROR_FLAG_FAIL_ALLOC)).toBe(0);
      const rc = hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, npages);
      if (compound) {
        // The failed huge allocation falls back to base pages: everything migrates.
        expect(rc).toBe(0);
        expect(buf.cpages).toBe(npages);
        expectInts(asInts(buf.mirror), (i) => i, "mirror");
      } else {
        // Base pages: the one failed page stays in system memory, the read-back misses it.
        expect(rc).toBe(-ENOENT);
        expect(devices[0].memory.used).toBe(npages - 1);
      }
      expect(cpuInts(p, ptr + 2048 * 4, 4)[0]).toBe(2048);
      p.mm.munmap(raw, 2 * PMD);
      raw = mmap(p, 2 * PMD, RW);
      ptr = align(raw, PMD);
      p.mm.madvise(ptr, PMD, MADV_HUGEPAGE);
      initInts(p, ptr, PMD, (i) => i);
      buf.ptr = ptr;
      expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, npages)).toBe(0);
      expect(buf.cpages).toBe(npages);
      expect(hmmDmirrorCmd(fd, HMM_DMIRROR_FLAGS, buf, HMM_DMIRROR_FLAG_FAIL_ALLOC)).toBe(0);
      expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_SYS, buf, npages)).toBe(0);
      expect(cpuInts(p, ptr + 2048 * 4, 4)[0]).toBe(2048);
      expectInts(cpuInts(p, ptr, PMD), (i) => i, "ptr");
    });

    it(`migrate_anon_huge_zero_err (${mode}): FAIL_ALLOC while migrating an empty or huge-zero THP window still gives zeros`, () => {
      const { p, fd } = fixture(compound);
      let raw = mmap(p, 2 * PMD, PROT_READ);
      let ptr = align(raw, PMD);
      p.mm.madvise(ptr, PMD, MADV_HUGEPAGE);
      const npages = PMD / PAGE_SIZE;
      const buf = newBuffer(ptr, PMD);
      buf.mirror.fill(0xff);
      expect(hmmDmirrorCmd(fd, HMM_DMIRROR_FLAGS, buf, HMM_DMIRROR_FLAG_FAIL_ALLOC)).toBe(0);
      const rc = hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, npages);
      if (compound) {
        expect(rc).toBe(0);
        expect(buf.cpages).toBe(npages);
        expectInts(asInts(buf.mirror), () => 0, "mirror");
      } else expect(rc).toBe(-ENOENT);
      expect(cpuInts(p, ptr + 2048 * 4, 4)[0]).toBe(0);
      p.mm.munmap(raw, 2 * PMD);
      raw = mmap(p, 2 * PMD, PROT_READ);
      ptr = align(raw, PMD);
      p.mm.madvise(ptr, PMD, MADV_HUGEPAGE);
      expect(cpuInts(p, ptr, 4)[0]).toBe(0);
      buf.ptr = ptr;
      expect(hmmDmirrorCmd(fd, HMM_DMIRROR_FLAGS, buf, HMM_DMIRROR_FLAG_FAIL_ALLOC)).toBe(0);
      expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, npages)).toBe(compound ? 0 : -ENOENT);
      expectInts(cpuInts(p, ptr, PMD), () => 0, "ptr");
    });
  }
  for (const thp of [false, true]) {
    for (const offset of [0, PMD / 4, PMD / 2]) {
      it(`migrate_partial_unmap_fault (thp=${+thp}, offset=${offset / PAGE_SIZE} pages): after a partial munmap of migrated memory the rest faults back intact`, () => {
        const { p, fd } = fixture();
        const raw = mmap(p, 2 * PMD, RW);
        const ptr = align(raw, PMD);
        p.mm.madvise(ptr, PMD, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
        const npages = PMD / PAGE_SIZE;
        initInts(p, ptr, PMD, (i) => i);
        const buf = newBuffer(ptr, PMD);
        expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, npages)).toBe(0);
        expect(buf.cpages).toBe(npages);
        expectInts(asInts(buf.mirror), (i) => i, "mirror");
        p.mm.munmap(ptr + offset, PMD / 2);
        if (offset > 0) expectInts(cpuInts(p, ptr, offset), (i) => i, "before the hole");
        const after = offset + PMD / 2;
        if (after < PMD)
          expectInts(cpuInts(p, ptr + after, PMD - after), (i) => i + after / 4, "after the hole");
      });
    }
  }
  it("migrate_remap_fault: memory migrated before or after an mremap (with and without DONTUNMAP, THP or not, three offsets) faults back intact at the new address", () => {
    let runs = 0;
    for (const before of [false, true]) {
      for (const dontUnmap of [false, true]) {
        for (const thp of [false, true]) {
          for (const offset of [0, PMD / 4, PMD / 2]) {
            const { p, fd } = fixture();
            const raw = mmap(p, 8 * PMD, RW);
            const map = align(raw, PMD);
            p.mm.madvise(map, PMD, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
            p.mm.munmap(map + PMD, 2 * PMD);
            const npages = PMD / PAGE_SIZE;
            initInts(p, map, PMD, (i) => i);
            const flags = MREMAP_MAYMOVE | MREMAP_FIXED | (dontUnmap ? MREMAP_DONTUNMAP : 0);
            const buf = newBuffer(map, PMD);
            let newPtr = map;
            if (before) {
              newPtr = p.mm.mremap(map, PMD, PMD, flags, map + PMD + offset);
              buf.ptr = newPtr;
            }
            const what = `before=${+before} dontunmap=${+dontUnmap} thp=${+thp} offset=${offset}`;
            expect(hmmDmirrorCmd(fd, HMM_DMIRROR_MIGRATE_TO_DEV, buf, npages), what).toBe(0);
            expect(buf.cpages, what).toBe(npages);
            expectInts(asInts(buf.mirror), (i) => i, `${what}: mirror`);
            if (!before) newPtr = p.mm.mremap(map, PMD, PMD, flags, map + PMD + offset);
            expectInts(cpuInts(p, newPtr, PMD), (i) => i, `${what}: ptr`);
            runs++;
          }
        }
      }
    }
    expect(runs).toBe(24);
  });
});
