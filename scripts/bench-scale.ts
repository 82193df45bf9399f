/**
 * `npm run bench -- scale --objects N`: how a backup and a restore grow with
 * the registry (issue 17, item 4). On one sandbox S3 server it fills a
 * bucket with a registry of N objects inside the server (no HTTP per
 * object: sandbox/s3/registry-fill.ts), then runs, as users run them, the
 * compiled CLI's `backup --source-bucket` (the backup state machine through
 * the local runner, the step table's handlers, the copy workers on the local
 * queue), the same backup again with nothing changed, and `restore
 * --no-switch` into a fresh bucket.
 *
 *   npm run bench -- scale [--objects 100000] [--concurrency 32] [--heap-mib 512] [--json]
 *
 * Each CLI run is a child Node process whose V8 heap is capped at
 * --heap-mib (0: Node's default); its resident set is read from /proc
 * every 100 ms and charged to the workflow step running then (the step
 * names come from the CLI's `--json` state lines), so a step's peak is the
 * largest resident set seen while it ran. A run that the cap ends is
 * reported with the step it died in, and the same run is made again
 * without the cap so the growth curve still has its figures (a run that
 * fails for another reason is reported as it is, not run again). Requests come
 * from the server's own counters; the server's resident set is read the
 * same way. Prints one JSON object (with --json, alone on stdout).
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { Command } from 'commander';
import { z } from 'zod';
import { createS3Client } from '../functions/commons/s3/client.ts';
import { type S3ServerHandle, startS3Server } from '../sandbox/s3/index.ts';
import { total } from './bench-stats.ts';
import { buildCli, cliVaultEnv, eachLine, requestsOf } from './bench-workflow.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const cli = `${root}dist/regvault.mjs`;
const MiB = 1024 * 1024;

const optionsSchema = z.object({
  objects: z.coerce.number().int().min(100),
  concurrency: z.coerce.number().int().min(1).max(256),
  heapMib: z.coerce.number().int().min(0),
  serverHeapMib: z.coerce.number().int().min(256),
  seed: z.coerce.number().int(),
  restore: z.boolean(),
  json: z.boolean(),
});
type ScaleOptions = z.infer<typeof optionsSchema>;

function parseOptions(argv: readonly string[]): ScaleOptions {
  const program = new Command('bench scale')
    .option('--objects <n>', 'objects in the registry bucket', '100000')
    .option('--concurrency <n>', 'copies in flight in the CLI', '32')
    .option('--heap-mib <n>', "the CLI's V8 heap cap in MiB (0: Node's default)", '512')
    .option(
      '--server-heap-mib <n>',
      "the sandbox S3 server's V8 heap cap in MiB (it holds the source, the vault and the restore)",
      '12288',
    )
    .option('--seed <n>', 'changes every digest of the registry', '1')
    .option('--no-restore', 'stop after the unchanged re-run')
    .option('--json', 'print the results alone on stdout', false);
  program.parse(argv, { from: 'user' });
  return optionsSchema.parse(program.opts());
}

/** Resident set now and at its peak (MiB) of a live process, from /proc. */
export function residentMiB(pid: number): { now: number; peak: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kib = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
    return { now: kib('VmRSS') / 1024, peak: kib('VmHWM') / 1024 };
  } catch {
    return undefined;
  }
}

/** One workflow step of a CLI run: when it began (s from spawn), how long it ran, its peak resident set. */
export interface StepFigures {
  readonly state: string;
  readonly startSeconds: number;
  seconds: number;
  peakRssMiB: number;
}

export interface CliRun {
  readonly command: string;
  readonly heapMiB: number;
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly ok: boolean;
  /** V8 ended the process at its heap limit. */
  readonly outOfMemory: boolean;
  readonly seconds: number;
  /** The largest resident set (VmHWM) seen, sampled every 100 ms. */
  readonly peakRssMiB: number;
  readonly steps: StepFigures[];
  /** The step running when the process ended; where it died if it failed. */
  readonly lastStep: string | undefined;
  readonly result: Record<string, unknown> | undefined;
  readonly requests: Record<string, number>;
  readonly requestsPerObject: number;
  readonly objectsPerSecond: number;
  readonly serverRssMiB: number;
  /** The end of stderr when the run failed (V8's heap-limit report, the CLI's error). */
  readonly failure?: string;
}

/**
 * Runs the compiled CLI with `args` and `--json`, its heap capped at
 * `heapMiB` (0: not capped): wall time, each step's time and peak resident
 * set, the result line, and the S3 requests it made.
 */
async function runCli(
  server: S3ServerHandle,
  vault: string,
  args: readonly string[],
  heapMiB: number,
  objects: number,
): Promise<CliRun> {
  const started = performance.now();
  const since = () => (performance.now() - started) / 1000;
  const steps: StepFigures[] = [];
  let result: Record<string, unknown> | undefined;
  let errors = '';
  let peakRssMiB = 0;
  let exitCode: number | null = null;
  let signal: string | null = null;
  let seconds = 0;
  const requests = await requestsOf(server, async () => {
    const child = spawn(
      process.execPath,
      [...(heapMiB > 0 ? [`--max-old-space-size=${heapMiB}`] : []), cli, ...args, '--json'],
      { cwd: root, env: cliVaultEnv(server, vault), stdio: ['ignore', 'pipe', 'pipe'] },
    );
    eachLine(child.stdout, (line) => {
      if (!line.startsWith('{')) return;
      const event = JSON.parse(line) as Record<string, unknown>;
      if (event['event'] === 'state' && typeof event['state'] === 'string') {
        const at = since();
        const previous = steps.at(-1);
        if (previous !== undefined) previous.seconds = at - previous.startSeconds;
        steps.push({ state: event['state'], startSeconds: at, seconds: 0, peakRssMiB: 0 });
      } else if (event['event'] === 'result') result = event;
    });
    child.stderr.on('data', (chunk: Buffer) => {
      errors = (errors + chunk.toString()).slice(-8000);
    });
    const sampler = setInterval(() => {
      const rss = child.pid === undefined ? undefined : residentMiB(child.pid);
      if (rss === undefined) return;
      peakRssMiB = Math.max(peakRssMiB, rss.peak);
      const step = steps.at(-1);
      if (step !== undefined) step.peakRssMiB = Math.max(step.peakRssMiB, rss.now);
    }, 100);
    [exitCode, signal] = await new Promise<[number | null, string | null]>((resolve) =>
      child.once('exit', (code, sig) => resolve([code, sig])),
    );
    seconds = since();
    clearInterval(sampler);
  });
  const last = steps.at(-1);
  if (last !== undefined) last.seconds = seconds - last.startSeconds;
  const ok = exitCode === 0 && result?.['ok'] === true;
  return {
    command: args[0] ?? '',
    heapMiB,
    exitCode,
    signal,
    ok,
    outOfMemory: /heap limit|heap out of memory/i.test(errors),
    seconds,
    peakRssMiB,
    steps: steps.map((s) => ({
      ...s,
      startSeconds: round(s.startSeconds),
      seconds: round(s.seconds),
      peakRssMiB: Math.round(s.peakRssMiB),
    })),
    lastStep: last?.state,
    result,
    requests,
    requestsPerObject: round(total(requests) / objects, 4),
    objectsPerSecond: Math.round(objects / seconds),
    serverRssMiB: Math.round(residentMiB(server.process.child.pid ?? 0)?.now ?? 0),
    ...(ok ? {} : { failure: errors.slice(-3000) }),
  };
}

const round = (value: number, digits = 2) => Number(value.toFixed(digits));

/**
 * A CLI run under the heap cap and, when the cap ended it, the same run
 * without a cap (`run` makes its own fresh bucket when it needs one), so
 * both the wall and the figures are on record.
 */
async function cappedThenUncapped(
  options: ScaleOptions,
  run: (heapMiB: number) => Promise<CliRun>,
  log: (line: string) => void,
): Promise<{ capped: CliRun; uncapped?: CliRun }> {
  const capped = await run(options.heapMib);
  log(describe(capped));
  if (!capped.outOfMemory) return { capped };
  log(`${capped.command} ran out of its ${options.heapMib} MiB heap: again without a cap`);
  const uncapped = await run(0);
  log(describe(uncapped));
  return { capped, uncapped };
}

function describe(run: CliRun): string {
  const steps = run.steps
    .map((s) => `${s.state} ${s.seconds.toFixed(1)} s ${s.peakRssMiB} MiB`)
    .join(', ');
  return `${run.command} (heap ${run.heapMiB === 0 ? 'uncapped' : `${run.heapMiB} MiB`}): ${run.ok ? 'ok' : `FAILED in ${run.lastStep} (exit ${run.exitCode ?? run.signal}${run.outOfMemory ? ', out of heap' : ''})`} ${run.seconds.toFixed(1)} s, ${run.objectsPerSecond} objects/s, ${run.requestsPerObject} requests/object, peak RSS ${Math.round(run.peakRssMiB)} MiB, server ${run.serverRssMiB} MiB; ${steps}`;
}

/** Runs the scale benchmark with the arguments after `scale`. */
export async function benchScale(argv: readonly string[]): Promise<void> {
  const options = parseOptions(argv);
  const log = (line: string) => (options.json ? process.stderr : process.stdout).write(`${line}\n`);
  await buildCli();
  const server = await startS3Server({
    name: 'bench-scale-s3',
    // The restore's copies are checked by the checksums S3 computes, as on AWS.
    computeChecksums: true,
    heapMiB: options.serverHeapMib,
  });
  const client = createS3Client(
    { endpoint: server.endpoint, region: server.region, forcePathStyle: true },
    server.credentials,
  );
  const source = 'scale-src';
  let buckets = 0;
  const freshBucket = async (kind: string) => {
    const name = `scale-${kind}-${++buckets}`;
    await client.send(new CreateBucketCommand({ Bucket: name }));
    return name;
  };
  try {
    const serverStart = residentMiB(server.process.child.pid ?? 0)?.now ?? 0;
    const fill = await server.fillRegistry(source, options.objects, options.seed);
    const serverFilled = residentMiB(server.process.child.pid ?? 0)?.now ?? 0;
    log(
      `filled ${fill.objects} objects (${(fill.bytes / MiB).toFixed(1)} MiB) in ${fill.seconds.toFixed(2)} s; server RSS ${Math.round(serverStart)} -> ${Math.round(serverFilled)} MiB`,
    );
    const backupArgs = [
      'backup',
      '--source-bucket',
      source,
      '--source-endpoint',
      server.endpoint,
      '--concurrency',
      String(options.concurrency),
    ];
    let vault = '';
    const full = await cappedThenUncapped(
      options,
      async (heapMiB) => {
        vault = await freshBucket('vault');
        return runCli(server, vault, backupArgs, heapMiB, options.objects);
      },
      log,
    );
    const backedUp = (full.uncapped ?? full.capped).ok;
    const unchanged = backedUp
      ? await cappedThenUncapped(
          options,
          (heapMiB) => runCli(server, vault, backupArgs, heapMiB, options.objects),
          log,
        )
      : undefined;
    const restore =
      backedUp && options.restore
        ? await cappedThenUncapped(
            options,
            async (heapMiB) => {
              const target = await freshBucket('restored');
              const args = ['restore', '--snapshot', 'latest', '--target-bucket', target];
              return runCli(
                server,
                vault,
                [...args, '--no-switch', '--concurrency', String(options.concurrency)],
                heapMiB,
                options.objects,
              );
            },
            log,
          )
        : undefined;
    const results = {
      date: new Date().toISOString(),
      objects: fill.objects,
      bytes: fill.bytes,
      concurrency: options.concurrency,
      heapCapMiB: options.heapMib,
      loadAverage: loadavg().map((l) => round(l)),
      fill: {
        seconds: round(fill.seconds),
        serverRssBeforeMiB: Math.round(serverStart),
        serverRssAfterMiB: Math.round(serverFilled),
      },
      backup: full,
      unchanged,
      restore,
      serverPeakRssMiB: Math.round(residentMiB(server.process.child.pid ?? 0)?.peak ?? 0),
    };
    if (options.json) process.stdout.write(`${JSON.stringify(results)}\n`);
    else log(JSON.stringify(results, null, 2));
  } finally {
    client.destroy();
    await server.stop();
  }
}
