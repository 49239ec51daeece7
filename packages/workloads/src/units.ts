import { PAGE_SIZE } from "@hmmkit/mm";

/** Binary size units a spec accepts, largest first, with their byte counts. */
export const SIZE_UNITS: readonly (readonly [string, number])[] = [
  ["TiB", 1024 ** 4],
  ["GiB", 1024 ** 3],
  ["MiB", 1024 ** 2],
  ["KiB", 1024],
  ["B", 1],
];

const SIZE_RE = /^(\d+)(TiB|GiB|MiB|KiB|B)?$/;

/**
 * Bytes of a size written with a binary unit (`64MiB`, `1GiB`, `8192B`; a plain integer is
 * bytes). Null if the text is not of that form or the result is not a safe integer.
 */
export function parseBinarySize(text: string): number | null {
  const m = SIZE_RE.exec(text);
  if (m === null) return null;
  const unit = m[2] === undefined ? 1 : SIZE_UNITS.find((u) => u[0] === m[2])![1];
  const n = Number(m[1]) * unit;
  return Number.isSafeInteger(n) ? n : null;
}

/** `bytes` in the largest binary unit that divides it exactly (`262144` -> `256KiB`). */
export function formatBinarySize(bytes: number): string {
  for (const [name, n] of SIZE_UNITS) if (bytes >= n && bytes % n === 0) return `${bytes / n}${name}`;
  return `${bytes}B`;
}

/** Pages of a size in bytes (sizes in specs are multiples of the page size). */
export function pagesOf(bytes: number): number {
  return Math.floor(bytes / PAGE_SIZE);
}
