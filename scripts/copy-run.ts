/**
 * Runs one copy job in a process of its own and prints one JSON line with the
 * outcome, the time and the process's peak RSS. The benchmark uses it so that
 * regvault's memory is measured apart from the benchmark's own data.
 *
 * Input: REGVAULT_COPY_JOB (JSON, no secrets) and the keys in
 * REGVAULT_SOURCE_KEYS / REGVAULT_TARGET_KEYS as `accessKeyId:secretAccessKey`.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import PQueue from 'p-queue';
import { z } from 'zod';
import { createCopyContext, leanPathFor, prefixMapper } from '../functions/commons/copy/context.ts';
import { runPlan } from '../functions/commons/copy/engine.ts';
import { type InventoryRecord, locationSchema } from '../functions/commons/copy/model.ts';
import { genericCopyPolicy, planShards } from '../functions/commons/copy/plan.ts';
import {
  emptyTarget,
  ListedTarget,
  PreviousInventory,
  targetStateFor,
} from '../functions/commons/copy/target-state.ts';
import { copySourceOf } from '../functions/commons/copy/transfer.ts';
import { registryCopyPolicy } from '../functions/commons/registry/copy-policy.ts';
import { createS3Client } from '../functions/commons/s3/client.ts';
import { createFastCopier } from '../functions/commons/s3/fast-copy.ts';

const jobSchema = z.object({
  source: locationSchema,
  target: locationSchema,
  layout: z.enum(['registry', 'generic']),
  targetCheck: z.enum(['list', 'empty', 'inventory', 'auto']),
  previousInventory: z.string().optional(),
  writeInventory: z.string().optional(),
  concurrency: z.number().int().positive().default(64),
  shardConcurrency: z.number().int().positive().default(8),
  partSize: z.number().int().positive().optional(),
  partConcurrency: z.number().int().positive().optional(),
  memoryBudgetBytes: z.number().int().positive().optional(),
  /** The benchmark's floor: list every key first (not timed), then only CopyObject them. */
  floor: z.boolean().default(false),
});

/** CPU seconds this process used (every thread), to compare client-side cost with the floor's. */
function cpuSeconds(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}

function keys(name: string) {
  const [accessKeyId = '', secretAccessKey = ''] = (process.env[name] ?? '').split(':');
  return { accessKeyId, secretAccessKey };
}

async function readInventory(path: string): Promise<InventoryRecord[]> {
  const records: InventoryRecord[] = [];
  for await (const line of createInterface({ input: createReadStream(path) })) {
    if (line.trim() !== '') records.push(JSON.parse(line) as InventoryRecord);
  }
  return records;
}

/**
 * One process runs four shards at once: shards of about 2,000 objects keep
 * all four busy through the link phases (Lambda workers use 20,000).
 */
const LOCAL_SHARD_OBJECTS = 2_000;

async function main(): Promise<void> {
  const job = jobSchema.parse(JSON.parse(process.env['REGVAULT_COPY_JOB'] ?? '{}'));
  const started = performance.now();
  const clientOptions = { maxSockets: job.concurrency + 8 };
  const sourceClient = createS3Client(job.source, keys('REGVAULT_SOURCE_KEYS'), clientOptions);
  const targetClient = createS3Client(job.target, keys('REGVAULT_TARGET_KEYS'), clientOptions);
  if (job.floor) {
    await runFloor(job, sourceClient, targetClient);
    return;
  }
  // As the CLI does: the target check and the plan are independent, so they
  // run at once, and the plan lists through the lean request path.
  // The copier the copy context then reuses (one per client), warm connections included.
  const fast = leanPathFor(sourceClient, job.source, job.concurrency);
  const planOptions = { targetObjectsPerShard: LOCAL_SHARD_OBJECTS, fast };
  const policy = job.layout === 'registry' ? registryCopyPolicy : genericCopyPolicy;
  const [targetState, plan] = await Promise.all([
    job.targetCheck === 'auto'
      ? targetStateFor(targetClient, job.target.bucket, job.target.prefix)
      : job.targetCheck === 'list'
        ? new ListedTarget(targetClient, job.target.bucket)
        : job.targetCheck === 'empty'
          ? emptyTarget
          : readInventory(job.previousInventory ?? '').then((r) => new PreviousInventory(r)),
    planShards(sourceClient, job.source.bucket, job.source.prefix, policy, planOptions),
  ]);
  const ctx = createCopyContext({
    source: { location: job.source, client: sourceClient },
    target: { location: job.target, client: targetClient },
    mapKey: prefixMapper(job.source, job.target),
    targetState,
    policy,
    concurrency: job.concurrency,
    transfer: {
      ...(job.partSize === undefined ? {} : { partSize: job.partSize }),
      ...(job.partConcurrency === undefined ? {} : { partConcurrency: job.partConcurrency }),
    },
    ...(job.memoryBudgetBytes === undefined ? {} : { memoryBudgetBytes: job.memoryBudgetBytes }),
  });
  const out = job.writeInventory === undefined ? undefined : createWriteStream(job.writeInventory);
  const pending: string[] = [];
  const outcome = await runPlan(ctx, plan, {
    shardConcurrency: job.shardConcurrency,
    ...(out === undefined
      ? {}
      : {
          // One write per 1,000 records, as a worker writes one record file per page.
          onRecord: (r: InventoryRecord) => {
            pending.push(JSON.stringify(r));
            if (pending.length === 1_000) out.write(`${pending.splice(0).join('\n')}\n`);
          },
        }),
  });
  if (out !== undefined) {
    if (pending.length > 0) out.write(`${pending.splice(0).join('\n')}\n`);
    await new Promise<void>((resolve) => out.end(resolve));
  }
  const seconds = (performance.now() - started) / 1000;
  process.stdout.write(
    `${JSON.stringify({
      ok: outcome.ok,
      seconds,
      totals: outcome.totals,
      failures: outcome.failures.slice(0, 20),
      mode: ctx.settings.mode,
      planRequests: plan.requests,
      shards: plan.linkShards.length + plan.dataShards.length,
      peakBufferedMiB: ctx.budget.peak / 1024 ** 2,
      maxRssMiB: process.resourceUsage().maxRSS / 1024,
      cpuSeconds: cpuSeconds(),
    })}\n`,
  );
  sourceClient.destroy();
  targetClient.destroy();
}

/** Pre-listed keys, CopyObject only, through the same copy path and process setup as a real run. */
async function runFloor(
  job: z.infer<typeof jobSchema>,
  sourceClient: S3Client,
  targetClient: S3Client,
): Promise<void> {
  const listed: string[] = [];
  let token: string | undefined;
  do {
    const page = await sourceClient.send(
      new ListObjectsV2Command({
        Bucket: job.source.bucket,
        ...(token === undefined ? {} : { ContinuationToken: token }),
      }),
    );
    for (const item of page.Contents ?? []) listed.push(item.Key ?? '');
    token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
  } while (token !== undefined);
  const copier = createFastCopier(targetClient, job.target, { maxSockets: job.concurrency + 8 });
  const queue = new PQueue({ concurrency: job.concurrency });
  const started = performance.now();
  await Promise.all(
    listed.map((key) =>
      queue.add(() =>
        copier.copyObject({
          bucket: job.target.bucket,
          key,
          copySource: copySourceOf(job.source.bucket, key),
          checksumSha256: false,
        }),
      ),
    ),
  );
  const seconds = (performance.now() - started) / 1000;
  process.stdout.write(
    `${JSON.stringify({ ok: true, seconds, totals: { copied: listed.length }, failures: [], maxRssMiB: process.resourceUsage().maxRSS / 1024, cpuSeconds: cpuSeconds() })}\n`,
  );
  copier.destroy();
  sourceClient.destroy();
  targetClient.destroy();
}

main().catch((err: unknown) => {
  process.stderr.write(
    `copy-run: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
});
