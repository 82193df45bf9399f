/**
 * `regvault plan`: a dry run of how a bucket would be split into shards.
 */
import type { Command } from 'commander';
import { type BackupEstimate, estimateBackup } from '../../functions/commons/aws/estimate.ts';
import { leanPathFor } from '../../functions/commons/copy/context.ts';
import { genericCopyPolicy, planShards } from '../../functions/commons/copy/plan.ts';
import {
  looksLikeRegistry,
  registryCopyPolicy,
} from '../../functions/commons/registry/copy-policy.ts';
import { commandWithSettings, type Flags, reporter, settingsOf } from '../context.ts';
import { depsFor, s3Location } from '../deps.ts';
import { numbersOf } from '../settings.ts';

/** Adds the command to the program. */
export function planCommand(program: Command): void {
  commandWithSettings(
    program,
    'plan',
    'dry run: how a bucket would be split into shards, with counts and an estimate',
  )
    .requiredOption('--source-bucket <bucket>', 'the bucket to plan')
    .option('--source-region <region>', 'its region (defaults to the vault region)')
    .option('--source-endpoint <url>', 'its endpoint (defaults to the vault endpoint)')
    .option('--shard-objects <n>', 'objects per shard', '5000')
    .option(
      '--estimate',
      'also estimate the backup on AWS: S3, SQS and Step Functions requests, Lambda GB-seconds, time and dollars',
    )
    .option(
      '--copy-workers <n>',
      "copy workers at once, for the estimate (the stack's copyWorkers)",
      '40',
    )
    .option(
      '--poll-seconds <n>',
      'seconds between shard counts, for the estimate (copyPollSeconds)',
      '10',
    )
    .option(
      '--worker-rate <n>',
      'objects a copy worker copies a second, for the estimate (default: assumed by mode)',
    )
    .action(async (flags: Flags) => {
      const settings = await settingsOf(flags);
      const numbers = numbersOf(flags, [
        'shardObjects',
        'copyWorkers',
        'pollSeconds',
        'workerRate',
      ]);
      const out = reporter(settings);
      const deps = depsFor(settings);
      try {
        const source = s3Location(
          settings,
          {
            bucket: String(flags['sourceBucket']),
            prefix: '',
            endpoint: flags['sourceEndpoint'],
            region: flags['sourceRegion'],
          },
          { bucket: '--source-bucket', endpoint: '--source-endpoint', region: '--source-region' },
          'source',
        );
        const client = await deps.s3(source);
        const registry = await looksLikeRegistry(client, source);
        const options = {
          targetObjectsPerShard: numbers.shardObjects ?? 5_000,
          fast: leanPathFor(client, source),
        };
        const policy = registry ? registryCopyPolicy : genericCopyPolicy;
        const plan = await planShards(client, source.bucket, '', policy, options);
        // ~700 server-side copies/s per worker process measured on the sandbox; AWS S3 is faster per connection.
        const estimateSeconds = Math.ceil(plan.estimatedObjects / 700);
        const estimate =
          flags['estimate'] === true
            ? estimateBackup({
                plan,
                // The workers copy server-side where one client reads the source and writes the vault.
                mode: (await deps.sameAccess(source, deps.vault.location))
                  ? 'server-side'
                  : 'stream',
                workers: numbers.copyWorkers ?? 40,
                pollSeconds: numbers.pollSeconds ?? 10,
                ...(numbers.workerRate === undefined
                  ? {}
                  : { objectsPerSecondPerWorker: numbers.workerRate }),
              })
            : undefined;
        out.result(
          {
            layout: registry ? 'registry' : 'generic',
            linkShards: plan.linkShards.length,
            dataShards: plan.dataShards.length,
            estimatedObjects: plan.estimatedObjects,
            planRequests: plan.requests,
            estimateSeconds,
            ...(estimate === undefined ? {} : { estimate }),
          },
          [
            `${registry ? 'registry' : 'plain bucket'}: ${plan.linkShards.length} link shards, ${plan.dataShards.length} data shards, about ${plan.estimatedObjects} objects; ${plan.requests} LIST requests to plan; about ${estimateSeconds} s on one machine`,
            ...(estimate === undefined ? [] : estimateLines(estimate)),
          ].join('\n'),
        );
      } finally {
        deps.close();
      }
    });
}

/** The estimate, for people. */
function estimateLines(estimate: BackupEstimate): string[] {
  const { s3 } = estimate.requests;
  return [
    `estimate of a full backup on AWS (${estimate.prices}):`,
    `  S3 requests: ${s3.CopyObject} CopyObject, ${s3.GetObject} GetObject, ${s3.PutObject} PutObject, ${s3.ListObjectsV2} ListObjectsV2; SQS requests: ${estimate.requests.sqs}`,
    `  Step Functions transitions: ${estimate.stepFunctionsTransitions}; Lambda: ${estimate.lambdaGbSeconds} GB-s`,
    `  about ${estimate.seconds} s; about $${estimate.usd.total.toFixed(4)} (S3 $${estimate.usd.s3.toFixed(4)}, Lambda $${estimate.usd.lambda.toFixed(4)}, Step Functions $${estimate.usd.stepFunctions.toFixed(4)}, SQS $${estimate.usd.sqs.toFixed(4)})`,
    ...estimate.assumptions.map((line) => `  assumed: ${line}`),
  ];
}
