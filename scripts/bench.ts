/**
 * `npm run bench`: regvault's copy engine against the floor (pre-listed
 * CopyObject at the same concurrency), rclone and aws s3 sync, on the same
 * sandbox S3 server and the same registry-shaped data, in one run.
 *
 *   npm run bench -- [--objects 20000] [--concurrency 32] [--big-mib 1024] [--json] [--no-write]
 *
 * Prints ratios, S3 requests per object (from the server's own counter),
 * changed objects found, and regvault's peak RSS; writes docs/benchmarks.md.
 * `npm run bench -- scale --objects N` runs the scale benchmark instead
 * (bench-scale.ts). The runs are in bench-runs.ts, in the order this makes
 * them; the peers each runs in bench-peers.ts, the data in bench-data.ts, the results and
 * the report in bench-report.ts, the headline backup in bench-workflow.ts.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { z } from 'zod';
import { createS3Client } from '../functions/commons/s3/client.ts';
import { type S3ServerHandle, startS3Server } from '../sandbox/s3/index.ts';
import { floorRunner } from './bench-peers.ts';
import { benchResults, summaryLines, writeReport } from './bench-report.ts';
import {
  type BenchContext,
  changeRuns,
  engineRuns,
  sourceData,
  streamRuns,
  syncRuns,
  workflowRuns,
} from './bench-runs.ts';

const optionsSchema = z.object({
  objects: z.coerce.number().int().min(100),
  rounds: z.coerce.number().int().min(1).max(31),
  streamRounds: z.coerce.number().int().min(1).max(31),
  workflowRounds: z.coerce.number().int().min(1).max(31),
  concurrency: z.coerce.number().int().min(1).max(256),
  bigMib: z.coerce.number().int().min(0),
  json: z.boolean(),
  write: z.boolean(),
  output: z.string(),
});
type BenchOptions = z.infer<typeof optionsSchema>;

/** The command line, parsed and checked. */
function parseOptions(): BenchOptions {
  const program = new Command()
    .option('--objects <n>', 'objects in the data set', '20000')
    .option('--concurrency <n>', 'copies in flight, the same for every peer', '32')
    .option(
      '--rounds <n>',
      "rounds of (a) with (b), in alternating order; the median of the rounds' ratios counts",
      '15',
    )
    .option(
      '--stream-rounds <n>',
      "rounds of (h) regvault with rclone, in alternating order; the median of the rounds' ratios counts",
      '7',
    )
    .option(
      '--workflow-rounds <n>',
      'rounds of the floor with a backup through the CLI and the workflow (the headline), in alternating order',
      '5',
    )
    .option('--big-mib <n>', 'size of the large object in the cross-endpoint run (MiB)', '1024')
    .option('--json', 'end with one JSON line of results', false)
    .option('--no-write', 'do not write docs/benchmarks.md')
    .option(
      '--output <path>',
      'where to write the report',
      join(import.meta.dirname, '..', 'docs', 'benchmarks.md'),
    );
  program.parse();
  return optionsSchema.parse(program.opts());
}

/** A client for a sandbox server with sockets for every copy in flight. */
const clientOf = (server: S3ServerHandle, concurrency: number) =>
  createS3Client(
    { endpoint: server.endpoint, region: server.region, forcePathStyle: true },
    server.credentials,
    { maxSockets: concurrency + 8 },
  );

async function main(): Promise<void> {
  const options = parseOptions();
  const C = options.concurrency;
  // With --json, stdout carries the results line alone.
  const log = (line: string) => (options.json ? process.stderr : process.stdout).write(`${line}\n`);
  const dir = await mkdtemp(join(tmpdir(), 'regvault-bench-'));
  const [server, remote] = await Promise.all([
    startS3Server({ name: 'bench-s3' }),
    startS3Server({ name: 'bench-s3-remote' }),
  ]);
  const client = clientOf(server, C);
  const remoteClient = clientOf(remote, C);
  const ctx: BenchContext = {
    server,
    remote,
    client,
    remoteClient,
    concurrency: C,
    dir,
    source: 'bench-src',
    log,
  };
  try {
    const objects = await sourceData(ctx, options.objects);
    const n = objects.length;
    const runFloor = floorRunner(server, client, ctx.source, C);
    const workflow = await workflowRuns(ctx, options.workflowRounds, runFloor, n);
    const engine = await engineRuns(ctx, options.rounds, runFloor, n);
    const peers = await syncRuns(ctx);
    const change = await changeRuns(ctx, objects);
    const stream = await streamRuns(ctx, objects, options.bigMib, options.streamRounds);
    const results = benchResults({
      objects: n,
      concurrency: C,
      bigMib: options.bigMib,
      workflow,
      engine,
      peers,
      change,
      stream,
    });
    for (const line of summaryLines(results)) log(line);
    if (options.write) await writeReport(options.output, results);
    if (options.json) process.stdout.write(`${JSON.stringify(results)}\n`);
  } finally {
    client.destroy();
    remoteClient.destroy();
    await Promise.all([server.stop(), remote.stop()]);
    await rm(dir, { recursive: true, force: true });
  }
}

const [, , first, ...rest] = process.argv;
const run =
  first === 'scale' ? import('./bench-scale.ts').then((scale) => scale.benchScale(rest)) : main();
run.catch((err: unknown) => {
  process.stderr.write(
    `bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
});
