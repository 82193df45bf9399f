/**
 * What scripts/bench.ts reports: the results of one run (its `--json` line),
 * the summary lines it ends with, and its entry in docs/benchmarks.md (the
 * newest first, above the runs before it).
 */
import { readFile, writeFile } from 'node:fs/promises';
import type { ChangeRuns, EngineRuns, StreamRuns } from './bench-runs.ts';
import { median, pairedRatio, roundRatios, total } from './bench-stats.ts';
import type { WorkflowBench } from './bench-workflow.ts';

export interface BenchResults {
  date: string;
  objects: number;
  concurrency: number;
  /** The headline: `regvault backup --source-bucket` through the compiled CLI and the workflow. */
  workflow: WorkflowBench;
  /** Median of the rounds' workflow/floor ratios. */
  workflowFloorRatio: number;
  workflowRcloneRatio: number;
  workflowAwsRatio: number;
  floorSeconds: number;
  /** The same pre-listed copies through the SDK's S3Client.send. */
  floorSdkSeconds: number;
  regvaultSeconds: number;
  rcloneSeconds: number;
  awsSeconds: number;
  /** Median of the rounds' regvault/floor ratios (pairedRatio). */
  floorRatio: number;
  /** The median regvault round over the median floor round, for comparison with runs before the paired ratio. */
  floorRatioOfMedians: number;
  floorRounds: number[];
  regvaultRounds: number[];
  rcloneRatio: number;
  awsRatio: number;
  requestsPerObjectFull: number;
  requestsFull: Record<string, number>;
  incrementalSeconds: number;
  /** Requests of the 1% run, by operation (LIST pages and the copies of changed objects only). */
  requestsIncremental: Record<string, number>;
  rcloneIncrementalSeconds: number;
  incrementalRcloneRatio: number;
  changedFound: number;
  changedExpected: number;
  mismatchedAfterIncremental: number;
  requestsPerObjectUnchanged: number;
  unchangedNonListRequests: number;
  streamSeconds: number;
  streamRcloneSeconds: number;
  /** Median of the rounds' regvault/rclone streaming ratios. */
  streamRcloneRatio: number;
  streamRcloneRatioOfMedians: number;
  streamPeakRssMiB: number;
  streamRounds: number[];
  streamRcloneRounds: number[];
  streamBigMiB: number;
  fullPeakRssMiB: number;
}

/** The results of one run, from what its runs measured. */
export function benchResults(run: {
  objects: number;
  concurrency: number;
  bigMib: number;
  workflow: WorkflowBench;
  engine: EngineRuns;
  peers: { rclone: number; aws: number };
  change: ChangeRuns;
  stream: StreamRuns;
}): BenchResults {
  const { objects: n, workflow, engine, peers, change, stream } = run;
  const streamSeconds = median(stream.streamRuns);
  const streamRclone = median(stream.streamRcloneRuns);
  return {
    date: new Date().toISOString().slice(0, 10),
    objects: n,
    concurrency: run.concurrency,
    workflow,
    workflowFloorRatio: pairedRatio(workflow.rounds, workflow.floorRounds),
    // rclone ran in the same rounds as the workflow: the paired ratio, as for the floor.
    workflowRcloneRatio: pairedRatio(workflow.rounds, workflow.rcloneRounds),
    workflowAwsRatio: median(workflow.rounds) / peers.aws,
    floorSeconds: engine.floorSeconds,
    floorRounds: engine.floorRuns,
    regvaultRounds: engine.fullRuns,
    floorSdkSeconds: engine.floorSdkSeconds,
    regvaultSeconds: engine.fullSeconds,
    rcloneSeconds: peers.rclone,
    awsSeconds: peers.aws,
    floorRatio: pairedRatio(engine.fullRuns, engine.floorRuns),
    floorRatioOfMedians: engine.fullSeconds / engine.floorSeconds,
    rcloneRatio: engine.fullSeconds / peers.rclone,
    awsRatio: engine.fullSeconds / peers.aws,
    requestsPerObjectFull: total(engine.fullRequests) / n,
    requestsFull: engine.fullRequests,
    incrementalSeconds: change.incremental.seconds,
    requestsIncremental: change.incrementalRequests,
    rcloneIncrementalSeconds: change.rcloneIncremental,
    incrementalRcloneRatio: change.incremental.seconds / change.rcloneIncremental,
    changedFound: change.incremental.totals.copied,
    changedExpected: change.changed.size,
    mismatchedAfterIncremental: change.mismatched,
    requestsPerObjectUnchanged: total(change.unchangedRequests) / change.sourceObjects,
    unchangedNonListRequests: change.unchangedNonList,
    streamSeconds,
    streamRcloneSeconds: streamRclone,
    streamRcloneRatio: pairedRatio(stream.streamRuns, stream.streamRcloneRuns),
    streamRcloneRatioOfMedians: streamSeconds / streamRclone,
    streamPeakRssMiB: stream.streamPeakRssMiB,
    streamRounds: stream.streamRuns,
    streamRcloneRounds: stream.streamRcloneRuns,
    streamBigMiB: run.bigMib,
    fullPeakRssMiB: engine.full.maxRssMiB,
  };
}

/** The lines a run ends with: the headline, then the engine's ratios. */
export function summaryLines(results: BenchResults): string[] {
  const workflow = results.workflow;
  return [
    '',
    `HEADLINE backup through the CLI and the workflow: ${results.workflowFloorRatio.toFixed(3)} of the floor (median of the rounds' ratios), ${results.workflowRcloneRatio.toFixed(3)} of rclone, ${results.workflowAwsRatio.toFixed(3)} of aws s3 sync; ${workflow.requestsPerObjectFull.toFixed(4)} req/object full, ${workflow.requestsPerObjectUnchanged.toFixed(4)} unchanged; CLI start ${workflow.cliStartupMs.toFixed(0)} ms`,
    `engine only: regvault/floor ${results.floorRatio.toFixed(3)} (median of the rounds' ratios; ratio of medians ${results.floorRatioOfMedians.toFixed(3)})  regvault/rclone ${results.rcloneRatio.toFixed(3)}  regvault/aws ${results.awsRatio.toFixed(3)}`,
    `requests/object: full ${results.requestsPerObjectFull.toFixed(4)}, unchanged ${results.requestsPerObjectUnchanged.toFixed(4)}`,
    `changed found ${results.changedFound}/${results.changedExpected}; stream regvault/rclone ${results.streamRcloneRatio.toFixed(3)}, peak RSS ${results.streamPeakRssMiB.toFixed(0)} MiB`,
  ];
}

/** Writes the run's entry into the report at `path`, above the runs already there. */
export async function writeReport(path: string, r: BenchResults): Promise<void> {
  const f = (v: unknown, digits = 3) => (typeof v === 'number' ? v.toFixed(digits) : String(v));
  const previous = await readFile(path, 'utf8').catch(() => '');
  const marker = '<!-- runs below: newest first -->';
  const head = `# Benchmarks\n\nMade by \`npm run bench\` (scripts/bench.ts) on the sandbox S3 server (fauxqs, one process on 2 cores), every peer on the same server and data in one run. Ratios below 1 mean regvault is faster. How a backup and a restore grow with the registry (100,000 to a million objects, \`npm run bench -- scale\`) and the AWS model: [scale.md](scale.md).\n\nReading them: compare ratios within one run, not seconds across runs; this machine kind's speed varies by a third from run to run (see the SDK floor line). The floor (a) and regvault (b) both run in a child process started the same way, alternating for several rounds, and their medians are compared, as are regvault's and rclone's streaming runs (h) (runs from 2026-12-01 on; earlier runs are single rounds, and the first 2026-12-01 run has a single streaming round). From 2026-12-01 the sandbox server lists from a sorted index in S3's byte order (sandbox/s3/listing.ts) instead of fauxqs's sort of the whole bucket per page, so LISTs cost what they cost on an indexed store; every peer lists through it. (a') is the same copies through the AWS SDK's \`S3Client.send\`, which regvault's hot path (functions/commons/s3/fast-copy.ts) replaces. From the fourth 2026-12-01 run on, link phases roll up by delimiter the directory they do not copy (36 LISTs instead of 57) and the copy queue serves link and blob copies in turns (docs/consistency.md); the default is 5 rounds, because medians of 3 still moved by 0.1 between runs. From the eighth 2026-12-01 run on (its (b) row lists the rounds' ratios), the default is 7 rounds, the two peers of a round swap order every round, and the headline ratios are the median of the rounds' ratios (each round's two runs are seconds apart, so a slow stretch of the machine slows both); the ratio of medians is printed beside it. From the twelfth 2026-12-01 run on, (a) with (b) runs 15 rounds and (h) 7 (\`--rounds\`, \`--stream-rounds\`): the 28 round ratios of the four 7-round runs before it (median 1.07) showed that a median of 7 still lands above 1.15 in about one run in six by chance alone, and one of 15 in about one in thirteen. From 2026-12-03 on, rclone also runs in every round of the headline (w), before the pair in odd rounds and after it in even ones, and (w)'s ratio to rclone is the median of those rounds' ratios (it was the median of (w) over the single run (c), which a slow or quick stretch of the machine could move by half). Older runs below predate changes named in the git log (the lean request path, the fix to gap-shard listings).\n\n${marker}\n`;
  const w = r.workflow;
  const entry = [
    `## ${r.date}: ${r.objects} objects, concurrency ${r.concurrency}`,
    '',
    '| run | seconds | ratio |',
    '| --- | --- | --- |',
    `| (w) **regvault backup through the CLI and the workflow** (spawn to exit) | ${f(median(w.rounds), 2)} | **${f(r.workflowFloorRatio)} of floor** (median of the rounds' ratios; rounds: ${w.rounds.map((v) => f(v, 2)).join(', ')}; their floors: ${w.floorRounds.map((v) => f(v, 2)).join(', ')}), ${f(r.workflowRcloneRatio)} of rclone (median of the rounds' ratios; its rounds: ${w.rcloneRounds.map((v) => f(v, 2)).join(', ')}), ${f(r.workflowAwsRatio)} of aws s3 sync; ${f(w.requestsPerObjectFull, 4)} req/object full ${JSON.stringify(w.requestsFull)}, ${f(w.requestsPerObjectUnchanged, 4)} unchanged (${f(w.unchangedSeconds, 2)} s) ${JSON.stringify(w.requestsUnchanged)}; CLI start ${f(w.cliStartupMs, 0)} ms; progress every ${f(w.progressMaxGapSeconds, 2)} s at most (${w.progressLines} lines) |`,
    `| (a) floor: pre-listed CopyObject, regvault's copy path | ${f(r.floorSeconds, 2)} | 1 (rounds: ${r.floorRounds.map((v) => f(v, 2)).join(', ')}) |`,
    `| (a') the same copies through the SDK's S3Client.send | ${f(r.floorSdkSeconds, 2)} | ${f(r.floorSdkSeconds / r.floorSeconds)} of floor |`,
    `| (b) regvault full copy | ${f(r.regvaultSeconds, 2)} | ${f(r.floorRatio)} of floor, the median of the rounds' ratios ${roundRatios(
      r.regvaultRounds,
      r.floorRounds,
    )
      .map((v) => f(v))
      .join(
        ', ',
      )}; ratio of medians ${f(r.floorRatioOfMedians)} (rounds: ${r.regvaultRounds.map((v) => f(v, 2)).join(', ')}) |`,
    `| (c) rclone sync (server-side) | ${f(r.rcloneSeconds, 2)} | regvault/rclone ${f(r.rcloneRatio)} |`,
    `| (d) aws s3 sync | ${f(r.awsSeconds, 2)} | regvault/aws ${f(r.awsRatio)} |`,
    `| (e) regvault, 1% changed | ${f(r.incrementalSeconds, 2)} | found ${r.changedFound} of ${r.changedExpected} changed |`,
    `| (f) rclone, 1% changed | ${f(r.rcloneIncrementalSeconds, 2)} | regvault/rclone ${f(r.incrementalRcloneRatio)} |`,
    `| (g) regvault, nothing changed | - | ${f(r.requestsPerObjectUnchanged, 4)} requests/object, ${r.unchangedNonListRequests} not LIST |`,
    `| (h) stream across endpoints (${r.streamBigMiB} MiB object) | ${f(r.streamSeconds, 2)} | regvault/rclone ${f(r.streamRcloneRatio)} (ratio of medians ${f(r.streamRcloneRatioOfMedians)}), peak RSS ${f(r.streamPeakRssMiB, 0)} MiB (rounds: regvault ${r.streamRounds.map((v) => f(v, 2)).join(', ')}; rclone ${r.streamRcloneRounds.map((v) => f(v, 2)).join(', ')}) |`,
    '',
    `Full copy: ${f(r.requestsPerObjectFull, 4)} S3 requests per object (${JSON.stringify(r.requestsFull)}).`,
    '',
  ].join('\n');
  const older = previous.includes(marker)
    ? previous.slice(previous.indexOf(marker) + marker.length + 1)
    : '';
  await writeFile(path, `${head}\n${entry}\n${older}`);
}
