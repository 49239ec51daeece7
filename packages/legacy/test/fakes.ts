/**
 * Fake shared-mirror drivers for the legacy layer's tests. `HmmPtReadingFakeDriver` has no table
 * of its own: its hardware translates straight from the mirror's hmm_pt (the simplest v12 driver
 * imaginable), and it records every `update` it gets.
 */
import { type DeviceContext, type DeviceTranslation, HmmCore, TOKENS, TRANSLATE_MISS } from "@hmmkit/core";
import { inject, injectable } from "tsyringe";
import {
  deviceAddressFrame,
  HMM_PTE_VALID_DEV,
  HMM_PTE_VALID_MASK,
  HMM_PTE_WRITE,
  type HmmEtype,
  type HmmEvent,
  type HmmMirror,
  hmmPtePfn,
  LEGACY_API_VERSION,
  LEGACY_TOKENS,
  type SharedMirror,
  type SharedMirrorDriver,
} from "../src/index.js";

export const PAGE = 4096;

/** One update as received. */
export interface UpdateCall {
  mmId: number;
  start: number;
  end: number;
  etype: HmmEtype;
}

/** Records updates; translates from hmm_pt; copies with the device's DMA. */
@injectable()
export class HmmPtReadingFakeDriver implements SharedMirrorDriver {
  readonly updates: UpdateCall[] = [];
  /** What update returns (set a negative errno to make it fail). */
  updateResult = 0;
  copiesFrom: { va: number; dpfn: number; spfn: number }[] = [];
  copiesTo: { va: number; spfn: number; dpfn: number }[] = [];
  released = false;

  constructor(
    @inject(TOKENS.DeviceContext) readonly ctx: DeviceContext,
    @inject(LEGACY_TOKENS.SharedMirror) readonly sm: SharedMirror,
    @inject(TOKENS.HmmCore) readonly core: HmmCore,
  ) {}

  update(mirror: HmmMirror, event: HmmEvent): number {
    this.updates.push({ mmId: mirror.mmId, start: event.start, end: event.end, etype: event.etype });
    return this.updateResult;
  }

  copyToDevice(_mmId: number, va: number, spfn: number, dpfn: number): void {
    this.copiesTo.push({ va, spfn, dpfn });
    if (spfn < 0) this.ctx.dma.zeroDevicePage(dpfn);
    else this.ctx.dma.systemToDevice(spfn, dpfn);
  }

  copyFromDevice(_mmId: number, va: number, dpfn: number, spfn: number): void {
    this.copiesFrom.push({ va, dpfn, spfn });
    this.ctx.dma.deviceToSystem(dpfn, spfn);
  }

  translate(mmId: number, va: number, write: boolean): number {
    const m = this.sm.mirrors.get(mmId);
    if (m === undefined || m.hmm === null) return TRANSLATE_MISS;
    const pos = m.pt.entryPos(va);
    if (pos < 0) return TRANSLATE_MISS;
    const lo = m.pt.lo[pos];
    if ((lo & HMM_PTE_VALID_MASK) === 0 || (write && !(lo & HMM_PTE_WRITE))) return TRANSLATE_MISS;
    const v = hmmPtePfn(lo, m.pt.hi[pos]);
    return lo & HMM_PTE_VALID_DEV ? -2 - deviceAddressFrame(v) : v;
  }

  *translations(): Iterable<DeviceTranslation> {
    for (const m of this.sm.mirrors.values()) {
      if (m.hmm === null) continue;
      const out: DeviceTranslation[] = [];
      const it = m.iter();
      let addr = 0;
      const end = 2 ** 47 - PAGE;
      while (addr < end) {
        let pos = it.walk(addr, end);
        if (pos < 0) break;
        for (let a = it.addr; a < it.next; a += PAGE, pos++) {
          const lo = m.pt.lo[pos];
          if ((lo & HMM_PTE_VALID_MASK) === 0) continue;
          const v = hmmPtePfn(lo, m.pt.hi[pos]);
          const dev = (lo & HMM_PTE_VALID_DEV) !== 0;
          out.push({
            mmId: m.mmId,
            va: a,
            pfn: dev ? deviceAddressFrame(v) : v,
            order: 0,
            writable: (lo & HMM_PTE_WRITE) !== 0,
            devicePrivate: dev,
          });
        }
        addr = it.next;
      }
      it.fini();
      yield* out;
    }
  }

  release(): void {
    this.released = true;
  }
}

/** A plugin descriptor for a fake class. */
export function fakeLegacyPlugin(driver: new (...args: never[]) => SharedMirrorDriver, name = "hmmpt-fake") {
  return { name, apiVersion: LEGACY_API_VERSION, design: "shared-mirror" as const, driver };
}

export { HmmCore };
