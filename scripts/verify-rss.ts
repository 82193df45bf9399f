/**
 * Runs one `verifyRegistry` in this process and prints a JSON line with its
 * memory and speed, for scripts/verify-memory.ts and the streaming test: the
 * process's peak RSS (the kernel's `maxRSS`), its RSS just before the
 * verification, the highest RSS (and ArrayBuffer bytes) sampled during it,
 * and the bytes the full pulls hashed per second. Loads nothing but the
 * registry client and the verification, so the numbers are theirs.
 *
 * With `collectEachSample` (and node's `--expose-gc`) every sample follows a
 * full garbage collection, so it shows what the process holds rather than
 * what V8 has not collected yet: V8 lets up to about 64 MiB of dead network
 * chunks wait for a collection, as much as a small layer.
 *
 *   tsx scripts/verify-rss.ts '{"registryUrl":"http://127.0.0.1:5000","expected":{...},"sample":"all"}'
 */
import { RegistryClient } from '../functions/commons/registry/client.ts';
import { type ExpectedRegistry, verifyRegistry } from '../functions/commons/registry/verify.ts';

interface Job {
  readonly registryUrl: string;
  readonly expected: ExpectedRegistry;
  /** Images pulled in full: a count, or "all". */
  readonly sample: number | 'all';
  readonly pullConcurrency?: number;
  /** Collect garbage before each sample (needs `--expose-gc`). */
  readonly collectEachSample?: boolean;
}

/** What the child prints (sizes in bytes). */
export interface RssResult {
  readonly ok: boolean;
  readonly problems: string[];
  readonly rssBefore: number;
  /** Highest RSS sampled while verifying. */
  readonly rssSampledPeak: number;
  /** Highest `memoryUsage().arrayBuffers` sampled while verifying (network chunks live there). */
  readonly arrayBuffersSampledPeak: number;
  /** The process's peak RSS over its whole life. */
  readonly maxRss: number;
  readonly seconds: number;
  readonly hashedBytes: number;
  readonly pulledImages: number;
}

const MiB = 1024 ** 2;

function gcOrFail(): () => void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error('collectEachSample needs node --expose-gc');
  return gc;
}

async function main(): Promise<void> {
  const job = JSON.parse(process.argv[2] ?? '') as Job;
  const client = new RegistryClient(job.registryUrl);
  const collect = job.collectEachSample === true ? gcOrFail() : () => {};
  collect();
  const rssBefore = process.memoryUsage.rss();
  let rssSampledPeak = rssBefore;
  let arrayBuffersSampledPeak = 0;
  const sample = () => {
    collect();
    const usage = process.memoryUsage();
    rssSampledPeak = Math.max(rssSampledPeak, usage.rss);
    arrayBuffersSampledPeak = Math.max(arrayBuffersSampledPeak, usage.arrayBuffers);
  };
  const sampler = setInterval(sample, job.collectEachSample === true ? 20 : 5);
  const started = performance.now();
  const report = await verifyRegistry(client, job.expected, {
    sample: job.sample === 'all' ? Number.POSITIVE_INFINITY : job.sample,
    ...(job.pullConcurrency === undefined ? {} : { pullConcurrency: job.pullConcurrency }),
  });
  const seconds = (performance.now() - started) / 1000;
  clearInterval(sampler);
  sample();
  const result: RssResult = {
    ok: report.ok,
    problems: report.problems,
    rssBefore,
    rssSampledPeak,
    arrayBuffersSampledPeak,
    // resourceUsage gives KiB.
    maxRss: process.resourceUsage().maxRSS * 1024,
    seconds,
    hashedBytes: report.blobs.hashedBytes,
    pulledImages: report.pulls.filter((pull) => pull.ok).length,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.stderr.write(
    `verify: ${report.ok ? 'ok' : 'FAILED'}, ${(result.hashedBytes / MiB).toFixed(0)} MiB hashed in ${seconds.toFixed(1)} s, peak RSS ${(result.maxRss / MiB).toFixed(0)} MiB (before: ${(rssBefore / MiB).toFixed(0)} MiB)\n`,
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
