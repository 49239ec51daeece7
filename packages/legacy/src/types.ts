import type { MmLike } from "@hmmkit/core";

/** An address space of the simulated mm (the core's `Mm`, without importing @hmmkit/mm). */
export type Mm = Exclude<MmLike, { readonly mm: unknown }>;

/** A VMA of an address space. */
export type Vma = NonNullable<ReturnType<Mm["findVma"]>>;

/** Bytes of a page. */
export const PAGE_SIZE = 4096;
/** Bytes of a PMD (a huge page, and the span of one leaf directory). */
export const PMD_SIZE = 2 * 1024 * 1024;
