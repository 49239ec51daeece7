import "reflect-metadata";

export * from "./completions.js";
export * from "./driver.js";
export * from "./fault-grouping.js";
export * from "./options.js";
export { plugin as default, plugin } from "./plugin.js";
export * from "./tlb.js";
