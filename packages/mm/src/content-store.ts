import { MmError } from "./errors.js";

/**
 * How frame contents are kept. `bytes`: every frame holds 4096 real bytes (data-integrity tests).
 * `tag`: every frame holds one 32-bit content token (large runs: 64 GiB of mirrored memory costs
 * 64 MiB of tokens).
 */
export type ContentMode = "bytes" | "tag";

const WORDS_PER_PAGE = 1024;
const FRAMES_PER_CHUNK = 512;
const CHUNK_BYTES = FRAMES_PER_CHUNK * 4096;
/** Golden-ratio increment between consecutive words of a stamped page. */
const STAMP_STEP = 0x9e3779b9 | 0;

function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d);
  x = Math.imul(x ^ (x >>> 15), 0x846ca68b);
  return (x ^ (x >>> 16)) | 0;
}

/** Odd weight of each 32-bit word of a page in the page hash. */
const WEIGHTS = new Int32Array(WORDS_PER_PAGE);
let weightSum = 0;
let stampConstant = 0;
for (let j = 0; j < WORDS_PER_PAGE; j++) {
  WEIGHTS[j] = mix32(j + 0x1234567) | 1;
  weightSum = (weightSum + WEIGHTS[j]) | 0;
  stampConstant = (stampConstant + Math.imul(Math.imul(j, STAMP_STEP), WEIGHTS[j])) | 0;
}

/**
 * The page hash is linear: hash(page) = sum over its 1024 little-endian 32-bit words of
 * word[j] * W[j] (mod 2^32), with fixed odd weights W. A page of zeros hashes to 0. A page stamped
 * with `s` holds word[j] = s + j * STAMP_STEP, so its hash has the closed form
 * s * sum(W) + sum(j * STAMP_STEP * W[j]); that is what lets `tag` mode keep only the hash as the
 * page's token and still agree with `bytes` mode, which hashes the real bytes.
 */
export function stampToken(stamp: number): number {
  return (Math.imul(stamp | 0, weightSum) + stampConstant) >>> 0;
}

/**
 * Contents of a set of frames (system RAM, or one device's memory), in either content mode.
 * Writes of generated data are page-granular *stamps*: a stamped page's whole content becomes the
 * pattern derived from the stamp, in both modes, which is what makes the two modes' digests agree.
 * Raw byte reads and writes exist only in `bytes` mode.
 */
export class ContentStore {
  private readonly tokens: Uint32Array | null;
  private readonly chunks: (Uint8Array | undefined)[];
  private readonly words: (Int32Array | undefined)[];

  constructor(
    readonly mode: ContentMode,
    readonly nframes: number,
  ) {
    this.tokens = mode === "tag" ? new Uint32Array(nframes) : null;
    const nchunks = Math.ceil(nframes / FRAMES_PER_CHUNK);
    this.chunks = mode === "bytes" ? new Array(nchunks) : [];
    this.words = mode === "bytes" ? new Array(nchunks) : [];
  }

  private chunk(pfn: number): Uint8Array {
    const c = (pfn / FRAMES_PER_CHUNK) | 0;
    let bytes = this.chunks[c];
    if (bytes === undefined) {
      bytes = new Uint8Array(CHUNK_BYTES);
      this.chunks[c] = bytes;
      this.words[c] = new Int32Array(bytes.buffer);
    }
    return bytes;
  }

  private wordsOf(pfn: number): Int32Array {
    this.chunk(pfn);
    return this.words[(pfn / FRAMES_PER_CHUNK) | 0]!;
  }

  /** Fill frame `pfn` with zeros. */
  zero(pfn: number): void {
    if (this.tokens) {
      this.tokens[pfn] = 0;
      return;
    }
    const c = (pfn / FRAMES_PER_CHUNK) | 0;
    const bytes = this.chunks[c];
    if (bytes === undefined) return; // never written: already zero
    const off = (pfn % FRAMES_PER_CHUNK) * 4096;
    bytes.fill(0, off, off + 4096);
  }

  /** Fill `n` consecutive frames starting at `pfn` with zeros. */
  zeroRange(pfn: number, n: number): void {
    if (this.tokens) {
      this.tokens.fill(0, pfn, pfn + n);
      return;
    }
    for (let i = 0; i < n; i++) this.zero(pfn + i);
  }

  /** Copy frame `spfn` of this store into frame `dpfn` of `dst` (same mode required). */
  copyTo(spfn: number, dst: ContentStore, dpfn: number): void {
    if (dst.mode !== this.mode) {
      throw new MmError("EINVAL", `cannot copy a page between content modes ${this.mode} and ${dst.mode}`);
    }
    if (this.tokens) {
      dst.tokens![dpfn] = this.tokens[spfn];
      return;
    }
    const src = this.chunks[(spfn / FRAMES_PER_CHUNK) | 0];
    if (src === undefined) {
      dst.zero(dpfn);
      return;
    }
    const soff = (spfn % FRAMES_PER_CHUNK) * 4096;
    dst.chunk(dpfn).set(src.subarray(soff, soff + 4096), (dpfn % FRAMES_PER_CHUNK) * 4096);
  }

  /**
   * Tag mode's token array: the page hash of every frame, indexed by pfn (what `hash` returns),
   * for loops that read many hashes; null in bytes mode. Read it, never write it.
   */
  get tagTokens(): Uint32Array | null {
    return this.tokens;
  }

  /** Stamp frame `pfn`: its whole content becomes the pattern of `stamp` (see {@link stampToken}). */
  stamp(pfn: number, stamp: number): void {
    const t = this.tokens;
    if (t !== null) {
      t[pfn] = stampToken(stamp);
      return;
    }
    this.stampBytes(pfn, stamp);
  }

  private stampBytes(pfn: number, stamp: number): void {
    const words = this.wordsOf(pfn);
    const base = (pfn % FRAMES_PER_CHUNK) * WORDS_PER_PAGE;
    let w = stamp | 0;
    for (let j = 0; j < WORDS_PER_PAGE; j++) {
      words[base + j] = w;
      w = (w + STAMP_STEP) | 0;
    }
  }

  /** True if frame `pfn` holds only zero bytes (memchr_inv over the page finds nothing). */
  isZero(pfn: number): boolean {
    if (this.tokens) return this.tokens[pfn] === 0;
    const words = this.words[(pfn / FRAMES_PER_CHUNK) | 0];
    if (words === undefined) return true;
    const base = (pfn % FRAMES_PER_CHUNK) * WORDS_PER_PAGE;
    for (let j = 0; j < WORDS_PER_PAGE; j++) if (words[base + j] !== 0) return false;
    return true;
  }

  /** The page hash of frame `pfn` (0 for a page of zeros); equal in both modes for equal histories. */
  hash(pfn: number): number {
    // Kept small so the device access loop inlines it: the tag-mode case is one load.
    const t = this.tokens;
    if (t !== null) return t[pfn];
    return this.hashBytes(pfn);
  }

  private hashBytes(pfn: number): number {
    const c = (pfn / FRAMES_PER_CHUNK) | 0;
    const words = this.words[c];
    if (words === undefined) return 0;
    const base = (pfn % FRAMES_PER_CHUNK) * WORDS_PER_PAGE;
    let h = 0;
    for (let j = 0; j < WORDS_PER_PAGE; j++) h = (h + Math.imul(words[base + j], WEIGHTS[j])) | 0;
    return h >>> 0;
  }

  private requireBytes(what: string): void {
    if (!this.tokens) return;
    throw new MmError(
      "EINVAL",
      `${what} needs content mode 'bytes' (this machine keeps only a content token per page in 'tag' mode); use stamped writes or create the machine with contentMode: "bytes"`,
      "CONTENT_MODE",
    );
  }

  /** Copy `len` bytes at offset `off` of frame `pfn` into `out[outOff..]` (bytes mode only). */
  readBytes(pfn: number, off: number, out: Uint8Array, outOff: number, len: number): void {
    this.requireBytes("reading raw bytes");
    const bytes = this.chunks[(pfn / FRAMES_PER_CHUNK) | 0];
    if (bytes === undefined) {
      out.fill(0, outOff, outOff + len);
      return;
    }
    const base = (pfn % FRAMES_PER_CHUNK) * 4096 + off;
    out.set(bytes.subarray(base, base + len), outOff);
  }

  /** Write `len` bytes from `src[srcOff..]` at offset `off` of frame `pfn` (bytes mode only). */
  writeBytes(pfn: number, off: number, src: Uint8Array, srcOff: number, len: number): void {
    this.requireBytes("writing raw bytes");
    const base = (pfn % FRAMES_PER_CHUNK) * 4096 + off;
    this.chunk(pfn).set(src.subarray(srcOff, srcOff + len), base);
  }
}
