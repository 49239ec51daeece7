import {
  type Mm,
  type MmuIntervalNotifier,
  type MmuNotifierRange,
  MmuNotifyEvent,
  TASK_SIZE,
} from "@hmmkit/mm";
import type { Containment } from "./containment.js";
import type { Device, DeviceBinding } from "./device.js";
import { HmmError } from "./errors.js";
import { countInvalidatedPages } from "./invalidate-count.js";
import { PmdSet } from "./pmd-set.js";

/** The device's interval notifier on `mm` (created on first use, covering all of user space). */
export function bindMm(containment: Containment, dev: Device, mm: Mm): DeviceBinding {
  let b = dev.bindings.get(mm.id);
  if (b !== undefined && !mm.exited) return b;
  if (mm.exited) throw new HmmError("EFAULT", `device ${dev.name}: address space ${mm.id} has exited`);
  const notifier = mm.notifiers.insert(0, TASK_SIZE, {
    invalidate: (sub, range, curSeq) => onInvalidate(containment, dev, mm, sub, range, curSeq),
  });
  b = { mm, notifier, reported: new PmdSet() };
  dev.bindings.set(mm.id, b);
  return b;
}

/** Drop `dev`'s notifier on `mm` and tell its driver (see HmmCore.unbind). */
export function unbindMm(dev: Device, mm: Mm): void {
  const b = dev.bindings.get(mm.id);
  if (b === undefined) return;
  b.notifier.remove();
  dev.bindings.delete(mm.id);
  if (dev.state === "active") dev.dispatcher.unbind(mm.id);
}

function onInvalidate(
  containment: Containment,
  dev: Device,
  mm: Mm,
  sub: MmuIntervalNotifier,
  range: MmuNotifierRange,
  curSeq: number,
): boolean {
  // The driver's update lock is implied: nothing else runs while a callback runs.
  sub.setSeq(curSeq);
  containment.notifierEnter();
  try {
    if (dev.state === "active") {
      const b = dev.bindings.get(mm.id);
      if (b !== undefined)
        dev.stats.invalidatedPages += countInvalidatedPages(
          mm,
          dev.ownerId,
          b.reported,
          range.start,
          range.end,
        );
      dev.dispatcher.invalidate(mm.id, range.start, range.end, range.event, range.owner);
    }
  } finally {
    containment.notifierExit();
  }
  if (range.event === MmuNotifyEvent.RELEASE) {
    dev.bindings.delete(mm.id);
    sub.remove();
  }
  return true;
}
