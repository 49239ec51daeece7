import type { WorkloadKind } from "../kind-table.js";
import { churnWorkload } from "./churn.js";
import { forkWorkload } from "./fork.js";
import type { WorkloadGenerator } from "./generator.js";
import { pingpongWorkload } from "./pingpong.js";
import { randomWorkload } from "./random.js";
import { stencilWorkload } from "./stencil.js";
import { oversubWorkload, streamWorkload, thpWorkload } from "./stream.js";

/** The generator of every kind (a Record, so a kind added to the table breaks the build until it has one). */
export const GENERATORS: Readonly<Record<WorkloadKind, WorkloadGenerator>> = {
  stream: streamWorkload,
  random: randomWorkload,
  stencil: stencilWorkload,
  pingpong: pingpongWorkload,
  fork: forkWorkload,
  churn: churnWorkload,
  thp: thpWorkload,
  oversub: oversubWorkload,
};

export type { Params, WorkloadGenerator } from "./generator.js";
