import "reflect-metadata";
import {
  createHmm,
  type DeviceContext,
  type DeviceTranslation,
  HMM_API_VERSION,
  type HmmDriver,
  TOKENS,
} from "@hmmkit/core";
import {
  contentDigest,
  hex,
  MADV_HUGEPAGE,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  MMU_NOTIFY_EVENT_NAMES,
  type MmuNotifyEvent,
  PROT_READ,
  PROT_WRITE,
} from "@hmmkit/mm";
import { inject, injectable } from "tsyringe";

const MiB = 1024 * 1024;

/** A driver that logs what the core tells it and copies pages with the device's DMA engine. */
@injectable()
class LoggingDemoDriver implements HmmDriver {
  static log: (line: string) => void = console.log;
  pages = 0;
  constructor(@inject(TOKENS.DeviceContext) private readonly ctx: DeviceContext) {}
  mirrorPte(): void {
    this.pages++;
  }
  mirrorPmd(_mm: number, va: number, pfn: number): void {
    LoggingDemoDriver.log(`    driver: huge PMD ${hex(va)} -> frames ${pfn}..${pfn + 511}`);
  }
  invalidate(_mm: number, start: number, end: number, event: MmuNotifyEvent): void {
    LoggingDemoDriver.log(
      `    driver: invalidate [${hex(start)}, ${hex(end)}) ${MMU_NOTIFY_EVENT_NAMES[event]}`,
    );
  }
  copyToDevice(_mm: number, _va: number, spfn: number, dpfn: number): void {
    if (spfn < 0) this.ctx.dma.zeroDevicePage(dpfn);
    else this.ctx.dma.systemToDevice(spfn, dpfn);
  }
  copyFromDevice(_mm: number, _va: number, dpfn: number, spfn: number): void {
    this.ctx.dma.deviceToSystem(dpfn, spfn);
  }
  *translations(): Iterable<DeviceTranslation> {}
}

/** Print a short tour: page faults, fork and copy-on-write, a THP, and a device mirroring memory. */
export function main(log: (line: string) => void = console.log): void {
  LoggingDemoDriver.log = log;
  const { core, machine } = createHmm({ machine: { memoryBytes: 256 * MiB } });
  const stats = machine.stats;
  const parent = machine.createProcess();
  const rw = PROT_READ | PROT_WRITE;
  const flags = MAP_PRIVATE | MAP_ANONYMOUS;

  log("hmmkit: a simulated Linux memory manager with an HMM core\n");
  const buf = parent.mm.mmap({ length: 64 * 1024, prot: rw, flags });
  log(`mmap 64 KiB private anonymous at ${hex(buf)}`);
  const r1 = parent.touch(buf, 32 * 1024, false);
  log(
    `read 8 pages:   ${r1.faults} faults, each mapped the shared zero page (${stats.faultZeroPage} zero-page maps)`,
  );
  const r2 = parent.touch(buf, 64 * 1024, true, 7);
  log(
    `write 16 pages: ${r2.faults} faults (${stats.cowCopies} copies of the zero page, ${stats.faultAnon} fresh pages)`,
  );

  const child = parent.fork();
  log(`\nfork: pid ${child.pid}; the 16 pages are shared copy-on-write, write-protected in both`);
  const copies = stats.cowCopies;
  child.touch(buf, 4096, true, 99);
  log(
    `child writes page 0: ${stats.cowCopies - copies} copy; parent still reads its own data: ${parent.readPageHash(buf) !== child.readPageHash(buf)}`,
  );
  child.exit();
  const reuses = stats.cowReuses;
  parent.touch(buf + 4096, 4096, true, 8);
  log(`child exits; parent writes page 1: reused in place (${stats.cowReuses - reuses} reuse, no copy)`);

  const huge = parent.mm.mmap({ length: 4 * MiB, prot: rw, flags });
  parent.mm.madvise(huge, 4 * MiB, MADV_HUGEPAGE);
  const r3 = parent.touch(huge, 2 * MiB, true, 3);
  log(`\nMADV_HUGEPAGE region: writing 2 MiB took ${r3.faults} fault (${stats.thpAllocs} THP allocated)`);

  const dev = core.addDevice(
    { name: "demo", apiVersion: HMM_API_VERSION, design: "per-pte", driver: LoggingDemoDriver },
    { name: "gpu0", memoryPages: 1024 },
  );
  log("\na device faults both regions through the HMM core (per-PTE callbacks, one huge callback per PMD):");
  const f1 = core.deviceFault(dev, parent, buf, buf + 64 * 1024, false);
  const f2 = core.deviceFault(dev, parent, huge, huge + 2 * MiB, true);
  log(
    `    ${f1.pages + f2.pages} pages reported; driver saw ${(dev.driver as LoggingDemoDriver).pages} per-PTE calls`,
  );
  log("the CPU write-protects part of it (mprotect), then unmaps the THP:");
  parent.mm.mprotect(buf, 16 * 1024, PROT_READ);
  parent.mm.munmap(huge, 2 * MiB);
  const m = core.migrateToDevice(dev, parent, buf + 16 * 1024, buf + 32 * 1024);
  log(
    `\nmigrated ${m.migrated} pages to device memory; digest of the process memory: ${contentDigest(parent.mm)}`,
  );
  parent.touch(buf + 16 * 1024, 16 * 1024, false);
  log(
    `the CPU reads them: ${dev.stats.cpuFaultsOnDevicePages} faults on device pages brought them home; digest: ${contentDigest(parent.mm)}`,
  );
  parent.exit();
  log(`\nexit: ${machine.usedFrames} frames in use, ${dev.memory.used} device frames in use`);
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split("/").pop()!)) main();
