/**
 * `regvault copy`: a bucket (or prefix) to another, skipping what is there.
 */
import type { Command } from 'commander';
import { createCopyContext, prefixMapper } from '../../functions/commons/copy/context.ts';
import { runPlan } from '../../functions/commons/copy/engine.ts';
import type { Totals } from '../../functions/commons/copy/model.ts';
import { genericCopyPolicy, planShards } from '../../functions/commons/copy/plan.ts';
import { targetStateFor } from '../../functions/commons/copy/target-state.ts';
import {
  looksLikeRegistry,
  registryCopyPolicy,
} from '../../functions/commons/registry/copy-policy.ts';
import { commandWithSettings, type Flags, reporter, run, settingsOf } from '../context.ts';
import { depsFor, s3Location } from '../deps.ts';
import { parseS3Url } from '../flags.ts';
import { ExitCode } from '../outcome.ts';

/** Adds the command to the program. */
export function copyCommand(program: Command): void {
  commandWithSettings(
    program,
    'copy',
    'copy a bucket (or prefix) to another, skipping what is already there',
  )
    .requiredOption('--from <s3url>', 'source, s3://bucket/prefix')
    .requiredOption('--to <s3url>', 'target, s3://bucket/prefix')
    .option('--from-endpoint <url>', 'source endpoint (defaults to the vault endpoint)')
    .option('--to-endpoint <url>', 'target endpoint (defaults to the vault endpoint)')
    .option('--from-region <region>', 'source region (defaults to the vault region)')
    .option('--to-region <region>', 'target region (defaults to the vault region)')
    .action(async (flags: Flags) => {
      const settings = await settingsOf(flags);
      const out = reporter(settings);
      const from = parseS3Url(String(flags['from']), '--from');
      const to = parseS3Url(String(flags['to']), '--to');
      const deps = depsFor(settings);
      try {
        const source = s3Location(
          settings,
          { ...from, endpoint: flags['fromEndpoint'], region: flags['fromRegion'] },
          { bucket: '--from', endpoint: '--from-endpoint', region: '--from-region' },
          'source',
        );
        const target = s3Location(
          settings,
          { ...to, endpoint: flags['toEndpoint'], region: flags['toRegion'] },
          { bucket: '--to', endpoint: '--to-endpoint', region: '--to-region' },
          'target',
        );
        const [sourceClient, targetClient] = await Promise.all([deps.s3(source), deps.s3(target)]);
        const [registry, targetState] = await Promise.all([
          looksLikeRegistry(sourceClient, source),
          targetStateFor(targetClient, target.bucket, target.prefix),
        ]);
        // A registry is copied as one only from the bucket's top.
        const policy = registry && source.prefix === '' ? registryCopyPolicy : genericCopyPolicy;
        const ctx = createCopyContext({
          source: { location: source, client: sourceClient },
          target: { location: target, client: targetClient },
          mapKey: prefixMapper(source, target),
          targetState,
          policy,
          concurrency: settings.concurrency,
        });
        const plan = await planShards(sourceClient, source.bucket, source.prefix, policy, {
          targetObjectsPerShard: 2_000,
          fast: ctx.source.fast,
        });
        const progress = out.progress('copy', { objects: plan.estimatedObjects, estimated: true });
        const outcome = await runPlan(ctx, plan, {
          onProgress: (totals: Totals) => progress.update(totals),
        });
        progress.stop(outcome.totals);
        run.exitCode = outcome.ok
          ? ExitCode.Ok
          : outcome.totals.copied + outcome.totals.skipped > 0
            ? ExitCode.Partial
            : ExitCode.Failed;
        out.result(
          { ok: outcome.ok, ...outcome.totals, failures: outcome.failures.slice(0, 20) },
          outcome.ok
            ? `copied ${outcome.totals.copied}, unchanged ${outcome.totals.skipped}, ${outcome.totals.bytesCopied} bytes`
            : `copy finished with ${outcome.totals.failed} failed objects, e.g. ${outcome.failures
                .slice(0, 3)
                .map((f) => `${f.key} (${f.code})`)
                .join(', ')}`,
        );
      } finally {
        deps.close();
      }
    });
}
