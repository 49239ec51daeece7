import type { FramePool } from "./frame-pool.js";
import type { MachineConfig } from "./machine-config.js";
import type { MmuNotifierSubscriptions } from "./notifier.js";
import type { PageTable } from "./page-table.js";
import type { MmStats } from "./stats.js";
import type { Vma, VmaList } from "./vma.js";

// The shapes the mm's modules hand each other. Fault paths, zap, THP, fork and migration take an
// MmStruct and reach the machine through MachineState, so that none of them imports mm.ts or
// machine.ts (which import them): the module graph of the package has no cycle.

/** The machine as the memory manager's modules use it; {@link Machine} is the implementation. */
export interface MachineState {
  readonly config: Readonly<MachineConfig>;
  readonly pool: FramePool;
  readonly stats: MmStats;
  /** Live address spaces, in creation order. */
  readonly mms: Set<MmStruct>;
  /** The pagemap ops of device-memory owner `owner`; throws if none is registered. */
  devicePagemap(owner: number): DevicePagemapOps;
  /**
   * @internal Set once mremap has moved a private VMA: anonymous pages may then sit at different
   * addresses in different processes, and reverse-map walks look pages up by linear index.
   */
  anonMoved: boolean;
  /** Run work at the next safe point (see Machine.defer). */
  defer(work: () => void): void;
  /** @internal */
  newAnonVmaId(): number;
  /** @internal */
  newShmemId(): number;
  /** @internal */
  runDeferred(): void;
}

/**
 * One address space as the fault paths see it (the kernel's mm_struct): page table, VMAs,
 * notifier subscriptions and RSS counters. {@link Mm} implements it and adds the syscalls.
 */
export interface MmStruct {
  readonly machine: MachineState;
  readonly id: number;
  readonly pt: PageTable;
  readonly vmas: VmaList;
  readonly notifiers: MmuNotifierSubscriptions;
  /** Anonymous pages mapped (4 KiB units). */
  rssAnon: number;
  /** Shared (shmem) pages mapped. */
  rssShmem: number;
  /** Device-private entries (pages living in device memory). */
  rssDevice: number;
  readonly exited: boolean;
  /** Drop `n` pages of RSS for the folio of `pfn`. */
  rssDrop(pfn: number, n: number): void;
  /** The VMA containing `va`, or null. */
  findVma(va: number): Vma | null;
}

/**
 * What the memory manager needs from the owner of device-private memory (the kernel's
 * struct dev_pagemap_ops plus the page refcounting the kernel does on ZONE_DEVICE struct pages).
 * The HMM core implements it for each device; the mm calls it when it meets a device-private entry.
 * `M` is the address-space type `migrateToRam` receives: {@link Mm} for owners registered with
 * Machine.registerDevicePagemap.
 */
export interface DevicePagemapOps<M extends MmStruct = MmStruct> {
  /** Name used in messages (the device name). */
  readonly name: string;
  /**
   * A CPU fault hit a device-private entry at `va` holding device page `dpfn`
   * (dev_pagemap_ops.migrate_to_ram). Migrate at least that page back to system RAM and return a
   * VM_FAULT_* code (VM_FAULT_OK, or VM_FAULT_SIGBUS if it cannot). For a device-private PMD
   * (do_huge_pmd_device_private), `dpfn` is the faulting page inside the order-9 folio.
   */
  migrateToRam(mm: M, vma: Vma, va: number, dpfn: number): number;
  /**
   * `nr` more references on the folio of device page `dpfn`: a new CPU entry refers to it (fork
   * copied a device-private entry, a PMD became PTEs), or a migration holds it.
   */
  pageGet(dpfn: number, nr?: number): void;
  /** A reference on the folio of `dpfn` went away; the device frees the folio at zero references. */
  pagePut(dpfn: number): void;
  /** References held on the folio of `dpfn` (folio_ref_count). */
  folioRefs(dpfn: number): number;
  /**
   * Split the order-9 device folio of `dpfn` into 512 order-0 folios (dev_pagemap_ops.folio_split
   * with the split itself): each holder of a folio reference then holds one on every page. Only a
   * folio with a single reference can be split; returns false otherwise (and for order 0, true).
   */
  folioSplit(dpfn: number): boolean;
  /** Content hash of device page `dpfn`, as ContentStore.hash (for digests). */
  pageHash(dpfn: number): number;
}
