import { describe, expect, it } from "vitest";
import {
  contentDigest,
  ENTRY_DIRTY,
  FRAME_LAZYFREE,
  HPAGE_PMD_SIZE,
  MADV_COLD,
  MADV_FREE,
  MADV_PAGEOUT,
  Machine,
  MmuNotifyEvent,
} from "../src/index.js";
import {
  expectNoFrameReferenced,
  hugePmdAt,
  mmapHuge,
  mmapPrivate,
  mmapShared,
  PAGE,
  pteAt,
  RecordingFakeNotifier,
  thrown,
} from "./helpers.js";

const { CLEAR } = MmuNotifyEvent;

function setup(memoryBytes = 64 * 1024 * 1024, contentMode: "tag" | "bytes" = "tag") {
  const m = new Machine({ contentMode, memoryBytes });
  const p = m.createProcess();
  return { m, p, mm: p.mm };
}

describe("MADV_FREE", () => {
  it("sends one CLEAR over the advised range and keeps every page mapped with its frame", () => {
    const { m: machine, p, mm } = setup();
    const a = mmapPrivate(p, 8 * PAGE);
    p.writeStamp(a, 8 * PAGE, 7);
    const before = [0, 1, 2, 3].map((i) => pteAt(mm, a + (2 + i) * PAGE)!.pfn);
    const fake = new RecordingFakeNotifier();
    mm.notifiers.insert(a, 8 * PAGE, fake);
    mm.madvise(a + 2 * PAGE, 4 * PAGE, MADV_FREE);
    expect(fake.events).toEqual([[CLEAR, a + 2 * PAGE, a + 6 * PAGE]]);
    for (let i = 0; i < 4; i++) {
      const e = pteAt(mm, a + (2 + i) * PAGE)!;
      expect(e.pfn).toBe(before[i]);
      expect(e.flags & ENTRY_DIRTY).toBe(0);
      expect(machine.pool.flags[e.pfn] & FRAME_LAZYFREE).toBe(FRAME_LAZYFREE);
    }
    expect(pteAt(mm, a)!.flags & ENTRY_DIRTY).toBe(ENTRY_DIRTY);
  });

  it("lets a CPU write re-dirty a lazily-freed page without a fault, so MADV_PAGEOUT keeps it", () => {
    const { m: machine, p, mm } = setup();
    const a = mmapPrivate(p, 4 * PAGE);
    p.writeStamp(a, 4 * PAGE, 3);
    mm.madvise(a, 4 * PAGE, MADV_FREE);
    const faults = p.minorFaults;
    p.writeStamp(a, PAGE, 99);
    expect(p.minorFaults).toBe(faults);
    const hash = p.readPageHash(a);
    mm.madvise(a, 4 * PAGE, MADV_PAGEOUT);
    expect(pteAt(mm, a)).not.toBeNull();
    expect(p.readPageHash(a)).toBe(hash);
    expect(machine.pool.flags[pteAt(mm, a)!.pfn] & FRAME_LAZYFREE).toBe(0);
    for (let i = 1; i < 4; i++) expect(pteAt(mm, a + i * PAGE)).toBeNull();
    // Discarded pages read back as zeros.
    expect(p.readPageHash(a + PAGE)).toBe(0);
  });

  it("fails with EINVAL on a shared mapping and leaves it alone", () => {
    const { p, mm } = setup();
    const s = mmapShared(p, 4 * PAGE);
    p.writeStamp(s, 4 * PAGE, 1);
    const e = thrown(() => mm.madvise(s, 4 * PAGE, MADV_FREE));
    expect(e.errno).toBe("EINVAL");
    expect(e.message).toMatch(/MADV_FREE of shared mapping/);
    mm.madvise(s, 4 * PAGE, MADV_PAGEOUT);
    expect(pteAt(mm, s)).toBeNull();
    // The shared object kept the page: a read maps the same data again.
    expect(p.readPageHash(s)).not.toBe(0);
  });
});

describe("reclaim of lazily-freed pages", () => {
  it("discards clean lazyfree pages when an allocation would otherwise fail, keeping re-dirtied ones", () => {
    // 8 MiB: block 0 is the zero page, so 3 blocks (1536 frames) are usable.
    const { m: machine, p, mm } = setup(8 * 1024 * 1024);
    const a = mmapPrivate(p, 1200 * PAGE);
    p.writeStamp(a, 1200 * PAGE, 5);
    mm.madvise(a, 1200 * PAGE, MADV_FREE);
    p.writeStamp(a, 10 * PAGE, 6);
    const kept = p.readPageHash(a);
    const b = mmapPrivate(p, 1000 * PAGE);
    const fake = new RecordingFakeNotifier();
    mm.notifiers.insert(a, 1200 * PAGE, fake);
    p.writeStamp(b, 1000 * PAGE, 8);
    expect(fake.events.length).toBeGreaterThan(0);
    expect(fake.events.every(([ev, s, e]) => ev === CLEAR && e - s === PAGE)).toBe(true);
    for (let i = 0; i < 10; i++) expect(pteAt(mm, a + i * PAGE)).not.toBeNull();
    expect(p.readPageHash(a)).toBe(kept);
    expect(pteAt(mm, a + 1199 * PAGE)).toBeNull();
    expect(p.readPageHash(a + 1199 * PAGE)).toBe(0);
    p.exit();
    expectNoFrameReferenced(machine);
  });

  it("still reports ENOMEM when nothing is lazily freed", () => {
    const { p } = setup(8 * 1024 * 1024);
    const a = mmapPrivate(p, 2000 * PAGE);
    expect(() => p.writeStamp(a, 2000 * PAGE, 1)).toThrow(/out of memory/);
  });

  it("discards a whole lazily-freed THP with one CLEAR of its 2 MiB and leaves its PTE table", () => {
    const { m: machine, p, mm } = setup();
    const a = mmapHuge(p);
    p.writeStamp(a, HPAGE_PMD_SIZE, 2);
    expect(hugePmdAt(mm, a)).not.toBeNull();
    mm.madvise(a, HPAGE_PMD_SIZE, MADV_FREE);
    expect(hugePmdAt(mm, a)).not.toBeNull();
    const fake = new RecordingFakeNotifier();
    mm.notifiers.insert(a, HPAGE_PMD_SIZE, fake);
    const used = machine.usedFrames;
    mm.madvise(a, HPAGE_PMD_SIZE, MADV_PAGEOUT);
    expect(fake.events).toEqual([[CLEAR, a, a + HPAGE_PMD_SIZE]]);
    expect(machine.usedFrames).toBe(used - 512);
    expect(mm.pt.leafAt(mm.pt.pmdSlot(a))).toBeGreaterThanOrEqual(0);
    p.touch(a, PAGE, true);
    expect(hugePmdAt(mm, a)).toBeNull();
    expect(pteAt(mm, a)).not.toBeNull();
    p.exit();
    expectNoFrameReferenced(machine);
  });
});

describe("MADV_PAGEOUT and MADV_COLD", () => {
  it("keep the contents of ordinary private pages in both content modes", () => {
    const digests = (["tag", "bytes"] as const).map((mode) => {
      const { p, mm } = setup(64 * 1024 * 1024, mode);
      const a = mmapHuge(p, 2 * HPAGE_PMD_SIZE);
      p.writeStamp(a, HPAGE_PMD_SIZE / 2, 11);
      p.writeStamp(a + HPAGE_PMD_SIZE, 16 * PAGE, 12);
      mm.madvise(a, 2 * HPAGE_PMD_SIZE, MADV_COLD);
      mm.madvise(a, HPAGE_PMD_SIZE + 8 * PAGE, MADV_PAGEOUT);
      expect(hugePmdAt(mm, a)).toBeNull();
      return contentDigest(mm);
    });
    expect(digests[0]).toBe(digests[1]);
  });

  it("skip pages mapped by a second process after fork", () => {
    const { m: machine, p, mm } = setup();
    const a = mmapPrivate(p, 4 * PAGE);
    p.writeStamp(a, 4 * PAGE, 1);
    const c = p.fork();
    mm.madvise(a, 4 * PAGE, MADV_FREE);
    mm.madvise(a, 4 * PAGE, MADV_PAGEOUT);
    for (let i = 0; i < 4; i++) {
      expect(pteAt(mm, a + i * PAGE)!.pfn).toBe(pteAt(c.mm, a + i * PAGE)!.pfn);
      expect(machine.pool.mapcount[pteAt(mm, a + i * PAGE)!.pfn]).toBe(2);
    }
    c.exit();
    p.exit();
    expectNoFrameReferenced(machine);
  });
});
