/** A tiny benchmark harness: median wall time of repeated runs, ratios against baselines measured in the same process. */

export interface Measurement {
  name: string;
  /** Median seconds per run. */
  seconds: number;
  /** Items processed per run (PTEs, pages). */
  items: number;
}

/**
 * Median time of one call of `fn`: after warming up for `warmupMs`, samples of `batch` calls each
 * (batch sized so a sample takes at least `sampleMs`) are timed `samples` times.
 */
export function measure(
  name: string,
  items: number,
  fn: () => void,
  samples = 15,
  sampleMs = 20,
  warmupMs = 200,
): Measurement {
  const now = () => Number(process.hrtime.bigint()) / 1e6;
  let t = now();
  let calls = 0;
  while (now() - t < warmupMs || calls < 3) {
    fn();
    calls++;
  }
  const per = (now() - t) / calls;
  const batch = Math.max(1, Math.ceil(sampleMs / Math.max(per, 1e-6)));
  const times: number[] = [];
  for (let s = 0; s < samples; s++) {
    t = now();
    for (let i = 0; i < batch; i++) fn();
    times.push((now() - t) / batch / 1000);
  }
  times.sort((a, b) => a - b);
  return { name, seconds: times[times.length >> 1], items };
}

/** Items per second of a measurement. */
export function rate(m: Measurement): number {
  return m.items / m.seconds;
}

/** Format a rate: "123.4 M/s". */
export function fmtRate(r: number): string {
  if (r >= 1e9) return `${(r / 1e9).toFixed(2)} G/s`;
  if (r >= 1e6) return `${(r / 1e6).toFixed(1)} M/s`;
  return `${(r / 1e3).toFixed(1)} k/s`;
}
