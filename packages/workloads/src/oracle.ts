import { hex } from "@hmmkit/mm";
import type { Region } from "./region.js";

/** Mismatches a report describes (the rest are only counted). */
export const MAX_REPORTED = 16;

/** Who read a page the oracle checked. */
export type ReadAgent = "device" | "cpu" | "child" | "final";

/** A read that did not see what the shadow expected. */
export interface DataMismatch {
  /** Page address, and the same in hex. */
  readonly va: number;
  readonly address: string;
  /** "parent" or "child" (fork). */
  readonly process: "parent" | "child";
  /** Phase index and name (the final sweep is "final"). */
  readonly phase: number;
  readonly phaseName: string;
  readonly agent: ReadAgent;
  /** The page token expected (stampToken of the last stamp written; 0: never written or zeroed). */
  readonly expected: number;
  /** The page hash the read saw. */
  readonly seen: number;
}

/**
 * The data oracle: compares every checked read with the shadow of the writes (Region.shadow) and
 * keeps the counts and the first mismatches.
 */
export class DataOracle {
  checked = 0;
  mismatches = 0;
  readonly first: DataMismatch[] = [];
  phase = 0;
  phaseName = "";

  /** Check that a read of page `page` of `r` by `agent` saw `seen`; false on a mismatch. */
  check(r: Region, page: number, seen: number, agent: ReadAgent, child: boolean): boolean {
    this.checked++;
    const expected = r.shadow[page];
    if (seen === expected) return true;
    this.mismatches++;
    if (this.first.length < MAX_REPORTED) {
      const va = r.va(page);
      this.first.push({
        va,
        address: hex(va),
        process: child ? "child" : "parent",
        phase: this.phase,
        phaseName: this.phaseName,
        agent,
        expected,
        seen,
      });
    }
    return false;
  }
}
