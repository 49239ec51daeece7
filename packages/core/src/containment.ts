import type { Machine } from "@hmmkit/mm";
import { refuseInsideCallback } from "./callback-scope.js";
import type { Device } from "./device.js";
import type { DriverError } from "./errors.js";
import { evacuate } from "./evacuation.js";

/**
 * Fault containment of one core's devices: a device whose driver failed is detached (its pages
 * brought home with the core's own copy, its notifiers dropped) as soon as that is safe, and a
 * removed device's pagemap is unregistered once its last frame is freed.
 */
export class Containment {
  private readonly reapQueue: Device[] = [];
  private readonly pendingUnregister: Device[] = [];
  private notifierDepth = 0;
  private reaping = false;

  /** `unregistered` is called for each removed device whose pagemap was just unregistered. */
  constructor(
    private readonly machine: Machine,
    private readonly unregistered: (dev: Device) => void,
  ) {}

  /** An invalidation callback starts: a failure seen until {@link notifierExit} is reaped later. */
  notifierEnter(): void {
    this.notifierDepth++;
  }

  /** The invalidation callback that {@link notifierEnter} announced has ended. */
  notifierExit(): void {
    this.notifierDepth--;
  }

  /** `dev`'s driver failed with `err`: mark it failed and detach it as soon as that is safe. */
  deviceFailed(dev: Device, err: DriverError): void {
    // A failure in `release` (the device is already detached) is recorded, nothing more.
    if (dev.state === "removed") dev.failure ??= err;
    if (dev.state !== "active") return;
    dev.state = "failed";
    dev.failure = err;
    this.reapQueue.push(dev);
    // Inside an invalidation the page tables are mid-change: finish when the operation is done
    // (the machine's next safe point, or the end of the core operation in progress).
    if (this.notifierDepth > 0) {
      this.machine.defer(() => this.reap());
      return;
    }
    try {
      this.reap();
    } catch (e) {
      // Out of stack (a driver that failed deep in a recursion): finish at the next safe point.
      if (!(e instanceof RangeError)) throw e;
      this.machine.defer(() => this.reap());
    }
  }

  /** `dev` was removed: unregister its pagemap once its last frame is freed. */
  removed(dev: Device): void {
    this.pendingUnregister.push(dev);
    this.unregisterFreed();
  }

  /** Unregister the pagemaps of removed devices whose last frame was freed. */
  private unregisterFreed(): void {
    for (let i = this.pendingUnregister.length - 1; i >= 0; i--) {
      const d = this.pendingUnregister[i];
      if (d.memory.used !== 0) continue;
      this.machine.unregisterDevicePagemap(d.ownerId);
      this.unregistered(d);
      this.pendingUnregister.splice(i, 1);
    }
  }

  /** See HmmCore.reap. */
  reap(): void {
    refuseInsideCallback(this.machine, "reap");
    if (this.notifierDepth > 0 || this.reaping) return;
    if (this.pendingUnregister.length > 0) this.unregisterFreed();
    this.reaping = true;
    try {
      while (this.reapQueue.length > 0) {
        const dev = this.reapQueue[0];
        evacuate(this.machine, dev);
        for (const b of dev.bindings.values()) b.notifier.remove();
        dev.bindings.clear();
        this.reapQueue.shift();
      }
    } finally {
      this.reaping = false;
    }
  }
}
