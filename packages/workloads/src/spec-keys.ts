import { HPAGE_PMD_SIZE, PAGE_SIZE } from "@hmmkit/mm";
import { formatBinarySize, parseBinarySize } from "./units.js";

/** The forms a spec value takes. */
export type SpecKeyType = "size" | "fraction" | "int" | "number";

/** One key of a workload kind: its form, default, bounds and meaning. */
export interface SpecKey {
  readonly type: SpecKeyType;
  /** The value when the spec does not give the key (bytes for a size). */
  readonly default: number;
  /** Smallest value allowed (default: 4 KiB for a size, 0 otherwise). */
  readonly min?: number;
  /** Largest value allowed (default: 256 GiB for a size, 1 for a fraction). */
  readonly max?: number;
  /** A size must be a multiple of this many bytes (default 4 KiB). */
  readonly multipleOf?: number;
  /** What the key means, for errors and the README. */
  readonly doc: string;
}

/** The largest size a spec may name (the most RAM a simulated machine may have). */
export const MAX_SPEC_SIZE = 256 * 1024 ** 3;

function bounds(k: SpecKey): [number, number] {
  switch (k.type) {
    case "size":
      return [k.min ?? PAGE_SIZE, k.max ?? MAX_SPEC_SIZE];
    case "fraction":
      return [k.min ?? 0, k.max ?? 1];
    default:
      return [k.min ?? 0, k.max ?? 2 ** 31 - 1];
  }
}

/**
 * The expected form of a key's value, as errors state it (`short`: as the README's table does,
 * e.g. "size, multiple of 4 KiB, 4KiB..256GiB").
 */
export function describeKeyForm(k: SpecKey, short = false): string {
  const [min, max] = bounds(k);
  if (short) {
    if (k.type !== "size") return `${k.type} ${min}..${max}`;
    const mult = k.multipleOf ?? PAGE_SIZE;
    return `size, multiple of ${formatBinarySize(mult)}, ${formatBinarySize(min)}..${formatBinarySize(max)}`;
  }
  switch (k.type) {
    case "size": {
      const mult = k.multipleOf ?? PAGE_SIZE;
      const m = mult === HPAGE_PMD_SIZE ? "2 MiB" : mult === PAGE_SIZE ? "4 KiB" : formatBinarySize(mult);
      return `a size: a positive multiple of ${m} from ${formatBinarySize(min)} to ${formatBinarySize(max)}, an integer with a binary unit (B, KiB, MiB, GiB, TiB; no unit means bytes), e.g. 64MiB`;
    }
    case "fraction":
      return `a fraction from ${min} to ${max} (e.g. 0.25)`;
    case "int":
      return `an integer from ${min} to ${max}`;
    case "number":
      return `a number from ${min} to ${max} (e.g. 1.5)`;
  }
}

const DECIMAL = /^(\d+(\.\d*)?|\.\d+)$/;

/** The value of `text` for key `k`, or null if it is not of the key's form or out of its bounds. */
export function parseKeyValue(k: SpecKey, text: string): number | null {
  const [min, max] = bounds(k);
  let v: number | null;
  switch (k.type) {
    case "size": {
      v = parseBinarySize(text);
      if (v !== null && v % (k.multipleOf ?? PAGE_SIZE) !== 0) return null;
      break;
    }
    case "int":
      v = /^\d+$/.test(text) ? Number(text) : null;
      if (v !== null && !Number.isSafeInteger(v)) v = null;
      break;
    default:
      v = DECIMAL.test(text) ? Number(text) : null;
  }
  if (v === null || !Number.isFinite(v) || v < min || v > max) return null;
  return v;
}

/** `v` written as a spec value of key `k` (sizes in their largest exact unit). */
export function formatKeyValue(k: SpecKey, v: number): string {
  return k.type === "size" ? formatBinarySize(v) : String(v);
}
