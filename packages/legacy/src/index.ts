import "reflect-metadata";

export * from "./attach.js";
export { cancelErrno, SHARED_MIRROR_CONFIG_KEY, SharedMirrorClient } from "./client.js";
export * from "./contract.js";
export * from "./errors.js";
export * from "./etype.js";
export * from "./hmm-pt.js";
export * from "./hmm-pt-iter.js";
export * from "./hmm-pte.js";
export { HmmMirror } from "./mirror.js";
export { MAX_FAULT_RETRIES } from "./mirror-fault.js";
export * from "./options.js";
export * from "./shared-mirror.js";
export * from "./stats.js";
export * from "./tokens.js";
export type { Mm, Vma } from "./types.js";
