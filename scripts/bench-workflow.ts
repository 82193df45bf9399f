/**
 * The benchmark's headline: a backup as users run it, `regvault backup
 * --source-bucket` through the compiled CLI, the backup state machine, the
 * step table's handlers and the copy workers, against the raw-copy floor in
 * alternating rounds; then the same backup again with nothing changed, the
 * CLI's start-up time and how often its progress moved. Used by
 * scripts/bench.ts.
 */
import { execFile, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { CreateBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import type { S3ServerHandle } from '../sandbox/s3/index.ts';
import { median, total } from './bench-stats.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const cli = `${root}dist/regvault.mjs`;

export interface WorkflowBench {
  /** Wall time of each CLI backup, spawn to exit. */
  readonly rounds: number[];
  /** The floor's copy time in the same rounds. */
  readonly floorRounds: number[];
  /** rclone sync's time in the same rounds (a fresh target each time). */
  readonly rcloneRounds: number[];
  readonly requestsPerObjectFull: number;
  readonly requestsFull: Record<string, number>;
  readonly requestsPerObjectUnchanged: number;
  readonly requestsUnchanged: Record<string, number>;
  readonly unchangedSeconds: number;
  /** `regvault --version`, spawn to exit, median of five. */
  readonly cliStartupMs: number;
  /** The longest time between two progress lines while the copy ran (median round). */
  readonly progressMaxGapSeconds: number;
  readonly progressLines: number;
}

export interface WorkflowBenchOptions {
  readonly server: S3ServerHandle;
  readonly client: S3Client;
  readonly source: string;
  readonly objects: number;
  readonly concurrency: number;
  readonly rounds: number;
  /** Runs the floor once on a fresh target and returns its copy time. */
  readonly runFloor: () => Promise<number>;
  /** Runs rclone sync once into a fresh target and returns its time. */
  readonly runRclone: () => Promise<number>;
  /** Alternates the two peers of a round (the bench's `inTurn`). */
  readonly inTurn: (
    round: number,
    rounds: number,
    a: () => Promise<number>,
    b: () => Promise<number>,
  ) => Promise<[number, number]>;
  readonly log: (line: string) => void;
}

/** Builds the compiled CLI the rounds run. */
export async function buildCli(): Promise<void> {
  await promisify(execFile)(process.execPath, [`${root}scripts/build-cli.mjs`], { cwd: root });
}

/**
 * The environment the CLI runs in against a vault bucket on a sandbox S3
 * server: its PATH and HOME, the vault and the server's keys, and nothing
 * else of the caller's (no AWS profile or region leaks in).
 */
export function cliVaultEnv(server: S3ServerHandle, vault: string): NodeJS.ProcessEnv {
  return {
    PATH: process.env['PATH'],
    HOME: process.env['HOME'],
    REGVAULT_VAULT_BUCKET: vault,
    REGVAULT_VAULT_REGION: server.region,
    REGVAULT_VAULT_ENDPOINT: server.endpoint,
    AWS_ACCESS_KEY_ID: server.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: server.credentials.secretAccessKey,
  };
}

/** One CLI backup of the source into `vault`: wall time and the arrival time of each progress line. */
async function cliBackup(
  options: WorkflowBenchOptions,
  vault: string,
): Promise<{ seconds: number; gaps: number[]; progress: number }> {
  const { server } = options;
  const started = performance.now();
  const child = spawn(
    process.execPath,
    [
      cli,
      'backup',
      '--source-bucket',
      options.source,
      '--source-endpoint',
      server.endpoint,
      '--concurrency',
      String(options.concurrency),
      '--json',
    ],
    {
      cwd: root,
      env: cliVaultEnv(server, vault),
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const arrivals: number[] = [];
  let last = '';
  eachLine(child.stdout, (line) => {
    if (line.includes('"event":"progress"')) arrivals.push(performance.now());
    if (line.trim() !== '') last = line;
  });
  let errors = '';
  child.stderr.on('data', (chunk: Buffer) => {
    errors += chunk.toString();
  });
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  const seconds = (performance.now() - started) / 1000;
  if (code !== 0) throw new Error(`regvault backup exited ${code}: ${errors.slice(-2000)}`);
  const result = JSON.parse(last) as { ok?: boolean };
  if (result.ok !== true) throw new Error(`regvault backup did not succeed: ${last}`);
  const gaps = arrivals.slice(1).map((at, i) => (at - (arrivals[i] ?? at)) / 1000);
  return { seconds, gaps, progress: arrivals.length };
}

/** Calls `handle` with each whole line a child's output stream writes, as it arrives. */
export function eachLine(stream: NodeJS.ReadableStream, handle: (line: string) => void): void {
  let buffered = '';
  stream.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) handle(line);
  });
}

/** The S3 requests (by operation, SQS left out) the sandbox server served while `fn` ran. */
export async function requestsOf(server: S3ServerHandle, fn: () => Promise<unknown>) {
  await server.resetCounters();
  await fn();
  return Object.fromEntries(
    Object.entries(await server.counters()).filter(([operation]) => !operation.startsWith('sqs:')),
  ) as Record<string, number>;
}

/** Startup: `regvault --version`, spawn to exit, median of five. */
async function startupMs(): Promise<number> {
  const runs: number[] = [];
  for (let i = 0; i < 5; i++) {
    const started = performance.now();
    await promisify(execFile)(process.execPath, [cli, '--version'], { cwd: root });
    runs.push(performance.now() - started);
  }
  return median(runs);
}

export async function benchWorkflow(options: WorkflowBenchOptions): Promise<WorkflowBench> {
  await buildCli();
  const rounds: number[] = [];
  const floorRounds: number[] = [];
  const rcloneRounds: number[] = [];
  const gapsByRound: number[] = [];
  let progressLines = 0;
  let requestsFull: Record<string, number> = {};
  let vault = '';
  for (let round = 1; round <= options.rounds; round += 1) {
    vault = `wf-vault-${round}`;
    await options.client.send(new CreateBucketCommand({ Bucket: vault }));
    const runWorkflow = async () => {
      let seconds = 0;
      requestsFull = await requestsOf(options.server, async () => {
        const run = await cliBackup(options, vault);
        seconds = run.seconds;
        gapsByRound.push(Math.max(0, ...run.gaps));
        progressLines = run.progress;
      });
      return seconds;
    };
    const pair = () => options.inTurn(round, options.rounds, options.runFloor, runWorkflow);
    // rclone runs in the same round, before the pair in odd rounds and after it in even ones.
    let rclone = round % 2 === 1 ? await options.runRclone() : 0;
    const [floor, workflow] = await pair();
    if (round % 2 === 0) rclone = await options.runRclone();
    floorRounds.push(floor);
    rounds.push(workflow);
    rcloneRounds.push(rclone);
    options.log(
      `round ${round}: floor ${floor.toFixed(2)} s, regvault backup (CLI, workflow) ${workflow.toFixed(2)} s, rclone ${rclone.toFixed(2)} s; ratios ${(workflow / floor).toFixed(3)} of the floor, ${(workflow / rclone).toFixed(3)} of rclone`,
    );
  }
  let unchangedSeconds = 0;
  const requestsUnchanged = await requestsOf(options.server, async () => {
    unchangedSeconds = (await cliBackup(options, vault)).seconds;
  });
  return {
    rounds,
    floorRounds,
    rcloneRounds,
    requestsPerObjectFull: total(requestsFull) / options.objects,
    requestsFull,
    requestsPerObjectUnchanged: total(requestsUnchanged) / options.objects,
    requestsUnchanged,
    unchangedSeconds,
    cliStartupMs: await startupMs(),
    progressMaxGapSeconds: median(gapsByRound),
    progressLines,
  };
}
