/**
 * HMM v12 page-table entries (include/linux/hmm_pt.h of the v12 series): 64-bit dma_addr_t-style
 * words. The low PAGE_SHIFT (12) bits are flags, the rest is the pfn, dma address or device
 * address shifted by PAGE_SHIFT, exactly as `hmm_pte_from_pfn` builds it. A JavaScript number
 * cannot hold 64 bits under bit operations, so an entry is stored as two 32-bit words (see
 * HmmPt.lo / HmmPt.hi): `lo` = flags | (low 20 bits of the pfn) << 12, `hi` = pfn >>> 20.
 */

/** HMM_PTE_VALID_DEV_BIT: the entry is a device address (the page lives in device memory). */
export const HMM_PTE_VALID_DEV = 1 << 0;
/** HMM_PTE_VALID_DMA_BIT: a DMA-mapped system page (hmmkit has no IOMMU; never set by HMM here). */
export const HMM_PTE_VALID_DMA = 1 << 1;
/** HMM_PTE_VALID_PFN_BIT: a system page frame number. */
export const HMM_PTE_VALID_PFN = 1 << 2;
/** HMM_PTE_SELECT: the entry is selected for the device the current migration callback serves. */
export const HMM_PTE_SELECT = 1 << 3;
/** HMM_PTE_WRITE_BIT: the device may write through the entry. */
export const HMM_PTE_WRITE = 1 << 4;
/** HMM_PTE_DIRTY_BIT: the device wrote the page (set by the driver, without the directory lock). */
export const HMM_PTE_DIRTY = 1 << 5;
/** HMM_PTE_HW_SHIFT: bits from here to PAGE_SHIFT - 1 are the device driver's private flags. */
export const HMM_PTE_HW_SHIFT = 6;
/** The device driver's private flag bits (6..11), changed without the directory lock. */
export const HMM_PTE_DRIVER_MASK = 0xfc0;
/** Any of the three valid bits. */
export const HMM_PTE_VALID_MASK = HMM_PTE_VALID_DEV | HMM_PTE_VALID_DMA | HMM_PTE_VALID_PFN;
/** Flags of an entry (the low 12 bits of `lo`). */
export const HMM_PTE_FLAGS_MASK = 0xfff;

/** HMM_PDE_VALID: a directory entry pointing at a lower directory. */
export const HMM_PDE_VALID = 1 << 0;

/**
 * Device addresses in hmm_pt: device `ownerId`'s frame `dpfn` is the device address
 * ownerId * 2^32 + dpfn (in pages), so entries of different devices never alias even when mirrors
 * share one directory tree.
 */
export const DEVICE_ADDRESS_STRIDE = 2 ** 32;

/** The device address (in pages) of frame `dpfn` of the device with owner id `ownerId`. */
export function deviceAddress(ownerId: number, dpfn: number): number {
  return ownerId * DEVICE_ADDRESS_STRIDE + dpfn;
}

/** The owner id of a device address. */
export function deviceAddressOwner(addr: number): number {
  return Math.floor(addr / DEVICE_ADDRESS_STRIDE);
}

/** The device frame of a device address. */
export function deviceAddressFrame(addr: number): number {
  return addr % DEVICE_ADDRESS_STRIDE;
}

/** `lo` word of an entry for page (or device address) `pfn` with `flags` (hmm_pte_from_pfn). */
export function hmmPteLo(pfn: number, flags: number): number {
  return ((((pfn % 0x100000) << 12) | flags) >>> 0) as number;
}

/** `hi` word of an entry for page (or device address) `pfn`. */
export function hmmPteHi(pfn: number): number {
  return Math.floor(pfn / 0x100000) >>> 0;
}

/** hmm_pte_pfn: the pfn (or device address) of the entry with words `lo`, `hi`. */
export function hmmPtePfn(lo: number, hi: number): number {
  return hi * 0x100000 + (lo >>> 12);
}

/** A readable list of an entry's flags ("VALID_PFN|WRITE|driver=0x40"). */
export function describeHmmPte(lo: number): string {
  const names: string[] = [];
  if (lo & HMM_PTE_VALID_DEV) names.push("VALID_DEV");
  if (lo & HMM_PTE_VALID_DMA) names.push("VALID_DMA");
  if (lo & HMM_PTE_VALID_PFN) names.push("VALID_PFN");
  if (lo & HMM_PTE_SELECT) names.push("SELECT");
  if (lo & HMM_PTE_WRITE) names.push("WRITE");
  if (lo & HMM_PTE_DIRTY) names.push("DIRTY");
  if (lo & HMM_PTE_DRIVER_MASK) names.push(`driver=0x${(lo & HMM_PTE_DRIVER_MASK).toString(16)}`);
  return names.length ? names.join("|") : "NONE";
}
