/**
 * Shared pieces of the fuzz campaigns (fast-check, fixed seeds): the campaign size and the
 * hostile acts a HostileFakeDriver can be armed with. Campaigns are CI-sized by default (a few
 * seconds each); HMMKIT_FUZZ=long runs each one 50 times longer.
 */
import { MmError, ZERO_PFN } from "@hmmkit/mm";
import fc from "fast-check";
import type { HmmCore } from "../src/index.js";
import type { HostileAct } from "./fakes.js";

/** Runs of a campaign: `ci` by default, 50x with HMMKIT_FUZZ=long. */
export function fuzzRuns(ci: number): number {
  return process.env.HMMKIT_FUZZ === "long" ? ci * 50 : ci;
}

/** The test timeout of a campaign (ms): vitest's default, or 30 minutes with HMMKIT_FUZZ=long. */
export const FUZZ_TIMEOUT = process.env.HMMKIT_FUZZ === "long" ? 30 * 60_000 : 60_000;

/** True for the errors the core and mm may raise: anything else escaping is a bug. */
export function isClearError(e: unknown): boolean {
  return e instanceof MmError && typeof e.message === "string" && e.message.length > 0;
}

/** What a hostile act may reach. */
export interface HostileWorld {
  core: HmmCore;
  /** Re-entries: an mm syscall, a faulting CPU access, a core operation on another device. */
  munmap(): void;
  cpuFault(): void;
  otherDeviceFault(): void;
}

const unprintable = (): unknown[] => {
  const badMessage = new Error("hidden");
  Object.defineProperty(badMessage, "message", {
    get() {
      throw new Error("message getter");
    },
  });
  const proxy = new Proxy(
    {},
    new Proxy(
      {},
      {
        get: () => () => {
          throw new Error("trap");
        },
      },
    ),
  );
  return [Object.create(null), badMessage, Symbol("fuzz"), proxy];
};

/** The kinds of hostile acts, by name (the campaign reports how many of each it tried). */
export const ACT_KINDS = [
  "throw-error",
  "throw-string",
  "throw-null-proto",
  "throw-bad-message",
  "throw-symbol",
  "throw-proxy",
  "stack-overflow",
  "return-rejected-promise",
  "return-thenable",
  "reenter-munmap",
  "reenter-munmap-swallowed",
  "reenter-cpu-fault",
  "reenter-core",
  "dma-zero-page",
  "dma-out-of-range",
  "benign-return-value",
] as const;
export type ActKind = (typeof ACT_KINDS)[number];

/** The act of kind `kind` in `world`. */
export function hostileAct(kind: ActKind, world: () => HostileWorld): HostileAct {
  const swallow = (f: () => void) => {
    try {
      f();
    } catch {
      // the driver carries on
    }
  };
  switch (kind) {
    case "throw-error":
      return () => {
        throw new Error("fuzz failure");
      };
    case "throw-string":
      return () => {
        throw "fuzz string";
      };
    case "throw-null-proto":
    case "throw-bad-message":
    case "throw-symbol":
    case "throw-proxy": {
      const i = ["throw-null-proto", "throw-bad-message", "throw-symbol", "throw-proxy"].indexOf(kind);
      return () => {
        throw unprintable()[i];
      };
    }
    case "stack-overflow":
      return () => {
        const f = (n: number): number => f(n + 1) + 1;
        return f(0);
      };
    case "return-rejected-promise":
      return () => Promise.reject(new Error("fuzz async"));
    case "return-thenable":
      // biome-ignore lint/suspicious/noThenProperty: a hand-made thenable is the point
      return () => ({ then: (_ok: unknown, fail: (e: unknown) => void) => fail(new Error("late")) });
    case "reenter-munmap":
      return () => world().munmap();
    case "reenter-munmap-swallowed":
      return () => swallow(() => world().munmap());
    case "reenter-cpu-fault":
      return () => swallow(() => world().cpuFault());
    case "reenter-core":
      return () => swallow(() => world().otherDeviceFault());
    case "dma-zero-page":
      return (drv) => swallow(() => drv.ctx.dma.deviceToSystem(0, ZERO_PFN));
    case "dma-out-of-range":
      return (drv) => swallow(() => drv.ctx.dma.zeroDevicePage(drv.ctx.memory.npages + 7));
    case "benign-return-value":
      return () => 7;
  }
}

/** A hostile plan: which callback, which act, after how many clean calls. */
export const hostilePlan = fc.record({
  cb: fc.constantFrom(
    "mirrorPte",
    "mirrorPmd",
    "mirrorPtes",
    "invalidate",
    "copyToDevice",
    "copyFromDevice",
    "translations",
    "release",
  ),
  kind: fc.constantFrom(...ACT_KINDS),
  after: fc.nat({ max: 3 }),
});
