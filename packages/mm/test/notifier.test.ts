import { describe, expect, it } from "vitest";
import {
  ENTRY_WRITE,
  HPAGE_PMD_SIZE,
  MADV_DONTNEED,
  Machine,
  type MachineConfig,
  type MmuIntervalNotifierOps,
  MmuNotifyEvent,
  PROT_READ,
  TASK_SIZE,
} from "../src/index.js";
import {
  hugePmdAt,
  MiB,
  mmapHuge,
  mmapPrivate,
  mmapShared,
  PAGE,
  pteAt,
  RecordingFakeNotifier,
  thrown,
} from "./helpers.js";

const { UNMAP, CLEAR, PROTECTION_VMA, PROTECTION_PAGE, RELEASE } = MmuNotifyEvent;

function setup(config: Partial<MachineConfig> = {}) {
  const m = new Machine({ contentMode: "tag", ...config });
  const p = m.createProcess();
  return { m, p, mm: p.mm };
}

/** A fake mirror whose callback always fails. */
class ThrowingFakeNotifier implements MmuIntervalNotifierOps {
  invalidate(): boolean {
    throw new Error("mirror is broken");
  }
}

/** A process with a written 8-page private mapping and a recording notifier over all of it. */
function watched() {
  const s = setup();
  const a = mmapPrivate(s.p, 8 * PAGE);
  s.p.writeStamp(a, 8 * PAGE, 1);
  const fake = new RecordingFakeNotifier();
  const sub = s.mm.notifiers.insert(a, 8 * PAGE, fake);
  return { ...s, a, fake, sub };
}

describe("MMU interval notifier events", () => {
  it("uses the Linux numbering of enum mmu_notifier_event", () => {
    expect([UNMAP, CLEAR, PROTECTION_VMA, PROTECTION_PAGE, RELEASE]).toEqual([0, 1, 2, 3, 5]);
    expect(MmuNotifyEvent.MIGRATE).toBe(6);
    expect(MmuNotifyEvent.EXCLUSIVE).toBe(7);
  });

  it("sends UNMAP for munmap over the whole requested range", () => {
    const { mm, a, fake } = watched();
    mm.munmap(a + 2 * PAGE, 3 * PAGE);
    expect(fake.events).toEqual([[UNMAP, a + 2 * PAGE, a + 5 * PAGE]]);
  });

  it("sends UNMAP for munmap across a hole for the requested range, holes included", () => {
    const { mm, a, fake } = watched();
    mm.munmap(a + 2 * PAGE, 2 * PAGE);
    fake.clear();
    mm.munmap(a, 8 * PAGE);
    expect(fake.events).toEqual([[UNMAP, a, a + 8 * PAGE]]);
  });

  it("tells a notifier over an unmapped range about a munmap that covers it", () => {
    const { mm, a } = watched();
    mm.munmap(a + 6 * PAGE, 2 * PAGE);
    const hole = new RecordingFakeNotifier();
    mm.notifiers.insert(a + 6 * PAGE, 2 * PAGE, hole);
    mm.munmap(a, 8 * PAGE);
    expect(hole.events).toEqual([[UNMAP, a, a + 8 * PAGE]]);
  });

  it("sends CLEAR for MADV_DONTNEED", () => {
    const { mm, a, fake } = watched();
    mm.madvise(a + PAGE, PAGE, MADV_DONTNEED);
    expect(fake.events).toEqual([[CLEAR, a + PAGE, a + 2 * PAGE]]);
  });

  it("sends PROTECTION_VMA for mprotect of populated memory", () => {
    const { mm, a, fake } = watched();
    mm.mprotect(a, 4 * PAGE, PROT_READ);
    expect(fake.events).toEqual([[PROTECTION_VMA, a, a + 4 * PAGE]]);
  });

  it("sends nothing for mprotect of memory without page tables", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, 8 * PAGE);
    const fake = new RecordingFakeNotifier();
    mm.notifiers.insert(a, 8 * PAGE, fake);
    mm.mprotect(a, 8 * PAGE, PROT_READ);
    expect(fake.events).toEqual([]);
  });

  it("sends PROTECTION_PAGE to the parent's notifiers over each private VMA copied at fork", () => {
    const { p, a, fake } = watched();
    const c = p.fork();
    expect(fake.events).toEqual([[PROTECTION_PAGE, a, a + 8 * PAGE]]);
    expect(c.mm.notifiers.size).toBe(0);
  });

  it("sends nothing at fork for shared mappings, whose page tables are not copied", () => {
    const { p, mm } = setup();
    const a = mmapShared(p, 4 * PAGE);
    p.writeStamp(a, 4 * PAGE, 1);
    const fake = new RecordingFakeNotifier();
    mm.notifiers.insert(a, 4 * PAGE, fake);
    p.fork();
    expect(fake.events).toEqual([]);
  });

  it("sends CLEAR for the one page a COW break replaces", () => {
    const { p, a, fake } = watched();
    p.fork();
    fake.clear();
    p.writeStamp(a + 3 * PAGE, PAGE, 2);
    expect(fake.events).toEqual([[CLEAR, a + 3 * PAGE, a + 4 * PAGE]]);
  });

  it("gives every COW break's callback its own range, which stays as it was after the fault", () => {
    const { p, a, mm } = watched();
    p.fork();
    const kept: { start: number; end: number; event: number; mmId: number }[] = [];
    mm.notifiers.insert(a, 8 * PAGE, {
      invalidate(sub, range, seq) {
        sub.setSeq(seq);
        kept.push(range);
        return true;
      },
    });
    p.writeStamp(a + 2 * PAGE, PAGE, 2);
    p.writeStamp(a + 5 * PAGE, PAGE, 3);
    expect(kept.map((r) => [r.event, r.start, r.end, r.mmId])).toEqual([
      [CLEAR, a + 2 * PAGE, a + 3 * PAGE, mm.id],
      [CLEAR, a + 5 * PAGE, a + 6 * PAGE, mm.id],
    ]);
  });

  it("sends nothing and leaves the sequence idle for a COW break no notifier overlaps", () => {
    const { p, a, mm, fake } = watched();
    p.fork();
    const c = p.fork();
    fake.clear();
    const seq = mm.notifiers.invalidateSeq;
    c.writeStamp(a, 8 * PAGE, 4);
    expect(fake.events).toEqual([]);
    expect(c.mm.notifiers.invalidateSeq).toBe(2);
    expect(mm.notifiers.invalidateSeq).toBe(seq);
    expect(c.machine.stats.cowCopies).toBeGreaterThanOrEqual(8);
  });

  it("sends CLEAR when a write replaces the zero page", () => {
    const { p, mm } = setup();
    const a = mmapPrivate(p, PAGE);
    p.readPageHash(a);
    const fake = new RecordingFakeNotifier();
    mm.notifiers.insert(a, PAGE, fake);
    p.writeStamp(a, PAGE, 1);
    expect(fake.events).toEqual([[CLEAR, a, a + PAGE]]);
  });

  it("sends nothing for a write fault that reuses an exclusive page", () => {
    const { p, a, fake } = watched();
    const c = p.fork();
    c.exit();
    fake.clear();
    p.writeStamp(a, PAGE, 2);
    expect(fake.events).toEqual([]);
  });

  it("sends CLEAR over the whole 2 MiB for a THP split, before the partial operation's own event", () => {
    const { p, mm } = setup();
    const a = mmapHuge(p);
    p.writeStamp(a, PAGE, 1);
    const fake = new RecordingFakeNotifier();
    mm.notifiers.insert(a, HPAGE_PMD_SIZE, fake);
    mm.mprotect(a, PAGE, PROT_READ);
    // split_vma splits the PMD (vma_adjust_trans_huge) before change_protection runs.
    expect(fake.events).toEqual([
      [CLEAR, a, a + HPAGE_PMD_SIZE],
      [PROTECTION_VMA, a, a + PAGE],
    ]);
    fake.clear();
    mm.munmap(a + HPAGE_PMD_SIZE - PAGE, PAGE);
    expect(fake.events).toEqual([[UNMAP, a + HPAGE_PMD_SIZE - PAGE, a + HPAGE_PMD_SIZE]]);
  });

  it("sends CLEAR over the 2 MiB when a write replaces the huge zero page by a THP", () => {
    const { p, mm } = setup({ hugeZeroPage: true });
    const a = mmapHuge(p);
    p.readPageHash(a);
    const fake = new RecordingFakeNotifier();
    mm.notifiers.insert(a + 5 * PAGE, PAGE, fake);
    p.writeStamp(a, PAGE, 1);
    expect(fake.events).toEqual([[CLEAR, a, a + HPAGE_PMD_SIZE]]);
  });

  it("sends only the split's CLEAR and the copied page's CLEAR when the huge zero page write falls back", () => {
    const { p, mm, m } = setup({ memoryBytes: 8 * MiB, hugeZeroPage: true });
    const filler = mmapHuge(p, 2 * HPAGE_PMD_SIZE);
    p.writeStamp(filler, 2 * HPAGE_PMD_SIZE, 1);
    p.writeStamp(mmapPrivate(p, PAGE), PAGE, 1);
    const a = mmapHuge(p);
    p.readPageHash(a);
    const fake = new RecordingFakeNotifier();
    mm.notifiers.insert(a, HPAGE_PMD_SIZE, fake);
    p.writeStamp(a + PAGE, PAGE, 2);
    expect(m.stats.thpFallbacks).toBe(1);
    expect(fake.events).toEqual([
      [CLEAR, a, a + HPAGE_PMD_SIZE],
      [CLEAR, a + PAGE, a + 2 * PAGE],
    ]);
  });

  it("sends RELEASE over the whole address space at exit, then UNMAP", () => {
    const { p, fake } = watched();
    p.exit();
    // exit_mmap: mmu_notifier_release, then unmap_vmas over [0, ULONG_MAX) (TASK_SIZE here).
    expect(fake.events).toEqual([
      [RELEASE, 0, TASK_SIZE],
      [UNMAP, 0, TASK_SIZE],
    ]);
  });

  it("does not call a notifier whose interval does not overlap the range", () => {
    const { mm, a, fake } = watched();
    const after = new RecordingFakeNotifier();
    const before = new RecordingFakeNotifier();
    mm.notifiers.insert(a + 8 * PAGE, PAGE, after);
    mm.notifiers.insert(a - PAGE, PAGE, before);
    mm.munmap(a + 2 * PAGE, 2 * PAGE);
    expect(() => mm.madvise(a, 8 * PAGE, MADV_DONTNEED)).toThrow(/ENOMEM/);
    expect(after.events).toEqual([]);
    expect(before.events).toEqual([]);
    const inner = new RecordingFakeNotifier();
    mm.notifiers.insert(a + 5 * PAGE, PAGE, inner);
    mm.munmap(a, 4 * PAGE);
    expect(inner.events).toEqual([]);
    expect(fake.events.length).toBe(4); // UNMAP, then CLEAR for each of the two VMAs, UNMAP
  });
});

describe("the invalidation runs before the change", () => {
  it("munmap: the callback still sees the PTE and the frame", () => {
    const { m, mm, a, fake } = watched();
    const frame = pteAt(mm, a + PAGE)!.pfn;
    let seen: number | null = null;
    let used = -1;
    fake.onInvalidate = () => {
      seen = pteAt(mm, a + PAGE)?.pfn ?? null;
      used = m.usedFrames;
    };
    mm.munmap(a, 8 * PAGE);
    expect(seen).toBe(frame);
    expect(used).toBe(8);
    expect(m.usedFrames).toBe(0);
  });

  it("mprotect: the callback still sees the writable PTE", () => {
    const { mm, a, fake } = watched();
    let writable = false;
    fake.onInvalidate = () => {
      writable = (pteAt(mm, a)!.flags & ENTRY_WRITE) !== 0;
    };
    mm.mprotect(a, PAGE, PROT_READ);
    expect(writable).toBe(true);
    expect(pteAt(mm, a)!.flags & ENTRY_WRITE).toBe(0);
  });

  it("COW break: the callback still sees the old shared frame", () => {
    const { p, mm, a, fake } = watched();
    const old = pteAt(mm, a)!.pfn;
    p.fork();
    let seen = -1;
    fake.onInvalidate = () => {
      seen = pteAt(mm, a)!.pfn;
    };
    p.writeStamp(a, PAGE, 3);
    expect(seen).toBe(old);
    expect(pteAt(mm, a)!.pfn).not.toBe(old);
  });

  it("MADV_DONTNEED: the callback still sees the page mapped", () => {
    const { mm, a, fake } = watched();
    let mapped = false;
    fake.onInvalidate = () => {
      mapped = pteAt(mm, a) !== null;
    };
    mm.madvise(a, PAGE, MADV_DONTNEED);
    expect(mapped).toBe(true);
    expect(pteAt(mm, a)).toBeNull();
  });

  it("THP split: the callback still sees the huge PMD", () => {
    const { p, mm } = setup();
    const a = mmapHuge(p);
    p.writeStamp(a, PAGE, 1);
    const fake = new RecordingFakeNotifier();
    mm.notifiers.insert(a, PAGE, fake);
    let huge = false;
    fake.onInvalidate = (_sub, range) => {
      if (range.event === CLEAR) huge = hugePmdAt(mm, a) !== null;
    };
    mm.madvise(a + PAGE, PAGE, MADV_DONTNEED);
    expect(huge).toBe(true);
    expect(hugePmdAt(mm, a)).toBeNull();
  });

  it("fork: the callback still sees the parent's PTE writable", () => {
    const { p, mm, a, fake } = watched();
    let writable = false;
    fake.onInvalidate = () => {
      writable = (pteAt(mm, a)!.flags & ENTRY_WRITE) !== 0;
    };
    p.fork();
    expect(writable).toBe(true);
    expect(pteAt(mm, a)!.flags & ENTRY_WRITE).toBe(0);
  });
});

describe("the sequence protocol", () => {
  it("readRetry reports an invalidation of the interval between readBegin and readRetry", () => {
    const { mm, a, sub } = watched();
    const seq = sub.readBegin();
    expect(sub.readRetry(seq)).toBe(false);
    mm.madvise(a, PAGE, MADV_DONTNEED);
    expect(sub.readRetry(seq)).toBe(true);
    expect(sub.checkRetry(seq)).toBe(true);
    const again = sub.readBegin();
    expect(again).not.toBe(seq);
    expect(sub.readRetry(again)).toBe(false);
  });

  it("readRetry does not report an invalidation of another interval", () => {
    const { p, mm, sub } = watched();
    const b = mmapPrivate(p, PAGE);
    p.writeStamp(b, PAGE, 1);
    const seq = sub.readBegin();
    mm.madvise(b, PAGE, MADV_DONTNEED);
    expect(sub.readRetry(seq)).toBe(false);
  });

  it("a new notifier's first readBegin sequence is not retried spuriously", () => {
    const { mm, a } = watched();
    const sub = mm.notifiers.insert(a, PAGE, new RecordingFakeNotifier());
    const seq = sub.readBegin();
    expect(sub.readRetry(seq)).toBe(false);
  });

  it("calls the callback with an odd sequence while the invalidation is active, even again after", () => {
    const { mm, a, fake } = watched();
    mm.madvise(a, PAGE, MADV_DONTNEED);
    expect(fake.seen[0].seq % 2).toBe(1);
    expect(mm.notifiers.invalidateSeq % 2).toBe(0);
  });

  it("refuses readBegin from inside the notifier's own invalidation (it would deadlock)", () => {
    const { mm, a, fake } = watched();
    let err: unknown = null;
    fake.onInvalidate = (sub) => {
      try {
        sub.readBegin();
      } catch (e) {
        err = e;
      }
    };
    mm.madvise(a, PAGE, MADV_DONTNEED);
    expect(err).toMatchObject({ errno: "EDEADLK", code: "NOTIFIER_DEADLOCK" });
  });

  it("rejects an empty interval with EOVERFLOW, as mmu_interval_notifier_insert does", () => {
    const { mm } = setup();
    const e = thrown(() => mm.notifiers.insert(0x1000, 0, new RecordingFakeNotifier()));
    expect(e.errno).toBe("EOVERFLOW");
  });
});

describe("notifier list changes during an invalidation", () => {
  it("defers a removal made from a callback until the invalidation ends", () => {
    const { mm, a, fake } = watched();
    const other = new RecordingFakeNotifier();
    const otherSub = mm.notifiers.insert(a, 8 * PAGE, other);
    let sizeInside = -1;
    fake.onInvalidate = () => {
      otherSub.remove();
      sizeInside = mm.notifiers.size;
    };
    mm.madvise(a, PAGE, MADV_DONTNEED);
    expect(sizeInside).toBe(2);
    expect(mm.notifiers.size).toBe(1);
    other.clear();
    mm.madvise(a + PAGE, PAGE, MADV_DONTNEED);
    expect(other.events).toEqual([]);
    expect(fake.events.length).toBe(2);
  });

  it("defers an insertion made from a callback: the new notifier misses the running invalidation", () => {
    const { mm, a, fake } = watched();
    const late = new RecordingFakeNotifier();
    let lateSub: ReturnType<typeof mm.notifiers.insert> | null = null;
    fake.onInvalidate = () => {
      if (lateSub === null) lateSub = mm.notifiers.insert(a, PAGE, late);
    };
    mm.madvise(a, PAGE, MADV_DONTNEED);
    expect(late.events).toEqual([]);
    expect(mm.notifiers.size).toBe(2);
    mm.madvise(a, PAGE, MADV_DONTNEED);
    expect(late.events).toEqual([[CLEAR, a, a + PAGE]]);
  });

  it("completes the change and still calls the later notifiers when a callback throws", () => {
    const { m, p, mm } = setup();
    const a = mmapPrivate(p, 8 * PAGE);
    p.writeStamp(a, 8 * PAGE, 1);
    const errors: unknown[] = [];
    mm.notifiers.onCallbackError = (_sub, range, err) => errors.push([range.event, (err as Error).message]);
    const throwingSub = mm.notifiers.insert(a, 8 * PAGE, new ThrowingFakeNotifier());
    const fake = new RecordingFakeNotifier();
    mm.notifiers.insert(a, 8 * PAGE, fake);
    const seq = throwingSub.readBegin();
    mm.munmap(a, 8 * PAGE);
    expect(errors).toEqual([[UNMAP, "mirror is broken"]]);
    expect(fake.events).toEqual([[UNMAP, a, a + 8 * PAGE]]);
    expect(m.usedFrames).toBe(0);
    // Its sequence still moved, so a reader of that interval retries.
    expect(throwingSub.readRetry(seq)).toBe(true);
    expect(mm.notifiers.invalidateSeq % 2).toBe(0);
  });
});

describe("a callback that throws with the default error handler", () => {
  it("records the error, completes the change and leaves the sequence idle", () => {
    const { mm, a, fake } = watched();
    mm.notifiers.insert(a, PAGE, new ThrowingFakeNotifier());
    mm.madvise(a, PAGE, MADV_DONTNEED);
    expect(mm.notifiers.callbackErrors.map((e) => [e.range.event, (e.error as Error).message])).toEqual([
      [CLEAR, "mirror is broken"],
    ]);
    expect(mm.notifiers.invalidateSeq % 2).toBe(0);
    expect(fake.events).toEqual([[CLEAR, a, a + PAGE]]);
    expect(pteAt(mm, a)).toBeNull();
  });
});

describe("notifier counters", () => {
  it("count ranges that reached a notifier, callbacks and the pages they covered", () => {
    const { m, mm, a } = watched();
    mm.notifiers.insert(a, 2 * PAGE, new RecordingFakeNotifier());
    const before = { ...m.stats.notifier };
    mm.madvise(a, 4 * PAGE, MADV_DONTNEED);
    expect(m.stats.notifier.ranges - before.ranges).toBe(1);
    expect(m.stats.notifier.calls - before.calls).toBe(2);
    expect(m.stats.notifier.pages - before.pages).toBe(4 + 2);
  });
});

describe("work deferred from a callback", () => {
  it("runs when the syscall that sent the invalidation has finished, not inside it", () => {
    const { m, mm, a, fake } = watched();
    const seen: (number | null)[] = [];
    fake.onInvalidate = () => {
      // Inside the callback the page is still mapped; the deferred work sees it gone.
      seen.push(pteAt(mm, a) === null ? 0 : 1);
      m.defer(() => seen.push(pteAt(mm, a) === null ? 0 : 1));
    };
    mm.munmap(a, 8 * PAGE);
    expect(seen).toEqual([1, 0]);
  });

  it("runs after a CPU fault that sent the invalidation (a COW break)", () => {
    const { m, p, a, fake } = watched();
    const child = p.fork();
    const order: string[] = [];
    fake.onInvalidate = () => {
      order.push("callback");
      m.defer(() => order.push("deferred"));
    };
    p.touch(a, PAGE, true, 5);
    order.push("after touch");
    expect(order).toEqual(["callback", "deferred", "after touch"]);
    child.exit();
  });
});
