import "reflect-metadata";

export * from "./block-directory.js";
export * from "./device-table.js";
export * from "./gpu-driver.js";
export * from "./gpu-stats.js";
export * from "./options.js";
export * from "./plugin.js";
export { default } from "./plugin.js";
export * from "./prefetch.js";
export * from "./pte-encoding.js";
export * from "./residency.js";
