/**
 * Scheduled retention: delete expired snapshots, then the vault objects no
 * remaining snapshot uses (mark and sweep, with a grace period for running
 * backups). The policy comes from the stack (RETENTION_POLICY); a snapshot
 * made with a ttl of its own expires by it even when the policy is empty.
 */
import { z } from 'zod';
import { lambda, metrics } from './commons/aws/runtime.ts';
import { prune } from './commons/vault/prune.ts';
import { parseRetentionPolicy } from './commons/vault/retention.ts';

const pruneConfigSchema = z.object({
  RETENTION_POLICY: z.string().default('{}'),
  RETENTION_GRACE_MINUTES: z.coerce.number().int().min(0).default(60),
});

/** The schedule sends `{"dryRun": false}`; an invocation without an event prunes for real. */
const pruneEventSchema = z
  .object({ dryRun: z.boolean().default(false) })
  .nullish()
  .transform((event) => ({ dryRun: event?.dryRun ?? false }));

export const handler = lambda(pruneEventSchema, async (event, deps) => {
  const config = pruneConfigSchema.parse(process.env);
  const report = await prune(
    deps.vault,
    parseRetentionPolicy(JSON.parse(config.RETENTION_POLICY)),
    {
      now: deps.now(),
      graceMs: config.RETENTION_GRACE_MINUTES * 60_000,
      dryRun: event.dryRun,
      log: deps.log,
    },
  );
  metrics.addMetric('SnapshotsPruned', 'Count', report.deletedSnapshots.length);
  metrics.addMetric('VaultObjectsSwept', 'Count', report.deleted.keys);
  return {
    deletedSnapshots: report.deletedSnapshots,
    deleted: report.deleted,
    keptForGrace: report.keptForGrace,
    sweepSkipped: report.sweepSkipped ?? null,
    failedDeletes: report.failedDeletes.length,
  };
});
