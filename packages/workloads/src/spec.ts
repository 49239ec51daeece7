import { didYouMean } from "@hmmkit/core";
import { WorkloadSpecError } from "./errors.js";
import { WORKLOAD_KIND_NAMES, WORKLOAD_KINDS, type WorkloadKind } from "./kind-table.js";
import { describeKeyForm, formatKeyValue, parseKeyValue } from "./spec-keys.js";

/** A parsed workload spec: the kind and every key's value (defaults filled in). */
export interface WorkloadSpec {
  readonly kind: WorkloadKind;
  /** Every key of the kind, in table order; sizes in bytes. */
  readonly params: Readonly<Record<string, number>>;
  /** The normalized text: every key, in table order, sizes in their largest exact unit. */
  readonly text: string;
}

/**
 * Parse `kind:key=value,key=value` (e.g. `stream:size=256MiB,passes=2,write=0.5`; `stream` alone
 * takes every default). Keys may come in any order, each at most once. Throws WorkloadSpecError
 * (code BAD_SPEC) naming the unknown kind, the unknown key, or the key with its bad value and the
 * form expected.
 */
export function parseWorkloadSpec(text: string): WorkloadSpec {
  if (typeof text !== "string")
    throw new WorkloadSpecError(String(text), "syntax", `a spec must be a string, got ${typeof text}`);
  const spec = text.trim();
  const colon = spec.indexOf(":");
  const kindText = (colon < 0 ? spec : spec.slice(0, colon)).trim();
  if (kindText === "")
    throw new WorkloadSpecError(
      text,
      "syntax",
      `no kind: a spec is kind:key=value,... (kinds: ${WORKLOAD_KIND_NAMES.join(", ")})`,
    );
  if (!Object.hasOwn(WORKLOAD_KINDS, kindText)) {
    const near = didYouMean(kindText, WORKLOAD_KIND_NAMES);
    throw new WorkloadSpecError(
      text,
      "unknown-kind",
      `unknown kind '${kindText}'${near ? ` (did you mean '${near}'?)` : ""}; kinds: ${WORKLOAD_KIND_NAMES.join(", ")}`,
      kindText,
    );
  }
  const kind = kindText as WorkloadKind;
  const info = WORKLOAD_KINDS[kind];
  const known = Object.keys(info.keys);
  const given = new Map<string, number>();
  const body = colon < 0 ? "" : spec.slice(colon + 1).trim();
  if (body !== "") {
    for (const item of body.split(",")) {
      const eq = item.indexOf("=");
      const key = (eq < 0 ? item : item.slice(0, eq)).trim();
      const value = eq < 0 ? "" : item.slice(eq + 1).trim();
      if (key === "")
        throw new WorkloadSpecError(text, "syntax", `empty key in '${item}': write key=value`, kind);
      if (!Object.hasOwn(info.keys, key)) {
        const near = didYouMean(key, known);
        throw new WorkloadSpecError(
          text,
          "unknown-key",
          `unknown key '${key}' for kind '${kind}'${near ? ` (did you mean '${near}'?)` : ""}; keys of ${kind}: ${known.join(", ")}`,
          kind,
          key,
        );
      }
      if (eq < 0 || value === "")
        throw new WorkloadSpecError(
          text,
          "syntax",
          `key '${key}' has no value: write ${key}=<${describeKeyForm(info.keys[key])}>`,
          kind,
          key,
        );
      if (given.has(key))
        throw new WorkloadSpecError(text, "syntax", `key '${key}' is given twice`, kind, key);
      const v = parseKeyValue(info.keys[key], value);
      if (v === null)
        throw new WorkloadSpecError(
          text,
          "bad-value",
          `key '${key}' of kind '${kind}' must be ${describeKeyForm(info.keys[key])}; got '${value}'`,
          kind,
          key,
        );
      given.set(key, v);
    }
  }
  const params: Record<string, number> = {};
  for (const k of known) params[k] = given.get(k) ?? info.keys[k].default;
  const cross = info.check?.(params);
  if (cross)
    throw new WorkloadSpecError(
      text,
      "bad-value",
      `key '${cross.key}' of kind '${kind}' ${cross.problem}; got '${formatKeyValue(info.keys[cross.key], params[cross.key])}'`,
      kind,
      cross.key,
    );
  return Object.freeze({ kind, params: Object.freeze(params), text: formatSpec(kind, params) });
}

function formatSpec(kind: WorkloadKind, params: Readonly<Record<string, number>>): string {
  const keys = WORKLOAD_KINDS[kind].keys;
  return `${kind}:${Object.keys(keys)
    .map((k) => `${k}=${formatKeyValue(keys[k], params[k])}`)
    .join(",")}`;
}

/**
 * A spec given as text or as a parsed WorkloadSpec, checked and normalized. A parsed spec is
 * checked again from its kind and params (so a hand-built or altered object is refused as its
 * text would be).
 */
export function resolveWorkloadSpec(spec: string | WorkloadSpec): WorkloadSpec {
  if (typeof spec === "string") return parseWorkloadSpec(spec);
  if (typeof spec !== "object" || spec === null || typeof (spec as WorkloadSpec).kind !== "string")
    throw new WorkloadSpecError(
      String(spec),
      "syntax",
      "a spec must be a string (kind:key=value,...) or a WorkloadSpec from parseWorkloadSpec",
    );
  const { kind, params } = spec as WorkloadSpec;
  const info = (WORKLOAD_KINDS as Record<string, (typeof WORKLOAD_KINDS)[WorkloadKind]>)[kind];
  if (info === undefined || typeof params !== "object" || params === null) return parseWorkloadSpec(kind);
  const parts: string[] = [];
  for (const [k, v] of Object.entries(params)) {
    const def = info.keys[k];
    parts.push(`${k}=${def !== undefined && typeof v === "number" ? formatKeyValue(def, v) : String(v)}`);
  }
  return parseWorkloadSpec(`${kind}:${parts.join(",")}`);
}

/** The table of every kind's keys (markdown), as the package README shows it. */
export function workloadKindsMarkdown(): string {
  const rows = ["| kind | key | default | form | meaning |", "| --- | --- | --- | --- | --- |"];
  for (const kind of WORKLOAD_KIND_NAMES) {
    const keys = WORKLOAD_KINDS[kind].keys;
    for (const [k, def] of Object.entries(keys))
      rows.push(
        `| ${kind} | \`${k}\` | \`${formatKeyValue(def, def.default)}\` | ${describeKeyForm(def, true)} | ${def.doc} |`,
      );
  }
  return rows.join("\n");
}
