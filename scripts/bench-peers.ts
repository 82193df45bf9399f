/**
 * The peers scripts/bench.ts times, each run one way every time: regvault's
 * copy (and the floor, which is regvault's copy path with pre-listed keys)
 * in a child process, the same copies through the SDK's S3Client.send,
 * rclone sync and aws s3 sync; and the sandbox server's request counter
 * around a run.
 */
import { execFile, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CopyObjectCommand, CreateBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import PQueue from 'p-queue';
import type { S3ServerHandle } from '../sandbox/s3/index.ts';
import { dropBucket, listKeys } from './bench-data.ts';

const run = promisify(execFile);

/** The JSON line scripts/copy-run.ts ends with. */
export interface CopyRunResult {
  ok: boolean;
  seconds: number;
  totals: { listed: number; copied: number; skipped: number; failed: number };
  failures: unknown[];
  maxRssMiB: number;
  mode: string;
}

/** Seconds a function takes. */
export async function timed<T>(fn: () => Promise<T>): Promise<{ seconds: number; value: T }> {
  const started = performance.now();
  const value = await fn();
  return { seconds: (performance.now() - started) / 1000, value };
}

/** The S3 requests (by operation) the server counted while `fn` ran, its queue calls left out. */
export async function requestsBetween(
  server: S3ServerHandle,
  fn: () => Promise<unknown>,
): Promise<Record<string, number>> {
  await server.resetCounters();
  await fn();
  const counters = await server.counters();
  return Object.fromEntries(
    Object.entries(counters).filter(([op]) => !op.startsWith('sqs:')),
  ) as Record<string, number>;
}

/** A bucket of a sandbox server as a copy job names it. */
export function location(server: S3ServerHandle, bucket: string, access = 'sandbox') {
  return {
    endpoint: server.endpoint,
    region: server.region,
    bucket,
    prefix: '',
    forcePathStyle: true,
    access,
  };
}

/** Runs regvault's copy in a child process (scripts/copy-run.ts) and returns its JSON line. */
export async function regvaultCopy(
  server: S3ServerHandle,
  targetServer: S3ServerHandle,
  job: Record<string, unknown>,
): Promise<CopyRunResult> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(import.meta.dirname, 'copy-run.ts')],
    {
      env: {
        ...process.env,
        REGVAULT_COPY_JOB: JSON.stringify(job),
        REGVAULT_SOURCE_KEYS: `${server.credentials.accessKeyId}:${server.credentials.secretAccessKey}`,
        REGVAULT_TARGET_KEYS: `${targetServer.credentials.accessKeyId}:${targetServer.credentials.secretAccessKey}`,
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString();
  });
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  if (code !== 0) throw new Error(`copy-run exited with ${code}`);
  const result = JSON.parse(out.trim().split('\n').pop() ?? '{}') as CopyRunResult;
  if (!result.ok)
    throw new Error(`regvault copy failed: ${JSON.stringify(result.failures).slice(0, 2000)}`);
  return result;
}

/** regvault's copy on one server, with the requests it made. */
export async function countedCopy(
  server: S3ServerHandle,
  job: Record<string, unknown>,
): Promise<{ result: CopyRunResult; requests: Record<string, number> }> {
  let result!: CopyRunResult;
  const requests = await requestsBetween(server, async () => {
    result = await regvaultCopy(server, server, job);
  });
  return { result, requests };
}

/**
 * The floor: pre-listed keys, CopyObject only, through the same CopyObject
 * path regvault uses (s3/fast-copy.ts), into a fresh bucket, in a child
 * process like regvault's own runs so both start equally cold. Returns a
 * function that runs it once and gives its copy time.
 */
export function floorRunner(
  server: S3ServerHandle,
  client: S3Client,
  source: string,
  concurrency: number,
): () => Promise<number> {
  let buckets = 0;
  return async () => {
    const bucket = `floor-dst-${++buckets}`;
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
    const floor = await regvaultCopy(server, server, {
      source: location(server, source),
      target: location(server, bucket),
      layout: 'generic',
      targetCheck: 'empty',
      concurrency,
      floor: true,
    });
    await dropBucket(client, bucket);
    return floor.seconds;
  };
}

/** The floor's copies through the SDK's own S3Client.send instead of regvault's path: seconds. */
export async function sdkFloor(
  client: S3Client,
  source: string,
  concurrency: number,
): Promise<number> {
  const keys = await listKeys(client, source);
  const copySource = (key: string) =>
    `${source}/${key.split('/').map(encodeURIComponent).join('/')}`;
  await client.send(new CreateBucketCommand({ Bucket: 'floor-sdk-dst' }));
  const { seconds } = await timed(async () => {
    const queue = new PQueue({ concurrency });
    await Promise.all(
      keys.map((k) =>
        queue.add(() =>
          client.send(
            new CopyObjectCommand({
              Bucket: 'floor-sdk-dst',
              Key: k.key,
              CopySource: copySource(k.key),
            }),
          ),
        ),
      ),
    );
  });
  await dropBucket(client, 'floor-sdk-dst');
  return seconds;
}

/** rclone sync between two remotes (server-side copy when they are the same remote): seconds. */
export async function rcloneSync(
  source: S3ServerHandle,
  target: S3ServerHandle,
  from: string,
  to: string,
  concurrency: number,
): Promise<number> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env['AWS_CA_BUNDLE'];
  for (const [name, server] of [
    ['SRC', source],
    ['DST', target],
  ] as const) {
    Object.assign(env, {
      [`RCLONE_CONFIG_${name}_TYPE`]: 's3',
      [`RCLONE_CONFIG_${name}_PROVIDER`]: 'Other',
      [`RCLONE_CONFIG_${name}_ENDPOINT`]: server.endpoint,
      [`RCLONE_CONFIG_${name}_ACCESS_KEY_ID`]: server.credentials.accessKeyId,
      [`RCLONE_CONFIG_${name}_SECRET_ACCESS_KEY`]: server.credentials.secretAccessKey,
      [`RCLONE_CONFIG_${name}_REGION`]: server.region,
      [`RCLONE_CONFIG_${name}_FORCE_PATH_STYLE`]: 'true',
    });
  }
  const dst = source === target ? 'SRC' : 'DST';
  const { seconds } = await timed(() =>
    run(
      'rclone',
      [
        'sync',
        `SRC:${from}`,
        `${dst}:${to}`,
        '--transfers',
        String(concurrency),
        '--checkers',
        String(concurrency),
        '--s3-no-check-bucket',
        '--fast-list',
        // The sandbox server refuses single requests above ~11 MiB: same 8 MiB parts as regvault streams with.
        '--s3-upload-cutoff',
        '8M',
        '--s3-chunk-size',
        '8M',
      ],
      { env, maxBuffer: 64 * 1024 ** 2 },
    ),
  );
  return seconds;
}

/** aws s3 sync within one server, its concurrency set through a private config file: seconds. */
export async function awsSync(
  server: S3ServerHandle,
  from: string,
  to: string,
  concurrency: number,
  dir: string,
): Promise<number> {
  const config = join(dir, 'aws-config');
  await writeFile(
    config,
    `[default]\nregion = ${server.region}\ns3 =\n  max_concurrent_requests = ${concurrency}\n`,
  );
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    AWS_CONFIG_FILE: config,
    AWS_ACCESS_KEY_ID: server.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: server.credentials.secretAccessKey,
  };
  const { seconds } = await timed(() =>
    run(
      '/usr/bin/aws',
      [
        's3',
        'sync',
        `s3://${from}`,
        `s3://${to}`,
        '--endpoint-url',
        server.endpoint,
        '--only-show-errors',
      ],
      {
        env,
        maxBuffer: 64 * 1024 ** 2,
      },
    ),
  );
  return seconds;
}
