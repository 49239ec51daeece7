import { describe, expect, it } from "vitest";
import { NOT_HELD, TLB_WRITE, TranslationCompletions } from "../src/index.js";

describe("TranslationCompletions: translations held for stalled accesses", () => {
  it("each waiting access takes one reference; the table empties when the last is taken", () => {
    const c = new TranslationCompletions();
    c.beginBatch();
    const s = c.record(1, 100, 7, TLB_WRITE);
    c.addRef(c.recorded(1, 100));
    c.addRef(c.recorded(1, 100));
    expect(c.pending).toBe(2);
    expect(c.take(1, 100)).toBe(s);
    expect(c.pfn[s]).toBe(7);
    expect(c.take(1, 100)).toBe(s);
    expect(c.pending).toBe(0);
    c.resetIfIdle();
    expect(c.used).toBe(0);
    expect(c.take(1, 100)).toBe(NOT_HELD);
    // Another address space's page of the same number is another completion.
    expect(c.take(2, 100)).toBe(NOT_HELD);
  });

  it("an invalidation drops the completions it covers, and a later batch cannot wait for them", () => {
    const c = new TranslationCompletions();
    c.beginBatch();
    for (let v = 0; v < 8; v++) c.addRef(c.record(1, v, 100 + v, 0));
    c.invalidate(1, 2, 4);
    expect(c.pending).toBe(6);
    expect(c.take(1, 2)).toBe(NOT_HELD);
    expect(c.take(1, 4)).not.toBe(NOT_HELD);
    c.beginBatch();
    // Recorded by the previous batch (and dropped): not this batch's to wait for.
    expect(c.recorded(1, 3)).toBe(-1);
    expect(c.recorded(1, 5)).toBe(-1);
  });

  it("grows past its initial size keeping every waiting reference, and shrinks back once idle", () => {
    const c = new TranslationCompletions();
    const initial = c.bytes;
    c.beginBatch();
    for (let v = 0; v < 10_000; v++) c.addRef(c.record(3, v * 7, v, 0));
    expect(c.pending).toBe(10_000);
    expect(c.bytes).toBeGreaterThan(initial);
    for (let v = 0; v < 10_000; v++) expect(c.pfn[c.take(3, v * 7)]).toBe(v);
    expect(c.pending).toBe(0);
    c.resetIfIdle();
    expect(c.bytes).toBe(initial);
    expect(c.peakSlots).toBeGreaterThanOrEqual(20_000);
  });
});
