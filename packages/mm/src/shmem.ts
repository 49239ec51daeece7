/**
 * The backing object of a shared anonymous mapping (the kernel's shmem file behind
 * MAP_SHARED|MAP_ANONYMOUS). Pages live here, indexed by page offset, independent of any page
 * table: unmapping a page from a process leaves it in the object, and the next fault maps the same
 * frame again. Each cached page holds one reference (the page-cache reference).
 */
export class ShmemObject {
  /** Frame of each page offset, plus one (0 = not allocated yet). */
  readonly pages: Int32Array;
  /** VMAs (in any process) that map this object. */
  users = 0;
  constructor(
    readonly id: number,
    readonly npages: number,
  ) {
    this.pages = new Int32Array(npages);
  }

  /** Frame at page offset `index`, or -1 (also past the object's end). */
  frameAt(index: number): number {
    return index < this.npages ? this.pages[index] - 1 : -1;
  }
}
