/**
 * Scheduled retention: delete expired snapshots, then the vault objects no
 * remaining snapshot uses (mark and sweep, with a grace period for running
 * backups). The policy comes from the stack (RETENTION_POLICY); a snapshot
 * made with a ttl of its own expires by it even when the policy is empty.
 */
import { z } from 'zod';
import { lambda, metrics, wholeNumberText } from './commons/aws/runtime.ts';
import { InputError, issueLines } from './commons/errors.ts';
import { prune } from './commons/vault/prune.ts';
import { describeObjectLock } from './commons/vault/prune-report.ts';
import { parseRetentionPolicy, type RetentionPolicy } from './commons/vault/retention.ts';

const MISCONFIGURED =
  'the prune function is misconfigured (its environment comes from the CDK stack)';

const pruneConfigSchema = z.object({
  RETENTION_POLICY: z.string().default('{}'),
  RETENTION_GRACE_MINUTES: wholeNumberText.default(60),
});

let config: Readonly<{ policy: RetentionPolicy; graceMs: number }> | undefined;

/** The environment, parsed once per container: a bad variable is named, its value never echoed. */
function pruneConfig(env: NodeJS.ProcessEnv = process.env) {
  if (config !== undefined) return config;
  const parsed = pruneConfigSchema.safeParse(env);
  if (!parsed.success)
    throw new InputError(MISCONFIGURED, issueLines(parsed.error, '(environment)'));
  let policy: unknown;
  try {
    policy = JSON.parse(parsed.data.RETENTION_POLICY);
  } catch {
    throw new InputError(MISCONFIGURED, [
      'RETENTION_POLICY: expected JSON of a retention policy; set retentionPolicy on the stack',
    ]);
  }
  config = Object.freeze({
    policy: parseRetentionPolicy(policy),
    graceMs: parsed.data.RETENTION_GRACE_MINUTES * 60_000,
  });
  return config;
}

/**
 * The schedule sends `{"dryRun": false}`; an invocation without an event
 * prunes for real. Strict: a misspelt `dryrun` would otherwise be dropped and
 * the run would delete.
 */
const pruneEventSchema = z
  .strictObject({ dryRun: z.boolean().default(false) })
  .nullish()
  .transform((event) => ({ dryRun: event?.dryRun ?? false }));

export const handler = lambda(pruneEventSchema, async (event, deps) => {
  const { policy, graceMs } = pruneConfig();
  const report = await prune(deps.vault, policy, {
    now: deps.now(),
    graceMs,
    dryRun: event.dryRun,
    log: deps.log,
  });
  metrics.addMetric('SnapshotsPruned', 'Count', report.deletedSnapshots.length);
  metrics.addMetric('VaultObjectsSwept', 'Count', report.deleted.keys);
  return {
    deletedSnapshots: report.deletedSnapshots,
    deleted: report.deleted,
    keptForGrace: report.keptForGrace,
    sweepSkipped: report.sweepSkipped ?? null,
    failedDeletes: report.failedDeletes.length,
    objectLock: describeObjectLock(report) ?? null,
  };
});
