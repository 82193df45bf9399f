/**
 * `npm run bench`: regvault's copy engine against the floor (pre-listed
 * CopyObject at the same concurrency), rclone and aws s3 sync, on the same
 * sandbox S3 server and the same registry-shaped data, in one run.
 *
 *   npm run bench -- [--objects 20000] [--concurrency 32] [--big-mib 1024] [--json] [--no-write]
 *
 * Prints ratios, S3 requests per object (from the server's own counter),
 * changed objects found, and regvault's peak RSS; writes docs/benchmarks.md.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { Command } from 'commander';
import PQueue from 'p-queue';
import { z } from 'zod';
import { createS3Client } from '../functions/commons/s3/client.ts';
import { buildDataset, type DatasetObject, seededBytes, writeDataset } from '../sandbox/dataset.ts';
import { type S3ServerHandle, startS3Server } from '../sandbox/s3/index.ts';
import { median, total } from './bench-stats.ts';
import { benchWorkflow, type WorkflowBench } from './bench-workflow.ts';

const run = promisify(execFile);

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

interface CopyRunResult {
  ok: boolean;
  seconds: number;
  totals: { listed: number; copied: number; skipped: number; failed: number };
  failures: unknown[];
  maxRssMiB: number;
  mode: string;
}

function log(options: BenchOptions, line: string): void {
  if (!options.json) process.stdout.write(`${line}\n`);
  else process.stderr.write(`${line}\n`);
}

async function listKeys(
  client: S3Client,
  bucket: string,
): Promise<Array<{ key: string; etag: string; size: number }>> {
  const keys: Array<{ key: string; etag: string; size: number }> = [];
  let token: string | undefined;
  do {
    const page = await client.send(
      new ListObjectsV2Command({
        Bucket: bucket,
        ...(token === undefined ? {} : { ContinuationToken: token }),
      }),
    );
    for (const c of page.Contents ?? [])
      keys.push({ key: c.Key ?? '', etag: c.ETag ?? '', size: c.Size ?? 0 });
    token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
  } while (token !== undefined);
  return keys;
}

async function dropBucket(client: S3Client, bucket: string): Promise<void> {
  const keys = await listKeys(client, bucket);
  for (let i = 0; i < keys.length; i += 1000) {
    await client.send(
      new DeleteObjectsCommand({
        Bucket: bucket,
        Delete: { Objects: keys.slice(i, i + 1000).map((k) => ({ Key: k.key })), Quiet: true },
      }),
    );
  }
  await client.send(new DeleteBucketCommand({ Bucket: bucket }));
}

/**
 * The paired ratio of two peers that ran in the same rounds: the median of
 * each round's `a / b`. The two runs of a round are seconds apart, so a slow
 * stretch of the machine (it lasts minutes here) slows both and cancels out;
 * a ratio of medians would take each median from other rounds.
 */
function pairedRatio(a: readonly number[], b: readonly number[]): number {
  return median(roundRatios(a, b));
}

/** Each round's `a / b`. */
function roundRatios(a: readonly number[], b: readonly number[]): number[] {
  return a.map((value, i) => value / (b[i] ?? Number.NaN));
}

/**
 * Whether the first peer of a pair runs first in this round: the order swaps
 * every round, so neither always runs right after the other's clean-up, and
 * the last round runs the first peer first (the regvault bucket that the
 * incremental runs start from is the last thing written).
 */
function firstPeerFirst(round: number, rounds: number): boolean {
  return (rounds - round) % 2 === 0;
}

/** Runs the two peers of a round in the order firstPeerFirst gives; the results come back as `[a, b]`. */
async function inTurn<A, B>(
  round: number,
  rounds: number,
  a: () => Promise<A>,
  b: () => Promise<B>,
): Promise<[A, B]> {
  if (firstPeerFirst(round, rounds)) {
    const first = await a();
    return [first, await b()];
  }
  const first = await b();
  return [await a(), first];
}

/** Seconds a function takes. */
async function timed<T>(fn: () => Promise<T>): Promise<{ seconds: number; value: T }> {
  const started = performance.now();
  const value = await fn();
  return { seconds: (performance.now() - started) / 1000, value };
}

/** Runs regvault's copy in a child process (scripts/copy-run.ts) and returns its JSON line. */
async function regvaultCopy(
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

function location(server: S3ServerHandle, bucket: string, access = 'sandbox') {
  return {
    endpoint: server.endpoint,
    region: server.region,
    bucket,
    prefix: '',
    forcePathStyle: true,
    access,
  };
}

/** rclone sync between two remotes (server-side copy when they are the same remote). */
async function rcloneSync(
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

async function awsSync(
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

async function requestsBetween(
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

/** Puts a large object in parts generated on the fly (never whole in memory). */
async function putLarge(
  client: S3Client,
  bucket: string,
  key: string,
  size: number,
): Promise<void> {
  const partSize = 8 * 1024 ** 2;
  const { UploadId } = await client.send(
    new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }),
  );
  const parts: Array<{ ETag: string; PartNumber: number }> = [];
  for (let start = 0, n = 1; start < size; start += partSize, n++) {
    const body = seededBytes(`big-${n}`, Math.min(partSize, size - start));
    const part = await client.send(
      new UploadPartCommand({
        Bucket: bucket,
        Key: key,
        UploadId,
        PartNumber: n,
        Body: body,
        ContentLength: body.length,
      }),
    );
    parts.push({ ETag: part.ETag ?? '', PartNumber: n });
  }
  await client.send(
    new CompleteMultipartUploadCommand({
      Bucket: bucket,
      Key: key,
      UploadId,
      MultipartUpload: { Parts: parts },
    }),
  );
}

/** Changes ~1% of the source: new images (new blobs and links) and re-tags. Returns the keys changed. */
async function changeOnePercent(
  client: S3Client,
  bucket: string,
  objects: readonly DatasetObject[],
  count: number,
  seed: number,
): Promise<Set<string>> {
  const changed = new Set<string>();
  const tagLinks = objects.filter((o) => o.key.endsWith('/current/link'));
  const manifests = objects
    .filter((o) => o.key.includes('/_manifests/revisions/'))
    .map((o) => o.body().toString());
  // Half re-tags: point a tag at another image's manifest (same size, new content).
  for (let i = 0; i < Math.ceil(count / 2) && i < tagLinks.length; i++) {
    const link = tagLinks[(i * 7919) % tagLinks.length];
    if (link === undefined || changed.has(link.key)) continue;
    const current = link.body().toString();
    const replacement =
      manifests.find((m, j) => m !== current && j % 97 === i % 97) ??
      manifests.find((m) => m !== current) ??
      current;
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: link.key, Body: replacement }));
    changed.add(link.key);
  }
  // Half new content: fresh images in a new repository.
  const fresh = buildDataset({
    repositories: Math.max(1, Math.ceil(count / 2 / 11 / 2)),
    tagsPerRepository: 2,
    seed,
    namespace: 'new',
    sharedLayers: 0,
  });
  const freshObjects = fresh.objects.slice(0, Math.max(1, count - changed.size));
  await writeDataset(client, bucket, freshObjects);
  for (const o of freshObjects) changed.add(o.key);
  return changed;
}

interface BenchResults {
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

async function main(): Promise<void> {
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
  const options = optionsSchema.parse(program.opts());
  const C = options.concurrency;
  const dir = await mkdtemp(join(tmpdir(), 'regvault-bench-'));
  const [server, remote] = await Promise.all([
    startS3Server({ name: 'bench-s3' }),
    startS3Server({ name: 'bench-s3-remote' }),
  ]);
  const client = createS3Client(
    { endpoint: server.endpoint, region: server.region, forcePathStyle: true },
    server.credentials,
    { maxSockets: C + 8 },
  );
  const remoteClient = createS3Client(
    { endpoint: remote.endpoint, region: remote.region, forcePathStyle: true },
    remote.credentials,
    { maxSockets: C + 8 },
  );
  try {
    // Data set: about 11 objects per image (3 layers, one shared; config; manifest;
    // 7 links). Shared layers are stored once, so grow the image count until the
    // set holds the requested number of objects, then cut it there.
    const tags = 5;
    const build = (images: number) =>
      buildDataset({
        repositories: Math.ceil(images / tags),
        tagsPerRepository: tags,
        layersPerImage: 3,
        sharedLayers: 1,
        seed: 42,
      });
    let images = Math.ceil(options.objects / 11);
    let data = build(images);
    while (data.objects.length < options.objects) {
      images = Math.ceil((images * options.objects) / data.objects.length) + tags;
      data = build(images);
    }
    const objects = data.objects.slice(0, options.objects);
    const n = objects.length;
    log(
      options,
      `bench: ${n} objects, ${(objects.reduce((a, o) => a + o.size, 0) / 1024 ** 2).toFixed(1)} MiB, concurrency ${C}`,
    );
    await client.send(new CreateBucketCommand({ Bucket: 'bench-src' }));
    await writeDataset(client, 'bench-src', objects, C);

    // (a) The floor: pre-listed keys, CopyObject only, through the same CopyObject
    // path regvault uses (s3/fast-copy.ts); the SDK's own CopyObject is timed once too.
    const keys = await listKeys(client, 'bench-src');
    const copySource = (key: string) =>
      `bench-src/${key.split('/').map(encodeURIComponent).join('/')}`;
    // (a) and (b) alternate for `rounds` rounds, each on a fresh target bucket,
    // and the medians are compared: one slow round (the machine's speed varies by
    // a third) cannot decide the ratio. The last regvault round's bucket and
    // inventory are what the incremental runs start from.
    let floorBuckets = 0;
    /** The floor once, into a fresh bucket, in a child process: its copy time. */
    const floorOnce = async () => {
      const bucket = `floor-dst-${++floorBuckets}`;
      await client.send(new CreateBucketCommand({ Bucket: bucket }));
      const floor = await regvaultCopy(server, server, {
        source: location(server, 'bench-src'),
        target: location(server, bucket),
        layout: 'generic',
        targetCheck: 'empty',
        concurrency: C,
        floor: true,
      });
      await dropBucket(client, bucket);
      return floor.seconds;
    };

    // The headline: a backup as users run it, through the CLI and the workflow.
    const workflow = await benchWorkflow({
      server,
      client,
      source: 'bench-src',
      objects: n,
      concurrency: C,
      rounds: options.workflowRounds,
      runFloor: floorOnce,
      inTurn,
      log: (line) => log(options, line),
    });
    log(
      options,
      `(w) regvault backup through the CLI and the workflow: ${median(workflow.rounds).toFixed(2)} s (median of ${options.workflowRounds}), ${pairedRatio(workflow.rounds, workflow.floorRounds).toFixed(3)} of the floor; ${workflow.requestsPerObjectFull.toFixed(4)} req/object, unchanged ${workflow.requestsPerObjectUnchanged.toFixed(4)}; CLI start ${workflow.cliStartupMs.toFixed(0)} ms; progress every ${workflow.progressMaxGapSeconds.toFixed(2)} s at most`,
    );

    const floorRuns: number[] = [];
    const fullRuns: number[] = [];
    const inventory1 = join(dir, 'inventory-1.jsonl');
    let full!: CopyRunResult;
    let fullRequests: Record<string, number> = {};
    for (let round = 1; round <= options.rounds; round += 1) {
      // In a child process like regvault's own runs, so both start equally cold.
      const runFloor = floorOnce;
      const runFull = async () => {
        await client.send(new CreateBucketCommand({ Bucket: 'rv-dst' }));
        fullRequests = await requestsBetween(server, async () => {
          full = await regvaultCopy(server, server, {
            source: location(server, 'bench-src'),
            target: location(server, 'rv-dst'),
            layout: 'registry',
            // As the CLI does: one LIST finds the target empty, so pages skip the target listing.
            targetCheck: 'auto',
            writeInventory: inventory1,
            concurrency: C,
          });
        });
        if (!full.ok)
          throw new Error(`regvault's full copy failed: ${JSON.stringify(full.failures)}`);
        if (round < options.rounds) await dropBucket(client, 'rv-dst');
        return full.seconds;
      };
      const [floorRound, fullRound] = await inTurn(round, options.rounds, runFloor, runFull);
      floorRuns.push(floorRound);
      fullRuns.push(fullRound);
      log(
        options,
        `round ${round}: (a) floor ${floorRound.toFixed(2)} s, (b) regvault full ${fullRound.toFixed(2)} s (${firstPeerFirst(round, options.rounds) ? 'floor' : 'regvault'} first), ratio ${(fullRound / floorRound).toFixed(3)}`,
      );
    }
    const floorSeconds = median(floorRuns);
    const fullSeconds = median(fullRuns);
    await client.send(new CreateBucketCommand({ Bucket: 'floor-sdk-dst' }));
    const floorSdk = await timed(async () => {
      const queue = new PQueue({ concurrency: C });
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
    log(
      options,
      `(a) floor (SDK)     ${floorSdk.seconds.toFixed(2)} s  (the same copies through S3Client.send)`,
    );
    log(options, `(a) floor           ${floorSeconds.toFixed(2)} s  (median of ${options.rounds})`);
    log(
      options,
      `(b) regvault full   ${fullSeconds.toFixed(2)} s  (median of ${options.rounds})  ${(total(fullRequests) / n).toFixed(4)} req/object ${JSON.stringify(fullRequests)}`,
    );

    // (c) rclone sync, server-side copy.
    await client.send(new CreateBucketCommand({ Bucket: 'rclone-dst' }));
    const rcloneFull = await rcloneSync(server, server, 'bench-src', 'rclone-dst', C);
    log(options, `(c) rclone sync     ${rcloneFull.toFixed(2)} s`);

    // (d) aws s3 sync.
    await client.send(new CreateBucketCommand({ Bucket: 'aws-dst' }));
    const awsFull = await awsSync(server, 'bench-src', 'aws-dst', C, dir);
    await dropBucket(client, 'aws-dst');
    log(options, `(d) aws s3 sync     ${awsFull.toFixed(2)} s`);

    // (e) 1% changed: regvault with the previous inventory; (f) rclone on the same change.
    const changed = await changeOnePercent(
      client,
      'bench-src',
      objects,
      Math.max(2, Math.round(n / 100)),
      4242,
    );
    const inventory2 = join(dir, 'inventory-2.jsonl');
    let incremental!: CopyRunResult;
    const incrementalRequests = await requestsBetween(server, async () => {
      incremental = await regvaultCopy(server, server, {
        source: location(server, 'bench-src'),
        target: location(server, 'rv-dst'),
        layout: 'registry',
        targetCheck: 'inventory',
        previousInventory: inventory1,
        writeInventory: inventory2,
        concurrency: C,
      });
    });
    const sourceNow = await listKeys(client, 'bench-src');
    const targetNow = new Map((await listKeys(client, 'rv-dst')).map((k) => [k.key, k.etag]));
    const mismatched = sourceNow.filter((k) => targetNow.get(k.key) !== k.etag).length;
    log(
      options,
      `(e) regvault 1%     ${incremental.seconds.toFixed(2)} s  copied ${incremental.totals.copied} of ${changed.size} changed, ${mismatched} mismatched after`,
    );
    const rcloneIncremental = await rcloneSync(server, server, 'bench-src', 'rclone-dst', C);
    log(options, `(f) rclone 1%       ${rcloneIncremental.toFixed(2)} s`);
    await dropBucket(client, 'rclone-dst');

    // (g) nothing changed.
    let unchanged!: CopyRunResult;
    const unchangedRequests = await requestsBetween(server, async () => {
      unchanged = await regvaultCopy(server, server, {
        source: location(server, 'bench-src'),
        target: location(server, 'rv-dst'),
        layout: 'registry',
        targetCheck: 'inventory',
        previousInventory: inventory2,
        concurrency: C,
      });
    });
    const unchangedNonList = total(unchangedRequests) - (unchangedRequests['ListObjectsV2'] ?? 0);
    log(
      options,
      `(g) regvault again  ${unchanged.seconds.toFixed(2)} s  ${(total(unchangedRequests) / sourceNow.length).toFixed(4)} req/object, ${unchangedNonList} other than LIST, copied ${unchanged.totals.copied}`,
    );
    await dropBucket(client, 'rv-dst');

    // (h) Across endpoints: remote server -> this one, streaming; data includes one large object.
    await remoteClient.send(new CreateBucketCommand({ Bucket: 'stream-src' }));
    const streamSet = objects.slice(0, Math.min(2000, n));
    await writeDataset(remoteClient, 'stream-src', streamSet, C);
    if (options.bigMib > 0)
      await putLarge(
        remoteClient,
        'stream-src',
        'big/one-large-object',
        options.bigMib * 1024 ** 2,
      );
    // Both peers are bound by the receiving server's CPU here, so one run each
    // would compare noise: they alternate for `streamRounds` rounds and the median
    // of the rounds' ratios counts.
    const streamRuns: number[] = [];
    const streamRcloneRuns: number[] = [];
    let streamPeakRssMiB = 0;
    for (let round = 1; round <= options.streamRounds; round += 1) {
      const runRegvault = async () => {
        await client.send(new CreateBucketCommand({ Bucket: 'stream-rv' }));
        const stream = await regvaultCopy(remote, server, {
          source: location(remote, 'stream-src', 'remote'),
          target: location(server, 'stream-rv'),
          layout: 'generic',
          targetCheck: 'empty',
          concurrency: C,
        });
        await dropBucket(client, 'stream-rv');
        streamPeakRssMiB = Math.max(streamPeakRssMiB, stream.maxRssMiB);
        return stream;
      };
      const runRclone = async () => {
        await client.send(new CreateBucketCommand({ Bucket: 'stream-rclone' }));
        const seconds = await rcloneSync(remote, server, 'stream-src', 'stream-rclone', C);
        await dropBucket(client, 'stream-rclone');
        return seconds;
      };
      const [stream, rcloneSeconds] = await inTurn(
        round,
        options.streamRounds,
        runRegvault,
        runRclone,
      );
      streamRuns.push(stream.seconds);
      streamRcloneRuns.push(rcloneSeconds);
      log(
        options,
        `round ${round}: (h) stream regvault ${stream.seconds.toFixed(2)} s (peak RSS ${stream.maxRssMiB.toFixed(0)} MiB), rclone ${rcloneSeconds.toFixed(2)} s (${firstPeerFirst(round, options.streamRounds) ? 'regvault' : 'rclone'} first)`,
      );
    }
    const streamSeconds = median(streamRuns);
    const streamRclone = median(streamRcloneRuns);

    const results: BenchResults = {
      date: new Date().toISOString().slice(0, 10),
      objects: n,
      concurrency: C,
      workflow,
      workflowFloorRatio: pairedRatio(workflow.rounds, workflow.floorRounds),
      workflowRcloneRatio: median(workflow.rounds) / rcloneFull,
      workflowAwsRatio: median(workflow.rounds) / awsFull,
      floorSeconds,
      floorRounds: floorRuns,
      regvaultRounds: fullRuns,
      floorSdkSeconds: floorSdk.seconds,
      regvaultSeconds: fullSeconds,
      rcloneSeconds: rcloneFull,
      awsSeconds: awsFull,
      floorRatio: pairedRatio(fullRuns, floorRuns),
      floorRatioOfMedians: fullSeconds / floorSeconds,
      rcloneRatio: fullSeconds / rcloneFull,
      awsRatio: fullSeconds / awsFull,
      requestsPerObjectFull: total(fullRequests) / n,
      requestsFull: fullRequests,
      incrementalSeconds: incremental.seconds,
      requestsIncremental: incrementalRequests,
      rcloneIncrementalSeconds: rcloneIncremental,
      incrementalRcloneRatio: incremental.seconds / rcloneIncremental,
      changedFound: incremental.totals.copied,
      changedExpected: changed.size,
      mismatchedAfterIncremental: mismatched,
      requestsPerObjectUnchanged: total(unchangedRequests) / sourceNow.length,
      unchangedNonListRequests: unchangedNonList,
      streamSeconds,
      streamRcloneSeconds: streamRclone,
      streamRcloneRatio: pairedRatio(streamRuns, streamRcloneRuns),
      streamRcloneRatioOfMedians: streamSeconds / streamRclone,
      streamPeakRssMiB,
      streamRounds: streamRuns,
      streamRcloneRounds: streamRcloneRuns,
      streamBigMiB: options.bigMib,
      fullPeakRssMiB: full.maxRssMiB,
    };
    log(options, '');
    log(
      options,
      `HEADLINE backup through the CLI and the workflow: ${results.workflowFloorRatio.toFixed(3)} of the floor (median of the rounds' ratios), ${results.workflowRcloneRatio.toFixed(3)} of rclone, ${results.workflowAwsRatio.toFixed(3)} of aws s3 sync; ${workflow.requestsPerObjectFull.toFixed(4)} req/object full, ${workflow.requestsPerObjectUnchanged.toFixed(4)} unchanged; CLI start ${workflow.cliStartupMs.toFixed(0)} ms`,
    );
    log(
      options,
      `engine only: regvault/floor ${results.floorRatio.toFixed(3)} (median of the rounds' ratios; ratio of medians ${results.floorRatioOfMedians.toFixed(3)})  regvault/rclone ${results.rcloneRatio.toFixed(3)}  regvault/aws ${results.awsRatio.toFixed(3)}`,
    );
    log(
      options,
      `requests/object: full ${results.requestsPerObjectFull.toFixed(4)}, unchanged ${results.requestsPerObjectUnchanged.toFixed(4)}`,
    );
    log(
      options,
      `changed found ${results.changedFound}/${results.changedExpected}; stream regvault/rclone ${results.streamRcloneRatio.toFixed(3)}, peak RSS ${results.streamPeakRssMiB.toFixed(0)} MiB`,
    );
    if (options.write) await writeReport(options.output, results);
    if (options.json) process.stdout.write(`${JSON.stringify(results)}\n`);
  } finally {
    client.destroy();
    remoteClient.destroy();
    await Promise.all([server.stop(), remote.stop()]);
    await rm(dir, { recursive: true, force: true });
  }
}

async function writeReport(path: string, r: BenchResults): Promise<void> {
  const f = (v: unknown, digits = 3) => (typeof v === 'number' ? v.toFixed(digits) : String(v));
  const previous = await readFile(path, 'utf8').catch(() => '');
  const marker = '<!-- runs below: newest first -->';
  const head = `# Benchmarks\n\nMade by \`npm run bench\` (scripts/bench.ts) on the sandbox S3 server (fauxqs, one process on 2 cores), every peer on the same server and data in one run. Ratios below 1 mean regvault is faster.\n\nReading them: compare ratios within one run, not seconds across runs; this machine kind's speed varies by a third from run to run (see the SDK floor line). The floor (a) and regvault (b) both run in a child process started the same way, alternating for several rounds, and their medians are compared, as are regvault's and rclone's streaming runs (h) (runs from 2026-12-01 on; earlier runs are single rounds, and the first 2026-12-01 run has a single streaming round). From 2026-12-01 the sandbox server lists from a sorted index in S3's byte order (sandbox/s3/listing.ts) instead of fauxqs's sort of the whole bucket per page, so LISTs cost what they cost on an indexed store; every peer lists through it. (a') is the same copies through the AWS SDK's \`S3Client.send\`, which regvault's hot path (functions/commons/s3/fast-copy.ts) replaces. From the fourth 2026-12-01 run on, link phases roll up by delimiter the directory they do not copy (36 LISTs instead of 57) and the copy queue serves link and blob copies in turns (docs/consistency.md); the default is 5 rounds, because medians of 3 still moved by 0.1 between runs. From the eighth 2026-12-01 run on (its (b) row lists the rounds' ratios), the default is 7 rounds, the two peers of a round swap order every round, and the headline ratios are the median of the rounds' ratios (each round's two runs are seconds apart, so a slow stretch of the machine slows both); the ratio of medians is printed beside it. From the twelfth 2026-12-01 run on, (a) with (b) runs 15 rounds and (h) 7 (\`--rounds\`, \`--stream-rounds\`): the 28 round ratios of the four 7-round runs before it (median 1.07) showed that a median of 7 still lands above 1.15 in about one run in six by chance alone, and one of 15 in about one in thirteen. Older runs below predate changes named in the git log (the lean request path, the fix to gap-shard listings).\n\n${marker}\n`;
  const w = r.workflow;
  const entry = [
    `## ${r.date}: ${r.objects} objects, concurrency ${r.concurrency}`,
    '',
    '| run | seconds | ratio |',
    '| --- | --- | --- |',
    `| (w) **regvault backup through the CLI and the workflow** (spawn to exit) | ${f(median(w.rounds), 2)} | **${f(r.workflowFloorRatio)} of floor** (median of the rounds' ratios; rounds: ${w.rounds.map((v) => f(v, 2)).join(', ')}; their floors: ${w.floorRounds.map((v) => f(v, 2)).join(', ')}), ${f(r.workflowRcloneRatio)} of rclone, ${f(r.workflowAwsRatio)} of aws s3 sync; ${f(w.requestsPerObjectFull, 4)} req/object full ${JSON.stringify(w.requestsFull)}, ${f(w.requestsPerObjectUnchanged, 4)} unchanged (${f(w.unchangedSeconds, 2)} s) ${JSON.stringify(w.requestsUnchanged)}; CLI start ${f(w.cliStartupMs, 0)} ms; progress every ${f(w.progressMaxGapSeconds, 2)} s at most (${w.progressLines} lines) |`,
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

main().catch((err: unknown) => {
  process.stderr.write(
    `bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
});
