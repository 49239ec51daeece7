import "reflect-metadata";
import { createHmm, DeviceAccesses } from "@hmmkit/core";
import { hex, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE } from "@hmmkit/mm";
import { plugin, type TinyTlbDriver } from "./tlb-driver.js";

/** Register the plugin, fault a buffer into the device, watch an munmap invalidate it, run device accesses. */
export function main(log: (line: string) => void = console.log): void {
  const { core, machine } = createHmm({ machine: { memoryBytes: 64 << 20 } });
  const dev = core.addDevice(plugin, { name: "tlb0", memoryPages: 256 });
  const proc = machine.createProcess();
  const buf = proc.mm.mmap({
    length: 64 * 1024,
    prot: PROT_READ | PROT_WRITE,
    flags: MAP_PRIVATE | MAP_ANONYMOUS,
  });
  proc.write(buf, new TextEncoder().encode("hello from the CPU"));
  const r = core.deviceFault(dev, proc, buf, buf + 64 * 1024, false);
  const tlb = dev.driver as TinyTlbDriver;
  log(
    `device fault on [${hex(buf)}, +64 KiB): ${r.pages} pages reported, ${r.cpuFaults} CPU faults run for the device`,
  );
  log(`TLB holds ${tlb.tlb.size} entries (callback mode: ${dev.callbackMode})`);
  proc.mm.munmap(buf + 32 * 1024, 32 * 1024);
  log(`after munmap of the second half: ${tlb.tlb.size} entries`);
  const m = core.migrateToDevice(dev, proc, buf, buf + 4096);
  log(
    `migrated ${m.migrated} page to device memory; the CPU reads it back: "${new TextDecoder().decode(proc.read(buf, 18))}"`,
  );
  // The device runs work on the half still mapped: 8 reads, then 8 writes, through translate.
  // All 16 are in flight together. Page 0 came home (its entry went with the migration) and the
  // others were mirrored read-only (the zero page): page 0's read and write and the 7 other
  // writes miss, fault in one batch, and replay.
  const acc = new DeviceAccesses();
  for (let i = 0; i < 8; i++) acc.read(buf + i * 4096);
  for (let i = 0; i < 8; i++) acc.write(buf + i * 4096, 0x1000 + i);
  const run = core.runDevice(dev, proc, acc);
  log(
    `device ran ${run.completed} accesses: ${dev.stats.translationHits} translation hits, ${dev.stats.translationMisses} misses, ${run.batches} fault batch${run.batches === 1 ? "" : "es"}, ${dev.stats.localAccesses} to device memory, ${dev.stats.remoteAccesses} remote`,
  );
  proc.exit();
  log(`after exit: ${machine.usedFrames} frames in use, ${dev.memory.used} device frames in use`);
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split("/").pop()!)) main();
