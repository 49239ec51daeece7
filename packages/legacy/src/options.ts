import { HmmError } from "@hmmkit/core";
import { z } from "zod";

/** Options of the legacy layer for one device (attachSharedMirror's `options`). */
export interface LegacyOptions {
  /**
   * Delayed directory pruning: up to this many emptied directories per hmm_pt stay allocated for
   * reuse (oldest pruned first). 0 (default) prunes at once, as v12 does.
   */
  delayedPruning: number;
  /**
   * One directory tree per address space, shared by every device attached with this option that
   * mirrors it (Jérôme's planned directory sharing) instead of one hmm_pt per mirror. Default false.
   */
  sharedDirectories: boolean;
}

/** Defaults of {@link LegacyOptions}. */
export const DEFAULT_LEGACY_OPTIONS: Readonly<LegacyOptions> = Object.freeze({
  delayedPruning: 0,
  sharedDirectories: false,
});

const schema = z
  .object({
    delayedPruning: z.number().int().min(0).max(1_000_000).optional(),
    sharedDirectories: z.boolean().optional(),
  })
  .strict();

/** Validate `options` (an HmmError EINVAL BAD_CONFIG naming the key and value otherwise). */
export function parseLegacyOptions(options: unknown): LegacyOptions {
  if (options === undefined) return { ...DEFAULT_LEGACY_OPTIONS };
  const r = schema.safeParse(options);
  if (!r.success) {
    const problems = r.error.issues.map((i) => {
      const key = i.path.join(".") || (i.code === "unrecognized_keys" ? (i.keys ?? []).join(", ") : "");
      return `${key ? `'${key}': ` : ""}${i.message}`;
    });
    throw new HmmError(
      "EINVAL",
      `attachSharedMirror options: ${problems.join("; ")} (known: delayedPruning (a count, default 0), sharedDirectories (boolean, default false))`,
      "BAD_CONFIG",
    );
  }
  return { ...DEFAULT_LEGACY_OPTIONS, ...r.data };
}
