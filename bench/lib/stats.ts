/** Percentiles and summaries of latency samples (ms). */

export interface Summary {
  n: number;
  p50: number | null;
  p99: number | null;
  min: number | null;
  max: number | null;
  mean: number | null;
}

/** Nearest-rank percentile of a list (p in 0..100). */
export function percentile(values: number[], p: number): number | null {
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * s.length);
  return s[Math.min(s.length - 1, Math.max(0, rank - 1))]!;
}

const r3 = (x: number | null): number | null => (x === null ? null : Math.round(x * 1000) / 1000);

export function summarize(values: number[]): Summary {
  if (values.length === 0) return { n: 0, p50: null, p99: null, min: null, max: null, mean: null };
  return {
    n: values.length,
    p50: r3(percentile(values, 50)),
    p99: r3(percentile(values, 99)),
    min: r3(Math.min(...values)),
    max: r3(Math.max(...values)),
    mean: r3(values.reduce((a, b) => a + b, 0) / values.length),
  };
}

/** CLOCK_MONOTONIC now, in ns (process.hrtime is CLOCK_MONOTONIC on Linux, like the C helpers). */
export function monoNs(): bigint {
  return process.hrtime.bigint();
}

export function nsToMs(ns: bigint): number {
  return Number(ns) / 1e6;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function round(x: number | null | undefined, digits = 3): number | null {
  if (x === null || x === undefined || !Number.isFinite(x)) return null;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
