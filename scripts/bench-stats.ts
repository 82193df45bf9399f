/** The benchmarks' shared arithmetic (scripts/bench.ts, bench-workflow.ts, bench-restore.ts). */

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
