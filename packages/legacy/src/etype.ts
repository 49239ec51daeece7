import { MmuNotifyEvent } from "@hmmkit/core";

/**
 * enum hmm_etype of HMM v12 (include/linux/hmm.h of the series): why HMM calls a driver's
 * `update`. The values are v12's.
 */
export const HmmEtype = {
  HMM_NONE: 0,
  HMM_FORK: 1,
  HMM_MIGRATE: 2,
  HMM_MUNMAP: 3,
  HMM_DEVICE_RFAULT: 4,
  HMM_DEVICE_WFAULT: 5,
  HMM_WRITE_PROTECT: 6,
} as const;

/** One of the {@link HmmEtype} values. */
export type HmmEtype = (typeof HmmEtype)[keyof typeof HmmEtype];

/** Names by value, for messages and traces. */
export const HMM_ETYPE_NAMES: Record<HmmEtype, string> = {
  0: "HMM_NONE",
  1: "HMM_FORK",
  2: "HMM_MIGRATE",
  3: "HMM_MUNMAP",
  4: "HMM_DEVICE_RFAULT",
  5: "HMM_DEVICE_WFAULT",
  6: "HMM_WRITE_PROTECT",
};

/**
 * What an event leaves of each hmm_pt entry (struct hmm_event's pte_mask, hmm_event_init):
 * everything for faults, everything but WRITE for FORK and WRITE_PROTECT, nothing for MIGRATE and
 * MUNMAP. True: the event clears the whole entry; false: it only clears the write bit.
 */
export function hmmEtypeClearsEntry(etype: HmmEtype): boolean {
  return etype === HmmEtype.HMM_MIGRATE || etype === HmmEtype.HMM_MUNMAP;
}

/**
 * The v12 event for an MMU notifier event of the core (hmm_notifier_invalidate_range_start,
 * hmm_mmu_mprot_to_etype). `vmaProt` is what the VMA at the start of the range allows now
 * (bit 0 read, bit 1 write; mprotect has already changed it when the notifier runs):
 *
 *   core MmuNotifyEvent   v12 mmu_event it stands for                hmm_etype
 *   UNMAP                 MMU_MUNMAP                                  HMM_MUNMAP
 *   CLEAR                 MMU_MUNMAP (MADV_DONTNEED), MMU_HSPLIT,     HMM_MUNMAP
 *                         MMU_MIGRATE (COW break): all clear entries
 *   PROTECTION_VMA        MMU_MPROT: VMA not readable                 HMM_MUNMAP
 *                                    VMA read-only                    HMM_WRITE_PROTECT
 *                                    VMA writable                     HMM_WRITE_PROTECT (*)
 *   PROTECTION_PAGE       MMU_FORK                                    HMM_FORK
 *   SOFT_DIRTY            MMU_WRITE_PROTECT                           HMM_WRITE_PROTECT
 *   RELEASE               release (hmm_mirror_kill)                   HMM_MUNMAP
 *   MIGRATE               MMU_MIGRATE                                 HMM_MIGRATE
 *   EXCLUSIVE             default                                     HMM_MIGRATE
 *
 * (*) v12 ignores an mprotect that leaves the VMA writable (HMM_NONE). The simulated mm, as the
 * kernel's change_pte_range does, drops write from device-private entries even then, so a device
 * that kept write would be stale: the write bit is cleared (a later write faults it back).
 */
export function hmmEtypeOf(event: MmuNotifyEvent, vmaProt: number): HmmEtype {
  switch (event) {
    case MmuNotifyEvent.UNMAP:
    case MmuNotifyEvent.CLEAR:
    case MmuNotifyEvent.RELEASE:
      return HmmEtype.HMM_MUNMAP;
    case MmuNotifyEvent.PROTECTION_VMA:
      return vmaProt & 1 ? HmmEtype.HMM_WRITE_PROTECT : HmmEtype.HMM_MUNMAP;
    case MmuNotifyEvent.PROTECTION_PAGE:
      return HmmEtype.HMM_FORK;
    case MmuNotifyEvent.SOFT_DIRTY:
      return HmmEtype.HMM_WRITE_PROTECT;
    default:
      return HmmEtype.HMM_MIGRATE;
  }
}
