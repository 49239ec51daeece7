/**
 * Eviction before a migration: when device memory has fewer free frames than a migration needs,
 * the driver sends whole victim VA blocks home itself (core.migrateToRam, VMA by VMA) in the order
 * its residency records give (LRU or clock, residency.ts). UVM's allocator does the same in
 * uvm_pmm_gpu.c: pick_root_chunk_to_evict takes the least recently used 2 MiB root chunk (the head
 * of root_chunks.va_block_used, whose order chunk_update_lists_locked keeps) and evict_root_chunk
 * moves what it backs to the CPU one VA block at a time. The core's own evictOnPressure stays a
 * fallback for what this does not free.
 */
import type { Device, HmmCore } from "@hmmkit/core";
import { BLOCK_BYTES, type DeviceTable } from "./device-table.js";
import type { GpuStats } from "./gpu-stats.js";
import type { Residency } from "./residency.js";

type Steps<T> = Generator<string, T, void>;

/** What eviction needs from the driver. */
export interface EvictionHost {
  readonly core: HmmCore;
  readonly table: DeviceTable;
  readonly residency: Residency;
  /** The gpu's counters as kept (GpuDriver.counters). */
  readonly counters: GpuStats;
  /** The driver's Device (looked up on first use: it does not exist while the driver is built). */
  device(): Device;
  /** Set while the driver evicts (copyFromDevice then is not a CPU bounce). */
  evicting: boolean;
}

/**
 * Evict blocks (never residency record `keep` nor a block serviced in batch `epoch`) until `need`
 * device frames are free or no victim is left. Evicted pages count in DeviceStats.evictions.
 */
export function* makeRoom(h: EvictionHost, need: number, keep: number, epoch: number): Steps<void> {
  const mem = h.device().memory;
  const want = Math.min(need, mem.npages);
  for (let guard = 0; mem.free < want && guard < mem.npages; guard++) {
    const v = h.residency.victim(epoch, keep);
    if (v < 0) return;
    const b = h.residency.block(v);
    const { mmId, vb } = h.table.keyOf(b);
    const mm = h.core.mmById(mmId);
    let moved = 0;
    if (mm !== undefined && !mm.exited) {
      const base = vb * BLOCK_BYTES;
      const end = base + BLOCK_BYTES;
      h.evicting = true;
      try {
        for (
          let vma = mm.vmas.findFrom(base);
          vma !== null && vma.start < end;
          vma = mm.vmas.findFrom(vma.end)
        ) {
          if (!vma.readable) continue;
          const r = yield* h.core.migrateToRamSteps(
            h.device(),
            mm,
            Math.max(base, vma.start),
            Math.min(end, vma.end),
          );
          moved += r.migrated;
        }
      } finally {
        h.evicting = false;
      }
    }
    h.device().stats.evictions += moved;
    if (moved > 0) h.counters.evictedBlocks++;
    if (h.residency.block(v) === b) {
      h.residency.free(v);
      h.table.clearAux(b);
    }
    if (h.device().state !== "active") return;
  }
}
