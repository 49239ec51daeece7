import type { Device, HmmCore, MmLike } from "@hmmkit/core";
import type { HmmPtIter } from "./hmm-pt-iter.js";
import type { LegacyCounters } from "./stats.js";

/** An address space of the simulated mm (the core's `Mm`, without importing @hmmkit/mm). */
export type Mm = Exclude<MmLike, { readonly mm: unknown }>;

/** A VMA of an address space. */
export type Vma = NonNullable<ReturnType<Mm["findVma"]>>;

/** Bytes of a page. */
export const PAGE_SIZE = 4096;
/** Bytes of a PMD (a huge page, and the span of one leaf directory). */
export const PMD_SIZE = 2 * 1024 * 1024;

/** What a mirror needs of the device that owns it (SharedMirror implements it). */
export interface MirrorHost {
  readonly core: HmmCore;
  readonly device: Device;
  readonly ownerId: number;
  readonly counters: LegacyCounters;
  /** The driver's update for a device fault event on [start, end). */
  update(mirror: FaultMirror, start: number, end: number, write: boolean): number;
}

/** What hmm_mirror_fault needs of a mirror (HmmMirror implements it). */
export interface FaultMirror {
  hmm: { readonly mm: Mm } | null;
  active: HmmPtIter | null;
  cpuFaultOnly: boolean;
  /** The range of the fault event in progress (while `active` is set). */
  faultStart: number;
  faultEnd: number;
  /** event->backoff: an invalidation overlapped the fault in progress; its walk must restart. */
  backoff: boolean;
  readonly device: MirrorHost;
  iter(): HmmPtIter;
}
