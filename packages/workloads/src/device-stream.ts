import { DEVICE_ATOMIC, DEVICE_READ, DEVICE_WRITE, DeviceAccesses } from "@hmmkit/core";
import type { Region } from "./region.js";

/**
 * A phase's device accesses in one address space: the core's DeviceAccesses plus, per access,
 * the region and page it targets (so the oracle checks reads and applies writes without looking
 * addresses up). Typed arrays that grow by doubling; reused from phase to phase.
 */
export class DeviceStream {
  readonly acc = new DeviceAccesses(4096);
  region = new Uint8Array(4096);
  page = new Int32Array(4096);
  /** Regions by index (the `region` array holds indices into it). */
  readonly regions: Region[] = [];

  get count(): number {
    return this.acc.count;
  }

  clear(): void {
    this.acc.clear();
  }

  private slot(r: Region): number {
    let k = this.regions.indexOf(r);
    if (k < 0) k = this.regions.push(r) - 1;
    return k;
  }

  /** Append an access of `kind` (DEVICE_READ / WRITE / ATOMIC) to page `page` of `r`. */
  push(r: Region, page: number, kind: number, stamp: number): void {
    const i = this.acc.count;
    if (i === this.page.length) {
      const region = new Uint8Array(i * 2);
      region.set(this.region);
      this.region = region;
      const pages = new Int32Array(i * 2);
      pages.set(this.page);
      this.page = pages;
    }
    this.acc.push(r.va(page), kind, stamp);
    this.region[i] = this.slot(r);
    this.page[i] = page;
  }
}

export { DEVICE_ATOMIC, DEVICE_READ, DEVICE_WRITE };
