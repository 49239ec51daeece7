/**
 * A fake device driver written like lib/test_hmm.c's dmirror, and the ioctl interface of its
 * device file, so that tools/testing/selftests/mm/hmm-tests.c can be ported test by test.
 *
 * The driver keeps one mirror per address space (the dmirror's xarray `pt`: virtual page number
 * -> frame and HMM flags, the WRITE flag standing for DPT_XA_TAG_WRITE and EXCLUSIVE for
 * DPT_XA_TAG_ATOMIC), drops entries on every invalidation except the MIGRATE it caused itself
 * (dmirror_interval_invalidate), and drops a page's entry when the page goes home
 * (dmirror_devmem_fault_alloc_and_copy's xa_erase). A `DmirrorFile` is one open of the device by
 * one process (a `struct dmirror`); `hmmDmirrorCmd` is the selftest's helper of the same name:
 * it returns 0 or -errno and, on success only, copies cpages and faults into the buffer.
 */
import {
  type Device,
  type DeviceContext,
  type DeviceTranslation,
  HMM_API_VERSION,
  HMM_PFN_DEVICE_PRIVATE,
  HMM_PFN_EXCLUSIVE,
  HMM_PFN_WRITE,
  type HmmCore,
  type HmmDriver,
  type HmmPlugin,
  MmuNotifyEvent,
  type Steps,
  TOKENS,
} from "@hmmkit/core";
import { ERRNO, MmError, type Process } from "@hmmkit/mm";
import { inject, injectable } from "tsyringe";

export const PAGE_SIZE = 4096;

/** The HMM_DMIRROR_* ioctl numbers (include/uapi/linux/test_hmm.h). */
export const HMM_DMIRROR_READ = 0x00;
export const HMM_DMIRROR_WRITE = 0x01;
export const HMM_DMIRROR_MIGRATE_TO_DEV = 0x02;
export const HMM_DMIRROR_MIGRATE_TO_SYS = 0x03;
export const HMM_DMIRROR_SNAPSHOT = 0x04;
export const HMM_DMIRROR_EXCLUSIVE = 0x05;
export const HMM_DMIRROR_CHECK_EXCLUSIVE = 0x06;
export const HMM_DMIRROR_RELEASE = 0x07;
export const HMM_DMIRROR_FLAGS = 0x08;
/** HMM_DMIRROR_FLAGS bit: the next device-page allocation in a migration fails once. */
export const HMM_DMIRROR_FLAG_FAIL_ALLOC = 1 << 0;

/** -errno values the tests compare with. */
export const EPERM = ERRNO.EPERM;
export const ENOENT = ERRNO.ENOENT;
export const EFAULT = ERRNO.EFAULT;
export const EINVAL = ERRNO.EINVAL;

/** One mirror entry: the frame holding the data and the HMM flags it was reported with. */
interface MirrorEntry {
  pfn: number;
  flags: number;
}

/** A dmirror-like driver: one mirror per address space, faulted through the core. */
@injectable()
export class DmirrorFakeDriver implements HmmDriver {
  /** mm id -> virtual page number -> entry (the dmirror's xarray). */
  readonly pt = new Map<number, Map<number, MirrorEntry>>();

  constructor(@inject(TOKENS.DeviceContext) readonly ctx: DeviceContext) {}

  private tableOf(mmId: number): Map<number, MirrorEntry> {
    let m = this.pt.get(mmId);
    if (m === undefined) {
      m = new Map();
      this.pt.set(mmId, m);
    }
    return m;
  }

  /** dmirror_do_fault / dmirror_migrate_finalize_and_map / dmirror_atomic_map: store the page. */
  mirrorPte(mmId: number, va: number, pfn: number, flags: number): void {
    this.tableOf(mmId).set(va / PAGE_SIZE, { pfn, flags });
  }

  mirrorPmd(mmId: number, va: number, pfn: number, flags: number): void {
    const m = this.tableOf(mmId);
    const vpn = va / PAGE_SIZE;
    for (let i = 0; i < 512; i++) m.set(vpn + i, { pfn: pfn + i, flags });
  }

  /** dmirror_interval_invalidate: skip our own MIGRATE, drop the range otherwise (clipped to what is held). */
  invalidate(mmId: number, start: number, end: number, event: MmuNotifyEvent, owner: number | null): void {
    if (event === MmuNotifyEvent.MIGRATE && owner === this.ctx.ownerId) return;
    const m = this.pt.get(mmId);
    if (m === undefined) return;
    const first = start / PAGE_SIZE;
    const last = end / PAGE_SIZE;
    if (m.size < last - first) {
      for (const vpn of [...m.keys()]) if (vpn >= first && vpn < last) m.delete(vpn);
    } else {
      for (let vpn = first; vpn < last; vpn++) m.delete(vpn);
    }
  }

  /** dmirror_migrate_alloc_and_copy: copy the source, or zero-fill when there is none. */
  copyToDevice(_mmId: number, _va: number, spfn: number, dpfn: number): void {
    if (spfn < 0) this.ctx.dma.zeroDevicePage(dpfn);
    else this.ctx.dma.systemToDevice(spfn, dpfn);
  }

  /** dmirror_devmem_fault_alloc_and_copy: erase the mirror entry, then copy home. */
  copyFromDevice(mmId: number, va: number, dpfn: number, spfn: number): void {
    this.pt.get(mmId)?.delete(va / PAGE_SIZE);
    this.ctx.dma.deviceToSystem(dpfn, spfn);
  }

  /** dmirror_fops_release: the file is closed, its xarray destroyed. */
  unbind(mmId: number): void {
    this.pt.delete(mmId);
  }

  *translations(): Iterable<DeviceTranslation> {
    for (const [mmId, m] of this.pt) {
      for (const [vpn, e] of m) {
        yield {
          mmId,
          va: vpn * PAGE_SIZE,
          pfn: e.pfn,
          order: 0,
          writable: (e.flags & HMM_PFN_WRITE) !== 0,
          devicePrivate: (e.flags & HMM_PFN_DEVICE_PRIVATE) !== 0,
          exclusive: (e.flags & HMM_PFN_EXCLUSIVE) !== 0,
        };
      }
    }
  }

  /** The entry of page `vpn` in `mmId`, if mirrored. */
  entry(mmId: number, vpn: number): MirrorEntry | undefined {
    return this.pt.get(mmId)?.get(vpn);
  }

  /** Copy the page of `e` into `out` at `off` (BACKING_PAGE for device pages). */
  readPage(e: MirrorEntry, out: Uint8Array, off: number): void {
    const content =
      e.flags & HMM_PFN_DEVICE_PRIVATE ? this.ctx.memory.content : this.ctx.machine.pool.content;
    content.readBytes(e.pfn, 0, out, off, PAGE_SIZE);
  }

  /** Copy `src` at `off` into the page of `e`. */
  writePage(e: MirrorEntry, src: Uint8Array, off: number): void {
    const content =
      e.flags & HMM_PFN_DEVICE_PRIVATE ? this.ctx.memory.content : this.ctx.machine.pool.content;
    content.writeBytes(e.pfn, 0, src, off, PAGE_SIZE);
  }
}

/** The plugin of {@link DmirrorFakeDriver}. */
export const dmirrorFakePlugin: HmmPlugin = {
  name: "dmirror-fake",
  apiVersion: HMM_API_VERSION,
  design: "per-pte",
  driver: DmirrorFakeDriver,
};

/** struct hmm_buffer of the selftest: CPU address, bounce ("mirror") buffer, and the counters. */
export interface HmmBuffer {
  ptr: number;
  mirror: Uint8Array;
  cpages: number;
  faults: number;
}

/** -errno of an error thrown by the core or the mm (EIO for anything else). */
function negErrno(e: unknown): number {
  if (e instanceof MmError) return -ERRNO[e.errno];
  return -ERRNO.EIO;
}

/** The bounce buffer of one command (struct dmirror_bounce). */
interface Bounce {
  addr: number;
  data: Uint8Array;
  cpages: number;
}

/**
 * One open of the device by one process (struct dmirror: the driver's mirror of that process's
 * address space). Each command is the ioctl of lib/test_hmm.c with the same name; the `...Steps`
 * forms run under the seeded scheduler.
 */
export class DmirrorFile {
  readonly drv: DmirrorFakeDriver;

  constructor(
    readonly core: HmmCore,
    readonly dev: Device,
    readonly proc: Process,
  ) {
    this.drv = dev.driver as DmirrorFakeDriver;
    // dmirror_fops_open: mmu_interval_notifier_insert over the whole address space.
    core.bind(dev, proc);
  }

  private get mmId(): number {
    return this.proc.mm.id;
  }

  /** dmirror_do_read: copy mirrored pages from `start`; -ENOENT at the first missing one. */
  private doRead(start: number, end: number, b: Bounce): number {
    for (let a = start; a < end; a += PAGE_SIZE) {
      const e = this.drv.entry(this.mmId, a / PAGE_SIZE);
      if (e === undefined) return -ENOENT;
      this.drv.readPage(e, b.data, a - b.addr);
      b.cpages++;
    }
    return 0;
  }

  /** dmirror_do_write: copy into pages mirrored writable; -ENOENT at the first other one. */
  private doWrite(start: number, end: number, b: Bounce): number {
    for (let a = start; a < end; a += PAGE_SIZE) {
      const e = this.drv.entry(this.mmId, a / PAGE_SIZE);
      if (e === undefined || !(e.flags & HMM_PFN_WRITE) || e.flags & HMM_PFN_EXCLUSIVE) return -ENOENT;
      this.drv.writePage(e, b.data, a - b.addr);
      b.cpages++;
    }
    return 0;
  }

  /**
   * dmirror_fault: hmm_range_fault over [start, end) with REQ_FAULT (| REQ_WRITE); a write that
   * got pages reported without WRITE (our own read-only device pages) is -EFAULT, as
   * dmirror_do_fault returns.
   */
  private *faultSteps(start: number, end: number, write: boolean): Steps<number> {
    try {
      const r = yield* this.core.deviceFaultSteps(this.dev, this.proc, start, end, write);
      return write && r.reportedReadOnly > 0 ? -EFAULT : 0;
    } catch (e) {
      return negErrno(e);
    }
  }

  /** dmirror_read / dmirror_write: the mirror-then-fault loop, counting fault rounds. */
  *accessSteps(write: boolean, buf: HmmBuffer, npages: number): Steps<number> {
    const addr = buf.ptr;
    const end = addr + npages * PAGE_SIZE;
    const b: Bounce = { addr, data: new Uint8Array(npages * PAGE_SIZE), cpages: 0 };
    if (write) b.data.set(buf.mirror.subarray(0, b.data.length));
    let faults = 0;
    let start = addr;
    let ret: number;
    for (;;) {
      ret = write ? this.doWrite(start, end, b) : this.doRead(start, end, b);
      if (ret !== -ENOENT) break;
      start = addr + b.cpages * PAGE_SIZE;
      ret = yield* this.faultSteps(start, end, write);
      if (ret !== 0) break;
      faults++;
    }
    if (ret !== 0) return ret;
    if (!write) buf.mirror.set(b.data);
    buf.cpages = b.cpages;
    buf.faults = faults;
    return 0;
  }

  /** dmirror_migrate_to_device, then the read-back of the whole range from the mirror. */
  private migrateToDev(buf: HmmBuffer, npages: number): number {
    const end = buf.ptr + npages * PAGE_SIZE;
    try {
      this.core.migrateToDevice(this.dev, this.proc, buf.ptr, end);
    } catch (e) {
      return negErrno(e);
    }
    return this.readBack(buf, npages);
  }

  /** The final dmirror_do_read of the migrate and exclusive commands. */
  private readBack(buf: HmmBuffer, npages: number): number {
    const b: Bounce = { addr: buf.ptr, data: new Uint8Array(npages * PAGE_SIZE), cpages: 0 };
    const ret = this.doRead(buf.ptr, buf.ptr + npages * PAGE_SIZE, b);
    if (ret !== 0) return ret;
    buf.mirror.set(b.data);
    buf.cpages = b.cpages;
    buf.faults = 0;
    return 0;
  }

  /** The command `req` (hmm_dmirror_cmd). `npages` carries the flag word for HMM_DMIRROR_FLAGS. */
  cmd(req: number, buf: HmmBuffer, npages: number): number {
    const end = buf.ptr + npages * PAGE_SIZE;
    switch (req) {
      case HMM_DMIRROR_READ:
      case HMM_DMIRROR_WRITE: {
        const steps = this.accessSteps(req === HMM_DMIRROR_WRITE, buf, npages);
        for (;;) {
          const r = steps.next();
          if (r.done) return r.value;
        }
      }
      case HMM_DMIRROR_MIGRATE_TO_DEV:
        return this.migrateToDev(buf, npages);
      case HMM_DMIRROR_MIGRATE_TO_SYS:
        try {
          const r = this.core.migrateToRam(this.dev, this.proc, buf.ptr, end);
          buf.cpages = r.migrated;
          buf.faults = 0;
          return 0;
        } catch (e) {
          return negErrno(e);
        }
      case HMM_DMIRROR_SNAPSHOT: {
        // dmirror_snapshot: hmm_range_fault without faulting, one byte per page, 64 pages a round.
        let cpages = 0;
        for (let a = buf.ptr; a < end; a += 64 * PAGE_SIZE) {
          const b = Math.min(end, a + 64 * PAGE_SIZE);
          buf.mirror.set(this.core.snapshotProt(this.dev, this.proc, a, b), (a - buf.ptr) / PAGE_SIZE);
          cpages += (b - a) / PAGE_SIZE;
        }
        buf.cpages = cpages;
        buf.faults = 0;
        return 0;
      }
      case HMM_DMIRROR_EXCLUSIVE:
        try {
          this.core.makeExclusive(this.dev, this.proc, buf.ptr, end);
        } catch (e) {
          return negErrno(e);
        }
        return this.readBack(buf, npages);
      case HMM_DMIRROR_CHECK_EXCLUSIVE:
        for (let a = buf.ptr; a < end; a += PAGE_SIZE) {
          const e = this.drv.entry(this.mmId, a / PAGE_SIZE);
          if (e !== undefined && e.flags & HMM_PFN_EXCLUSIVE) return -EPERM;
        }
        return 0;
      case HMM_DMIRROR_RELEASE:
        // dmirror_device_remove_chunks: evict every page of the device to system memory.
        this.core.evict(this.dev, this.dev.memory.npages);
        return 0;
      case HMM_DMIRROR_FLAGS:
        if (npages & HMM_DMIRROR_FLAG_FAIL_ALLOC) this.dev.failNextAlloc();
        return 0;
      default:
        return -EINVAL;
    }
  }

  /** dmirror_fops_release: mmu_interval_notifier_remove, the mirror goes. */
  close(): void {
    this.core.unbind(this.dev, this.proc);
  }
}

/** hmm_dmirror_cmd of the selftest. */
export function hmmDmirrorCmd(file: DmirrorFile, req: number, buf: HmmBuffer, npages: number): number {
  return file.cmd(req, buf, npages);
}
