import type { Mm } from "./mm.js";
import type { Vma } from "./vma.js";

/**
 * What the memory manager needs from the owner of device-private memory (the kernel's
 * struct dev_pagemap_ops plus the page refcounting the kernel does on ZONE_DEVICE struct pages).
 * The HMM core implements it for each device; the mm calls it when it meets a device-private entry.
 */
export interface DevicePagemapOps {
  /** Name used in messages (the device name). */
  readonly name: string;
  /**
   * A CPU fault hit a device-private entry at `va` holding device page `dpfn`
   * (dev_pagemap_ops.migrate_to_ram). Migrate at least that page back to system RAM and return a
   * VM_FAULT_* code (VM_FAULT_OK, or VM_FAULT_SIGBUS if it cannot).
   */
  migrateToRam(mm: Mm, vma: Vma, va: number, dpfn: number): number;
  /** A new CPU entry refers to device page `dpfn` (fork copied a device-private entry). */
  pageGet(dpfn: number): void;
  /** A CPU entry referring to `dpfn` went away; the device frees the page at zero references. */
  pagePut(dpfn: number): void;
  /** Content hash of device page `dpfn`, as ContentStore.hash (for digests). */
  pageHash(dpfn: number): number;
}
