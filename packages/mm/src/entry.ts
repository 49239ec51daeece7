/**
 * Page-table entry encoding. Every PTE and PMD entry is a pair of 32-bit integers kept in
 * parallel typed arrays: a frame number (`pfn`, or a device pfn for device-private entries) and a
 * flags word laid out as below. Keeping both as plain int32 lets the walker and the HMM core read
 * an entry with two array loads and a few masks, with no object per entry.
 *
 *   bits 0-2   kind (ENTRY_NONE, ENTRY_PRESENT, ENTRY_MIGRATION, ENTRY_DEVICE_PRIVATE, ENTRY_DEVICE_EXCLUSIVE)
 *   bit  3     WRITE     the CPU may write through it (migration/device entries: the writable variant)
 *   bit  4     DIRTY
 *   bit  5     YOUNG     accessed
 *   bit  6     PROTNONE  present but inaccessible: the VMA is PROT_NONE (pte_protnone)
 *   bit  7     ZERO      maps the shared zero page (or the huge zero page, at PMD level)
 *   bits 8-15  owner     device id for device-private / device-exclusive entries (1..255)
 */

/** Mask of the kind field. */
export const ENTRY_KIND_MASK = 0x7;
/** Nothing mapped (pte_none). */
export const ENTRY_NONE = 0;
/** A present mapping of a system frame. */
export const ENTRY_PRESENT = 1;
/** A migration entry: the frame in `pfn` is being migrated; CPU faults wait. */
export const ENTRY_MIGRATION = 2;
/** A device-private entry: the data lives in device memory at device pfn `pfn`, owned by `owner`. */
export const ENTRY_DEVICE_PRIVATE = 3;
/** A device-exclusive entry: frame `pfn` is exclusively accessed by device `owner`; CPU access restores it. */
export const ENTRY_DEVICE_EXCLUSIVE = 4;

export const ENTRY_WRITE = 1 << 3;
export const ENTRY_DIRTY = 1 << 4;
export const ENTRY_YOUNG = 1 << 5;
export const ENTRY_PROTNONE = 1 << 6;
export const ENTRY_ZERO = 1 << 7;
/** Shift of the 8-bit owner field. */
export const ENTRY_OWNER_SHIFT = 8;
/** Mask of the owner field (after shifting). */
export const ENTRY_OWNER_MASK = 0xff;

/** The kind field of a flags word. */
export function entryKind(flags: number): number {
  return flags & ENTRY_KIND_MASK;
}

/** The owner device id of a device-private or device-exclusive entry (0 otherwise). */
export function entryOwner(flags: number): number {
  return (flags >>> ENTRY_OWNER_SHIFT) & ENTRY_OWNER_MASK;
}

/** Build a flags word for a device-private or device-exclusive entry of `owner`. */
export function deviceEntryFlags(kind: number, owner: number, writable: boolean): number {
  return kind | (writable ? ENTRY_WRITE : 0) | ((owner & ENTRY_OWNER_MASK) << ENTRY_OWNER_SHIFT);
}

/** True if a present entry allows a CPU read (present and not PROT_NONE). */
export function entryReadable(flags: number): boolean {
  return (flags & (ENTRY_KIND_MASK | ENTRY_PROTNONE)) === ENTRY_PRESENT;
}

/** True if a present entry allows a CPU write. */
export function entryWritable(flags: number): boolean {
  return (flags & (ENTRY_KIND_MASK | ENTRY_PROTNONE | ENTRY_WRITE)) === (ENTRY_PRESENT | ENTRY_WRITE);
}

const KIND_NAMES = ["none", "present", "migration", "device-private", "device-exclusive"];

/** A short human-readable description of an entry, for messages and debugging. */
export function describeEntry(pfn: number, flags: number): string {
  const kind = entryKind(flags);
  if (kind === ENTRY_NONE) return "none";
  let s = `${KIND_NAMES[kind] ?? `kind${kind}`} pfn=${pfn}`;
  if (flags & ENTRY_ZERO) s += " zero";
  if (flags & ENTRY_WRITE) s += " write";
  if (flags & ENTRY_DIRTY) s += " dirty";
  if (flags & ENTRY_PROTNONE) s += " protnone";
  const owner = entryOwner(flags);
  if (owner) s += ` owner=${owner}`;
  return s;
}
