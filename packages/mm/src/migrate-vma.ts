import { hex, PAGE_SIZE, TASK_SIZE } from "./constants.js";
import { MmError } from "./errors.js";
import type { MmStruct as Mm } from "./types.js";
import { checkFlagWord, checkIntegerIn, checkUnsigned } from "./validate.js";

/** migrate_pfn flags (MIGRATE_PFN_*), kept beside the pfn arrays of {@link MigrateVma}. */
export const MIGRATE_PFN_VALID = 1 << 0;
/** The entry is selected for migration (cleared when it will not migrate after all). */
export const MIGRATE_PFN_MIGRATE = 1 << 1;
/** The source was mapped writable; the destination may be. */
export const MIGRATE_PFN_WRITE = 1 << 3;
/**
 * The entry is a whole PMD-mapped folio of 512 pages (a THP, an order-9 device folio, or a 2 MiB
 * hole), as one entry at its first page; the next 511 entries are 0. In `dstFlags`: the
 * destination is an order-9 folio too. A compound source given a base-page destination is split
 * by migrateVmaPages (v6.18+, MIGRATE_VMA_SELECT_COMPOUND).
 */
export const MIGRATE_PFN_COMPOUND = 1 << 4;
/** The pfn is a device-private page of `pgmapOwner` (not a system frame). */
export const MIGRATE_PFN_DEVICE = 1 << 5;

/**
 * The longest range one MigrateVma may cover (1 GiB): its per-page arrays are allocated up front,
 * as the kernel's callers allocate src/dst arrays per chunk (dmirror migrates 64 MiB at most).
 */
export const MIGRATE_VMA_MAX_BYTES = 2 ** 30;

/** enum migrate_vma_direction. */
export const MIGRATE_VMA_SELECT_SYSTEM = 1 << 0;
export const MIGRATE_VMA_SELECT_DEVICE_PRIVATE = 1 << 1;
/**
 * Collect a PMD-mapped folio or a pmd_none 2 MiB hole whose whole PMD lies in the range as one
 * compound entry instead of splitting it (the driver can allocate order-9 device folios).
 */
export const MIGRATE_VMA_SELECT_COMPOUND = 1 << 3;

/**
 * struct migrate_vma: one migration of [start, end) of one VMA, with a source and a destination
 * slot per page. After setup, `src`/`srcFlags` say what was collected: a pfn with VALID|MIGRATE
 * (and WRITE, DEVICE, COMPOUND), a hole with MIGRATE only (the destination is zero-filled), or 0
 * (not selected). The caller fills `dst`/`dstFlags` (VALID, DEVICE for a device page of
 * `pgmapOwner`, COMPOUND for an order-9 folio), then calls migrateVmaPages and migrateVmaFinalize.
 */
export class MigrateVma {
  readonly npages: number;
  readonly src: Int32Array;
  readonly srcFlags: Int32Array;
  readonly dst: Int32Array;
  readonly dstFlags: Int32Array;
  /** Entries selected for migration (holes included; a compound entry counts once, as in the kernel). */
  cpages = 0;

  constructor(
    readonly mm: Mm,
    readonly start: number,
    readonly end: number,
    /** Owner id of the device: which device-private pages are selected, and whose dst pages are. */
    readonly pgmapOwner: number,
    readonly selectFlags: number,
  ) {
    // The arrays are sized from the range, so it is checked here; migrateVmaSetup checks the rest.
    checkUnsigned("migrate_vma", "start", start);
    checkUnsigned("migrate_vma", "end", end);
    checkIntegerIn("migrate_vma", "pgmapOwner", pgmapOwner, 0, 255);
    checkFlagWord("migrate_vma", "selectFlags", selectFlags);
    if (end < start || end > TASK_SIZE || end - start > MIGRATE_VMA_MAX_BYTES) {
      throw new MmError(
        "EINVAL",
        `migrate_vma: range [${hex(start)}, ${hex(end)}) is reversed, beyond TASK_SIZE or longer than ${hex(MIGRATE_VMA_MAX_BYTES)} bytes`,
        "BAD_ADDRESS",
      );
    }
    this.npages = Math.max(0, (end - start) / PAGE_SIZE);
    this.src = new Int32Array(this.npages).fill(-1);
    this.srcFlags = new Int32Array(this.npages);
    this.dst = new Int32Array(this.npages).fill(-1);
    this.dstFlags = new Int32Array(this.npages);
  }
}
