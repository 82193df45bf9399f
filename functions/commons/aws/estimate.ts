/**
 * What a backup will cost before it runs, from its plan: S3 requests by kind
 * (the same whether the workflow runs on AWS or on one machine), SQS
 * requests, Step Functions transitions, Lambda GB-seconds, the time at the
 * copy workers' concurrency, and dollars at the list prices in prices.ts.
 *
 * The request counts follow what the code does per object, per page and per
 * shard (docs/scale.md); the test holds them to a real run's counters. The
 * rates are inputs, not measurements of AWS: where one is assumed the
 * estimate says so in `assumptions`.
 */
import { PAGE_SIZE } from '../copy/model.ts';
import { AWS_LEASE_TTL_MS } from '../vault/run-lease.ts';
import { PRICES } from './prices.ts';

/** The parts of a plan an estimate reads. */
export interface PlannedBackup {
  readonly linkShards: ReadonlyArray<{ readonly estimatedObjects?: number | undefined }>;
  readonly dataShards: ReadonlyArray<{ readonly estimatedObjects?: number | undefined }>;
  /** LIST requests the plan itself made. */
  readonly requests: number;
}

export interface EstimateInput {
  readonly plan: PlannedBackup;
  /** CopyObject within one endpoint and one set of keys; GET + PUT through the worker otherwise. */
  readonly mode: 'server-side' | 'stream';
  /** Copy workers at once (`copyWorkers` on AWS). */
  readonly workers: number;
  /** Seconds between counts of finished shards (`copyPollSeconds`). */
  readonly pollSeconds: number;
  /** Objects one copy worker copies a second (server-side, or streamed). */
  readonly objectsPerSecondPerWorker?: number;
}

/** Memory of the copy worker and of the other steps (infra/function-specs.ts; a test keeps them equal). */
export const COPY_WORKER_MB = 2048;
export const FINALIZE_MB = 3008;
export const STEP_MB = 1024;

/**
 * Objects a copy worker copies a second, by mode: not measured on AWS. 64
 * copies in flight at about 30 ms a server-side copy of a small object, and
 * about 160 ms a streamed GET + PUT.
 */
export const ASSUMED_RATES = { 'server-side': 2_000, stream: 400 } as const;

/** States a backup enters besides its polls (start, discover, plan, enqueue, finalize, its choice, the end). */
const BACKUP_TRANSITIONS = 7;
/** States of one poll: the wait, the count, the choice. */
const POLL_TRANSITIONS = 3;
/** Seconds of the steps around the copy (discover, plan, finalize), assumed. */
const STEP_SECONDS = 10;

export interface BackupEstimate {
  readonly objects: number;
  readonly shards: number;
  /** Of `shards`, the link shards (each writes a listed marker). */
  readonly linkShards: number;
  readonly requests: {
    readonly s3: {
      readonly CopyObject: number;
      readonly GetObject: number;
      readonly PutObject: number;
      readonly ListObjectsV2: number;
      readonly DeleteObject: number;
    };
    readonly sqs: number;
    readonly total: number;
  };
  readonly stepFunctionsTransitions: number;
  readonly lambdaGbSeconds: number;
  readonly seconds: number;
  readonly usd: {
    readonly s3: number;
    readonly lambda: number;
    readonly stepFunctions: number;
    readonly sqs: number;
    readonly total: number;
  };
  readonly prices: string;
  readonly assumptions: readonly string[];
}

const pages = (objects: number) => Math.ceil(objects / PAGE_SIZE);
const objectsOf = (shards: PlannedBackup['linkShards']) =>
  shards.reduce((sum, shard) => sum + (shard.estimatedObjects ?? 0), 0);
const cents = (usd: number) => Math.round(usd * 10_000) / 10_000;

/** A full backup's cost (nothing in the vault yet; an incremental one copies only what changed). */
export function estimateBackup(input: EstimateInput): BackupEstimate {
  const { plan, mode } = input;
  const links = objectsOf(plan.linkShards);
  const objects = links + objectsOf(plan.dataShards);
  const linkShards = plan.linkShards.length;
  const shards = linkShards + plan.dataShards.length;
  const rate = input.objectsPerSecondPerWorker ?? ASSUMED_RATES[mode];
  const copySeconds = Math.ceil(objects / (rate * Math.max(1, Math.min(input.workers, shards))));
  const polls = Math.max(1, Math.ceil(copySeconds / input.pollSeconds));

  // Source listing: a link shard lists its repositories three times, two of
  // them without the layer links and one with only them (about two pages a
  // thousand links, and its first page each time); a blob shard once.
  const sourceLists =
    plan.requests +
    plan.linkShards.reduce((sum, s) => sum + 2 * pages(s.estimatedObjects ?? 0) + 1, 0) +
    plan.dataShards.reduce((sum, s) => sum + pages(s.estimatedObjects ?? 0) + 1, 0);
  // The vault: the snapshots (one), whether its pool is empty (one), the
  // shards that have ended (one per poll per 1,000 shards, and once before
  // sending), the record files at finalize (one per 1,000 files).
  const vaultLists = 3 + (polls + 1) * Math.ceil(shards / 1_000);
  // Per shard: whether it ended (GET), its records (PUT), its result (PUT),
  // its records at finalize (GET); a link shard says it has listed (PUT); the
  // job is read once per worker. The run: the job, the manifest when it
  // starts and ends, the inventory and the catalog.
  const getObject = 2 * shards + Math.min(shards, input.workers);
  const putObject = 5 + 2 * shards + linkShards;
  // The run lease (vault/run-lease.ts): taken (written, read back), renewed
  // at finalize (read, write, read back), released (read, delete): 4 GETs,
  // 2 PUTs and a DELETE (the CLI's finalize, in the process that renewed it
  // moments before, skips the renewal and the read before the delete). The plan and every count
  // renew it only once a quarter of its life has passed since the last
  // renewal: one more renewal per quarter of the copy's time.
  const renewals = Math.floor(copySeconds / (AWS_LEASE_TTL_MS / 4 / 1_000));
  const lease = { get: 4 + 2 * renewals, put: 2 + renewals, delete: 1 };
  const s3 = {
    CopyObject: mode === 'server-side' ? objects : 0,
    GetObject: getObject + lease.get + (mode === 'stream' ? objects : 0),
    PutObject: putObject + lease.put + (mode === 'stream' ? objects : 0),
    ListObjectsV2: sourceLists + vaultLists,
    DeleteObject: lease.delete,
  };
  // DELETE requests are free.
  const writes = s3.CopyObject + s3.PutObject + s3.ListObjectsV2;
  // SQS: shards sent ten to a batch; each message received and deleted.
  const sqs = Math.ceil(shards / 10) + 2 * shards;
  const transitions = BACKUP_TRANSITIONS + POLL_TRANSITIONS * polls;
  const workerSeconds = Math.ceil(objects / rate);
  const lambdaGbSeconds =
    (workerSeconds * COPY_WORKER_MB) / 1024 +
    (STEP_SECONDS * FINALIZE_MB) / 1024 +
    (polls * STEP_MB) / 1024;
  const usd = {
    s3:
      (writes / 1000) * PRICES.s3.writeOrListPer1000 +
      (s3.GetObject / 1000) * PRICES.s3.readPer1000,
    lambda:
      lambdaGbSeconds * PRICES.lambda.armPerGbSecond +
      ((shards + polls + 4) / 1e6) * PRICES.lambda.perMillionRequests,
    stepFunctions: (transitions / 1000) * PRICES.stepFunctions.perThousandTransitions,
    sqs: (sqs / 1e6) * PRICES.sqs.perMillionRequests,
  };
  const s3Total = s3.CopyObject + s3.GetObject + s3.PutObject + s3.ListObjectsV2 + s3.DeleteObject;
  return {
    objects,
    shards,
    linkShards,
    requests: { s3, sqs, total: s3Total + sqs },
    stepFunctionsTransitions: transitions,
    lambdaGbSeconds: Math.round(lambdaGbSeconds),
    seconds: copySeconds + STEP_SECONDS + Math.ceil(input.pollSeconds / 2),
    usd: {
      s3: cents(usd.s3),
      lambda: cents(usd.lambda),
      stepFunctions: cents(usd.stepFunctions),
      sqs: cents(usd.sqs),
      total: cents(usd.s3 + usd.lambda + usd.stepFunctions + usd.sqs),
    },
    prices: `${PRICES.region} list prices as of ${PRICES.asOf} (functions/commons/aws/prices.ts)`,
    assumptions: [
      ...(input.objectsPerSecondPerWorker === undefined
        ? [`${rate} objects/s per copy worker (${mode}): assumed, not measured on AWS`]
        : []),
      `${STEP_SECONDS} s of steps around the copy (discover, plan, finalize)`,
      'objects of 5 GiB or more take one UploadPartCopy per part besides: the plan counts objects, not bytes',
      "SQS: the Lambda event source's empty receives are not counted",
    ],
  };
}
