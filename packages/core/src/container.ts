import "reflect-metadata";
import { Machine, type MachineConfig } from "@hmmkit/mm";
import { type DependencyContainer, container as globalContainer } from "tsyringe";
import { CostModel, type CostProfile } from "./cost-model.js";
import { DEFAULT_HMM_CONFIG, type HmmConfig, HmmCore } from "./hmm-core.js";
import { costOptionsSchema, createHmmOptionsSchema, hmmConfigSchema, parseOptions } from "./options.js";
import { HmmStats } from "./stats.js";
import { TOKENS } from "./tokens.js";

/** Options of {@link createHmm}. */
export interface CreateHmmOptions {
  /** An existing machine, or the config of a new one. */
  machine?: Machine | Partial<MachineConfig>;
  /** Core settings. */
  config?: Partial<HmmConfig>;
  /** Cost profile and constant overrides. */
  cost?: { profile?: CostProfile; overrides?: Partial<Record<string, number>> };
  /** Parent container (default: a fresh child of tsyringe's global container, which is never modified). */
  parent?: DependencyContainer;
}

/** A machine with an HMM core, and the container that built them. */
export interface HmmSystem {
  readonly container: DependencyContainer;
  readonly machine: Machine;
  readonly core: HmmCore;
  readonly stats: HmmStats;
  readonly cost: CostModel;
}

/**
 * Build a root container with the core services registered under TOKENS (machine, stats, cost
 * model, config, the core itself) and resolve the core. Each call gets its own container; devices
 * get child containers of it. Every options object is validated first (strict: an unknown key or
 * a value of the wrong form is an HmmError BAD_CONFIG naming the key); `machine` options are
 * validated by Machine.
 */
export function createHmm(options: CreateHmmOptions = {}): HmmSystem {
  parseOptions(createHmmOptionsSchema, options, "createHmm options");
  const own = parseOptions(hmmConfigSchema, options.config ?? {}, "createHmm options 'config'");
  const costOptions = parseOptions(costOptionsSchema, options.cost ?? {}, "createHmm options 'cost'");
  const config: HmmConfig = { ...DEFAULT_HMM_CONFIG, ...own };
  // The machine's own options are validated by Machine.
  const machine = options.machine instanceof Machine ? options.machine : new Machine(options.machine ?? {});
  const cost = new CostModel(costOptions.profile as CostProfile | undefined, costOptions.overrides as never);
  const container = (options.parent ?? globalContainer).createChildContainer();
  const stats = new HmmStats();
  container.register(TOKENS.Machine, { useValue: machine });
  container.register(TOKENS.Stats, { useValue: stats });
  container.register(TOKENS.CostModel, { useValue: cost });
  container.register(TOKENS.Config, { useValue: config });
  container.register(TOKENS.Container, { useValue: container });
  container.registerSingleton(TOKENS.HmmCore, HmmCore);
  const core = container.resolve<HmmCore>(TOKENS.HmmCore);
  return { container, machine, core, stats, cost };
}
