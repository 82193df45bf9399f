/**
 * `regvault plan`: a dry run of how a bucket would be split into shards.
 */
import type { Command } from 'commander';
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
    .action(async (flags: Flags) => {
      const settings = await settingsOf(flags);
      const numbers = numbersOf(flags, ['shardObjects']);
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
        );
        const client = await deps.s3(source);
        const registry = await looksLikeRegistry(client, source);
        const options = { targetObjectsPerShard: numbers.shardObjects ?? 5_000 };
        const policy = registry ? registryCopyPolicy : genericCopyPolicy;
        const plan = await planShards(client, source.bucket, '', policy, options);
        // ~700 server-side copies/s per worker process measured on the sandbox; AWS S3 is faster per connection.
        const estimateSeconds = Math.ceil(plan.estimatedObjects / 700);
        out.result(
          {
            layout: registry ? 'registry' : 'generic',
            linkShards: plan.linkShards.length,
            dataShards: plan.dataShards.length,
            estimatedObjects: plan.estimatedObjects,
            planRequests: plan.requests,
            estimateSeconds,
          },
          `${registry ? 'registry' : 'plain bucket'}: ${plan.linkShards.length} link shards, ${plan.dataShards.length} data shards, about ${plan.estimatedObjects} objects; ${plan.requests} LIST requests to plan; about ${estimateSeconds} s on one machine`,
        );
      } finally {
        deps.close();
      }
    });
}
