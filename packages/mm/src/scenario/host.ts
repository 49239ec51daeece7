import { readFileSync } from "node:fs";
import type { MachineConfig } from "../machine.js";

function read(path: string): string | null {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return null;
  }
}

/**
 * The memory-manager settings of the Linux host this runs on, so that a scenario can be compared
 * with the real kernel on the same machine: THP mode and huge-zero-page use from sysfs, and the
 * zero page's absence on kernels booted with `pvm_no_zero_page=1`. Settings that cannot be read
 * keep the Linux defaults.
 */
export function hostMachineConfig(): Partial<MachineConfig> {
  const c: Partial<MachineConfig> = {};
  const thp = read("/sys/kernel/mm/transparent_hugepage/enabled");
  const sel = thp ? /\[(always|madvise|never)\]/.exec(thp) : null;
  if (sel) c.thp = sel[1] as MachineConfig["thp"];
  const hz = read("/sys/kernel/mm/transparent_hugepage/use_zero_page");
  if (hz !== null) c.hugeZeroPage = hz.trim() === "1";
  const cmdline = read("/proc/cmdline");
  if (cmdline !== null) c.zeroPage = !/(^|\s)pvm_no_zero_page=1(\s|$)/.test(cmdline);
  const fa = read("/sys/kernel/debug/fault_around_bytes");
  if (fa !== null && Number.isInteger(Number(fa.trim()))) c.faultAroundBytes = Number(fa.trim());
  return c;
}
