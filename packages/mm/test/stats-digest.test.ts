import { describe, expect, it } from "vitest";
import {
  type ContentMode,
  ContentStore,
  contentDigest,
  HPAGE_PMD_NR,
  HPAGE_PMD_SIZE,
  MADV_DONTNEED,
  MADV_HUGEPAGE,
  MAP_FIXED,
  Machine,
  type MachineConfig,
  MmError,
  PROT_READ,
  type Process,
  SegvError,
  stampToken,
} from "../src/index.js";
import { mmapHuge, mmapPrivate, mmapShared, PAGE, PRIVATE, RW, thrown } from "./helpers.js";

function setup(config: Partial<MachineConfig> = {}) {
  const m = new Machine({ contentMode: "tag", ...config });
  const p = m.createProcess();
  return { m, p, mm: p.mm };
}

describe("fault and COW counters", () => {
  it("count each kind of fault once per event", () => {
    const { m, p } = setup();
    const a = mmapPrivate(p, 4 * PAGE);
    p.readPageHash(a); // zero page
    p.writeStamp(a, PAGE, 1); // zero-page COW
    p.writeStamp(a + PAGE, PAGE, 2); // anonymous page
    const s = mmapShared(p, PAGE);
    p.readPageHash(s); // shmem
    expect(() => p.readPageHash(a + 4 * PAGE)).toThrow(SegvError);
    expect(m.stats.snapshot()).toMatchObject({
      faults: 4,
      faultZeroPage: 1,
      cowCopies: 1,
      faultAnon: 1,
      faultShmem: 1,
      segv: 1,
      cowReuses: 0,
      thpAllocs: 0,
    });
    expect(p.minorFaults).toBe(4);
  });

  it("snapshot copies the counters, including the notifier traffic, into a plain object", () => {
    const { m } = setup();
    const snap = m.stats.snapshot();
    expect(snap).toMatchObject({ faults: 0, notifierRanges: 0, notifierCalls: 0, notifierPages: 0 });
    expect("notifier" in snap).toBe(false);
    m.stats.faults++;
    expect(snap.faults).toBe(0);
  });
});

describe("RSS counters", () => {
  it("count anonymous pages, THP pages and shmem pages separately, and not the zero page", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 8 * PAGE);
    p.readPageHash(a);
    expect(mm.rss).toBe(0);
    p.writeStamp(a, 3 * PAGE, 1);
    expect(mm.rssAnon).toBe(3);
    const h = mmapHuge(p);
    p.writeStamp(h, PAGE, 1);
    expect(mm.rssAnon).toBe(3 + HPAGE_PMD_NR);
    const s = mmapShared(p, 2 * PAGE);
    p.writeStamp(s, 2 * PAGE, 1);
    expect(mm.rssShmem).toBe(2);
    expect(mm.rss).toBe(3 + HPAGE_PMD_NR + 2);
  });

  it("drop with MADV_DONTNEED and munmap, and go to zero at exit", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 8 * PAGE);
    p.writeStamp(a, 8 * PAGE, 1);
    mm.madvise(a, 2 * PAGE, MADV_DONTNEED);
    expect(mm.rssAnon).toBe(6);
    mm.munmap(a + 6 * PAGE, 2 * PAGE);
    expect(mm.rssAnon).toBe(4);
    const h = mmapHuge(p);
    p.writeStamp(h, PAGE, 1);
    mm.munmap(h + PAGE, PAGE);
    expect(mm.rssAnon).toBe(4 + HPAGE_PMD_NR - 1);
    p.exit();
    expect(mm.rss).toBe(0);
  });

  it("give a forked child the RSS of the private pages it now shares, and none for shared mappings", () => {
    const { p } = setup();
    const a = mmapPrivate(p, 4 * PAGE);
    p.writeStamp(a, 4 * PAGE, 1);
    const s = mmapShared(p, 4 * PAGE);
    p.writeStamp(s, 4 * PAGE, 1);
    const c = p.fork();
    expect(c.mm.rssAnon).toBe(4);
    expect(c.mm.rssShmem).toBe(0);
    c.readPageHash(s);
    expect(c.mm.rssShmem).toBe(4); // fault-around mapped the other cached pages
    c.writeStamp(a, PAGE, 2);
    expect(c.mm.rssAnon).toBe(4);
  });
});

describe("content store", () => {
  it("hashes a stamped page to the same value in bytes and tag mode, and zeros to 0", () => {
    const bytes = new ContentStore("bytes", 4);
    const tag = new ContentStore("tag", 4);
    for (const s of [0, 1, -7, 0x7fffffff, 123456789]) {
      bytes.stamp(1, s);
      tag.stamp(1, s);
      expect(bytes.hash(1)).toBe(tag.hash(1));
      expect(bytes.hash(1)).toBe(stampToken(s));
    }
    expect(bytes.hash(2)).toBe(0);
    expect(tag.hash(2)).toBe(0);
    bytes.zero(1);
    expect(bytes.hash(1)).toBe(0);
  });

  it("gives different stamps different hashes", () => {
    const seen = new Set<number>();
    for (let s = 0; s < 1000; s++) seen.add(stampToken(s));
    expect(seen.size).toBe(1000);
  });

  it("refuses raw byte access in tag mode with a message that says what to do", () => {
    const { p } = setup({ contentMode: "tag" });
    const a = mmapPrivate(p, PAGE);
    const e = thrown(() => p.write(a, new Uint8Array([1])));
    expect(e).toBeInstanceOf(MmError);
    expect(e.code).toBe("CONTENT_MODE");
    expect(e.message).toContain('contentMode: "bytes"');
  });

  it("reads back bytes written across a page boundary in bytes mode", () => {
    const { p } = setup({ contentMode: "bytes" });
    const a = mmapPrivate(p, 2 * PAGE);
    const data = Uint8Array.from({ length: 100 }, (_, i) => i + 1);
    p.write(a + PAGE - 50, data);
    expect(Array.from(p.read(a + PAGE - 50, 100))).toEqual(Array.from(data));
    expect(Array.from(p.read(a, 4))).toEqual([0, 0, 0, 0]);
  });
});

/** Apply the same stamped-write history to a fresh machine. */
function history(mode: ContentMode, thp: boolean, extra: (p: Process, a: number) => void = () => {}): string {
  const m = new Machine({ contentMode: mode, thp: thp ? "madvise" : "never" });
  const p = m.createProcess();
  const a = p.mm.mmap({
    addr: 0x7000_0000_0000,
    length: 2 * HPAGE_PMD_SIZE,
    prot: RW,
    flags: PRIVATE | MAP_FIXED,
  });
  p.mm.madvise(a, 2 * HPAGE_PMD_SIZE, MADV_HUGEPAGE);
  p.writeStamp(a, 4 * PAGE, 11);
  p.writeStamp(a + HPAGE_PMD_SIZE + 7 * PAGE, PAGE, 12);
  p.readPageHash(a + 40 * PAGE);
  extra(p, a);
  return contentDigest(p.mm);
}

describe("contentDigest", () => {
  it("is the same in bytes and tag mode for the same stamped writes", () => {
    expect(history("bytes", true)).toBe(history("tag", true));
    expect(history("bytes", false)).toBe(history("tag", false));
  });

  it("does not depend on whether memory is backed by THPs or 4 KiB pages", () => {
    expect(history("tag", true)).toBe(history("tag", false));
  });

  it("counts only pages that are not all zeros", () => {
    expect(history("tag", true).endsWith(":5")).toBe(true);
  });

  it("changes when one page's content changes", () => {
    const base = history("tag", false);
    expect(history("tag", false, (p, a) => p.writeStamp(a + 2 * PAGE, PAGE, 99))).not.toBe(base);
    // Writing back the same stamp changes nothing.
    expect(history("tag", false, (p, a) => p.writeStamp(a + 2 * PAGE, PAGE, 11))).toBe(base);
  });

  it("changes when the same content moves to another address", () => {
    const a = history("tag", false, (p, b) => p.writeStamp(b + 100 * PAGE, PAGE, 5));
    const b = history("tag", false, (p, c) => p.writeStamp(c + 101 * PAGE, PAGE, 5));
    expect(a).not.toBe(b);
  });

  it("drops a page whose mapping is zapped, and ignores pages written with zeros", () => {
    const base = history("bytes", false);
    const zapped = history("bytes", false, (p, a) => {
      p.writeStamp(a + 50 * PAGE, PAGE, 77);
      p.mm.madvise(a + 50 * PAGE, PAGE, MADV_DONTNEED);
    });
    expect(zapped).toBe(base);
    const zeros = history("bytes", false, (p, a) => p.write(a + 60 * PAGE, new Uint8Array(PAGE)));
    expect(zeros).toBe(base);
  });

  it("is unchanged by fork, and the child's equals the parent's", () => {
    const { p } = setup();
    const a = mmapHuge(p);
    p.writeStamp(a, 8 * PAGE, 3);
    const s = mmapShared(p, 2 * PAGE);
    p.writeStamp(s, PAGE, 4);
    const before = contentDigest(p.mm);
    const c = p.fork();
    expect(contentDigest(p.mm)).toBe(before);
    // The child has not faulted the shared mapping in yet; after reading it, it sees the same.
    c.readPageHash(s);
    expect(contentDigest(c.mm)).toBe(before);
    c.writeStamp(a, PAGE, 5);
    expect(contentDigest(c.mm)).not.toBe(before);
    expect(contentDigest(p.mm)).toBe(before);
  });

  it("is unchanged by an mprotect that keeps the pages readable", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 4 * PAGE);
    p.writeStamp(a, 4 * PAGE, 1);
    const before = contentDigest(mm);
    mm.mprotect(a, 2 * PAGE, PROT_READ);
    expect(contentDigest(mm)).toBe(before);
  });
});
