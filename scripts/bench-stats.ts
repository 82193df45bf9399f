/** The benchmarks' shared arithmetic (scripts/bench.ts and its parts, bench-workflow.ts, bench-restore.ts). */

/** The middle value (the mean of the two middle ones for an even count). */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] ?? 0)
    : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

/** The sum of requests counted by operation. */
export const total = (counts: Record<string, number>) =>
  Object.values(counts).reduce((a, b) => a + b, 0);

/** Each round's `a / b`. */
export function roundRatios(a: readonly number[], b: readonly number[]): number[] {
  return a.map((value, i) => value / (b[i] ?? Number.NaN));
}

/**
 * The paired ratio of two peers that ran in the same rounds: the median of
 * each round's `a / b`. The two runs of a round are seconds apart, so a slow
 * stretch of the machine (it lasts minutes here) slows both and cancels out;
 * a ratio of medians would take each median from other rounds.
 */
export function pairedRatio(a: readonly number[], b: readonly number[]): number {
  return median(roundRatios(a, b));
}
