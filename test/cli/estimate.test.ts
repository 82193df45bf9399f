/**
 * `regvault plan --estimate` says before any copy what a backup will cost;
 * its request counts are held to the S3 server's counters of the backup
 * that follows, through the CLI as users run both.
 */
import { CreateBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import {
  ASSUMED_RATES,
  COPY_WORKER_MB,
  FINALIZE_MB,
} from '../../functions/commons/aws/estimate.ts';
import { FUNCTIONS } from '../../infra/function-specs.ts';
import { buildDataset, type Dataset, writeDataset } from '../../sandbox/dataset.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { jsonLines, runRegvault, sandboxEnv } from '../support/cli.ts';
import { clientFor } from '../support/s3.ts';

let s3: S3ServerHandle;
let client: S3Client;
let dataset: Dataset;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-estimate' });
  client = clientFor(s3);
  for (const bucket of ['source', 'vault'])
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
  dataset = buildDataset({ repositories: 90, tagsPerRepository: 3, layersPerImage: 3, seed: 3 });
  await writeDataset(client, 'source', dataset.objects);
  env = sandboxEnv(s3, 'vault');
}, 120_000);

afterAll(async () => {
  client?.destroy();
  await s3?.stop();
});

type Estimate = {
  objects: number;
  shards: number;
  linkShards: number;
  requests: { s3: Record<string, number>; total: number; sqs: number };
  stepFunctionsTransitions: number;
  lambdaGbSeconds: number;
  seconds: number;
  usd: Record<string, number>;
  assumptions: string[];
};

describe('the estimate of a backup, before it runs', () => {
  it("predicts a backup's S3 requests within 10% of the server's count of the backup that follows", async () => {
    // Prepare
    const shardObjects = '1000';
    // Act
    const planned = await runRegvault(
      [
        'plan',
        '--source-bucket',
        'source',
        '--estimate',
        '--shard-objects',
        shardObjects,
        '--json',
      ],
      env,
    );
    await s3.resetCounters();
    const backup = await runRegvault(
      ['backup', '--source-bucket', 'source', '--shard-objects', shardObjects, '--json'],
      env,
    );
    const counters = await s3.counters();
    // Assess
    expect(planned.stderr).toBe('');
    expect(backup.code).toBe(0);
    const estimate = jsonLines(planned.stdout).at(-1)?.['estimate'] as Estimate;
    expect(estimate.objects).toBe(dataset.objects.length);
    expect(estimate.linkShards).toBeGreaterThan(1);
    expect(estimate.shards).toBeGreaterThan(estimate.linkShards);
    // The estimate is of the run on AWS. The CLI runs every step in one
    // process, which spares requests the AWS run makes: its memory queue
    // delivers each message once (on SQS a worker first looks for the
    // shard's result: a GET per shard) and works every message of the run
    // (a link shard's listed marker stays in memory: a PUT per link shard);
    // the job its plan step wrote is neither read back (a GET) nor looked up
    // for shards already ended before its first send (a LIST); finalize
    // neither renews nor reads before releasing the lease this process
    // renewed moments before (three GETs and a PUT); finalize takes the
    // record files the workers kept in memory instead of reading them (a GET
    // per message, one per shard here).
    const onAws = {
      GetObject: 2 * estimate.shards + 1 + 3,
      PutObject: estimate.linkShards + 1,
      ListObjectsV2: 1,
    };
    const counted = {
      CopyObject: counters['CopyObject'] ?? 0,
      GetObject: (counters['GetObject'] ?? 0) + onAws.GetObject,
      PutObject: (counters['PutObject'] ?? 0) + onAws.PutObject,
      ListObjectsV2: (counters['ListObjectsV2'] ?? 0) + onAws.ListObjectsV2,
      DeleteObject: counters['DeleteObject'] ?? 0,
    };
    expect(estimate.requests.s3['CopyObject']).toBe(counted.CopyObject);
    const total = Object.values(counted).reduce((sum, n) => sum + n, 0);
    const estimatedS3 = Object.values(estimate.requests.s3).reduce((sum, n) => sum + n, 0);
    expect(Math.abs(estimatedS3 / total - 1)).toBeLessThan(0.1);
    // Each kind besides the copies, too, within 10% (or three requests where there are few).
    const offBy = (['GetObject', 'PutObject', 'ListObjectsV2', 'DeleteObject'] as const).map(
      (kind) => ({
        kind,
        counted: counted[kind],
        within:
          Math.abs((estimate.requests.s3[kind] ?? 0) - counted[kind]) <=
          Math.max(4, counted[kind] * 0.1),
      }),
    );
    expect(offBy.filter((kind) => !kind.within)).toEqual([]);
  }, 180_000);

  it('prices the run and says which rates it assumed', async () => {
    // Act
    const planned = await runRegvault(
      ['plan', '--source-bucket', 'source', '--estimate', '--copy-workers', '10', '--json'],
      env,
    );
    const human = await runRegvault(['plan', '--source-bucket', 'source', '--estimate'], env);
    // Assess
    const estimate = jsonLines(planned.stdout).at(-1)?.['estimate'] as Estimate;
    expect(estimate.usd['total']).toBeGreaterThan(0);
    expect(estimate.usd['total']).toBeCloseTo(
      (estimate.usd['s3'] ?? 0) +
        (estimate.usd['lambda'] ?? 0) +
        (estimate.usd['stepFunctions'] ?? 0) +
        (estimate.usd['sqs'] ?? 0),
      3,
    );
    // One endpoint and one set of keys: the workers copy server-side, at the assumed rate.
    expect(estimate.assumptions[0]).toContain(`${ASSUMED_RATES['server-side']} objects/s`);
    expect(estimate.stepFunctionsTransitions).toBeGreaterThanOrEqual(10);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/estimate of a full backup on AWS \(us-east-1 list prices/);
    expect(human.stdout).toMatch(/about \$\d+\.\d{4} \(S3 \$/);
  }, 120_000);

  it('refuses a copy-workers value out of range before planning, naming the flag', async () => {
    // Act
    const run = await runRegvault(
      ['plan', '--source-bucket', 'source', '--estimate', '--copy-workers', '0'],
      env,
    );
    // Assess
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--copy-workers');
  });

  it('prices Lambda at the memory the stack gives the copy worker and finalize', () => {
    // Assess
    expect(COPY_WORKER_MB).toBe(FUNCTIONS['copy-worker'].memorySize);
    expect(FINALIZE_MB).toBe(FUNCTIONS.finalize.memorySize);
  });
});
