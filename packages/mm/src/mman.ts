/**
 * The rest of Linux's mman.h (x86-64 values): bits and advice values the kernel knows but the
 * simulator does not model. The entry points use these tables to tell a value Linux would accept
 * (rejected here as not simulated, so a scenario never silently means something else) from one
 * Linux rejects too.
 */

/** PROT_EXEC: executable (not modelled: the simulated CPU only loads and stores). */
export const PROT_EXEC = 0x4;
/** PROT_SEM: may be used for atomics (ignored by x86 mmap, accepted by mprotect). */
export const PROT_SEM = 0x8;
/** mprotect: extend the change down to the start of a growsdown VMA. */
export const PROT_GROWSDOWN = 0x0100_0000;
/** mprotect: extend the change up to the end of a growsup VMA. */
export const PROT_GROWSUP = 0x0200_0000;

/** Mask of the mapping type in mmap flags. */
export const MAP_TYPE = 0x0f;
/** MAP_SHARED with validation of unknown flags (file mappings only). */
export const MAP_SHARED_VALIDATE = 0x03;
/** Private mapping whose pages the kernel may drop under pressure. */
export const MAP_DROPPABLE = 0x08;
export const MAP_32BIT = 0x40;
export const MAP_ABOVE4G = 0x80;
export const MAP_GROWSDOWN = 0x0100;
export const MAP_DENYWRITE = 0x0800;
export const MAP_EXECUTABLE = 0x1000;
export const MAP_LOCKED = 0x2000;
export const MAP_POPULATE = 0x8000;
export const MAP_NONBLOCK = 0x10000;
/** A stack: since Linux 6.7 it implies VM_NOHUGEPAGE (calc_vm_flag_bits). */
export const MAP_STACK = 0x20000;
export const MAP_HUGETLB = 0x40000;
export const MAP_SYNC = 0x80000;
export const MAP_UNINITIALIZED = 0x4000000;

/**
 * mmap flags Linux honours that change what a mapping is or how it is populated, none of which the
 * simulator models: a call with one of them is refused (EINVAL, NOT_SIMULATED) rather than run as
 * something else. Other unknown bits are ignored, as Linux ignores them for MAP_PRIVATE and
 * MAP_SHARED (only MAP_SHARED_VALIDATE, for files, rejects them).
 */
export const MAP_NOT_SIMULATED: Readonly<Record<number, string>> = {
  [MAP_32BIT]: "MAP_32BIT",
  [MAP_ABOVE4G]: "MAP_ABOVE4G",
  [MAP_GROWSDOWN]: "MAP_GROWSDOWN",
  [MAP_LOCKED]: "MAP_LOCKED",
  [MAP_POPULATE]: "MAP_POPULATE",
  [MAP_HUGETLB]: "MAP_HUGETLB",
};

/** Every madvise advice Linux 6.18 accepts (madvise_behavior_valid), by value. */
export const LINUX_MADVISE_ADVICE: Readonly<Record<number, string>> = {
  0: "MADV_NORMAL",
  1: "MADV_RANDOM",
  2: "MADV_SEQUENTIAL",
  3: "MADV_WILLNEED",
  4: "MADV_DONTNEED",
  8: "MADV_FREE",
  9: "MADV_REMOVE",
  10: "MADV_DONTFORK",
  11: "MADV_DOFORK",
  12: "MADV_MERGEABLE",
  13: "MADV_UNMERGEABLE",
  14: "MADV_HUGEPAGE",
  15: "MADV_NOHUGEPAGE",
  16: "MADV_DONTDUMP",
  17: "MADV_DODUMP",
  18: "MADV_WIPEONFORK",
  19: "MADV_KEEPONFORK",
  20: "MADV_COLD",
  21: "MADV_PAGEOUT",
  22: "MADV_POPULATE_READ",
  23: "MADV_POPULATE_WRITE",
  24: "MADV_DONTNEED_LOCKED",
  25: "MADV_COLLAPSE",
  100: "MADV_HWPOISON",
  101: "MADV_SOFT_OFFLINE",
  102: "MADV_GUARD_INSTALL",
  103: "MADV_GUARD_REMOVE",
};

/** The bits of {@link MAP_NOT_SIMULATED}, as one mask. */
export const MAP_NOT_SIMULATED_MASK = Object.keys(MAP_NOT_SIMULATED).reduce((m, k) => m | Number(k), 0);
