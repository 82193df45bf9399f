/**
 * `regvault snapshots list|show|delete|prune`.
 */
import type { Command } from 'commander';
import { deleteSnapshot, prune } from '../../functions/commons/vault/prune.ts';
import { describeGrace, describeObjectLock } from '../../functions/commons/vault/prune-report.ts';
import {
  parseRetentionPolicy,
  type SnapshotVerdict,
} from '../../functions/commons/vault/retention.ts';
import { reapDeadRuns } from '../../functions/commons/vault/run-lease.ts';
import { listSnapshots } from '../../functions/commons/vault/store.ts';
import { commandWithSettings, type Flags, reporter, run, settingsOf } from '../context.ts';
import { depsFor } from '../deps.ts';
import { checkSnapshotId, snapshotNamed } from '../flags.ts';
import { ExitCode } from '../outcome.ts';
import { numbersOf } from '../settings.ts';

/** Adds the command to the program. */
export function snapshotsCommand(program: Command): void {
  const snapshots = program.command('snapshots').description('list, show and delete snapshots');
  commandWithSettings(snapshots, 'list', 'every snapshot, oldest first').action(
    async (flags: Flags) => {
      const settings = await settingsOf(flags);
      const out = reporter(settings);
      const deps = depsFor(settings);
      try {
        const all = await listSnapshots(deps.vault);
        if (settings.json) {
          for (const m of all)
            out.event('snapshot', m.id, {
              id: m.id,
              status: m.status,
              objects: m.counts.objects,
              bytes: m.bytes,
              source: m.source.bucket,
            });
          out.result({ snapshots: all.length }, `${all.length} snapshots`);
        } else {
          process.stdout.write(
            `${['ID'.padEnd(24), 'STATUS'.padEnd(9), 'OBJECTS'.padStart(9), 'BYTES'.padStart(14), '  SOURCE'].join(' ')}\n`,
          );
          for (const m of all)
            process.stdout.write(
              `${[m.id.padEnd(24), m.status.padEnd(9), String(m.counts.objects).padStart(9), String(m.bytes).padStart(14), `  s3://${m.source.bucket}`].join(' ')}\n`,
            );
        }
      } finally {
        deps.close();
      }
    },
  );
  commandWithSettings(snapshots, 'show', 'one snapshot manifest')
    .argument('<id>', 'snapshot id, or latest (the newest complete snapshot)')
    .action(async (id: string, flags: Flags) => {
      const settings = await settingsOf(flags);
      checkSnapshotId(id, '<id>');
      const out = reporter(settings);
      const deps = depsFor(settings);
      try {
        const manifest = await snapshotNamed(deps.vault, id, '<id>', false);
        out.result({ manifest }, JSON.stringify(manifest, null, 2));
      } finally {
        deps.close();
      }
    });
  commandWithSettings(
    snapshots,
    'delete',
    "delete a snapshot's manifest, inventory and objects (pool blobs stay until a prune)",
  )
    .argument('<id>', 'snapshot id')
    .action(async (id: string, flags: Flags) => {
      const settings = await settingsOf(flags);
      checkSnapshotId(id, '<id>', false);
      const out = reporter(settings);
      const deps = depsFor(settings);
      try {
        const manifest = await snapshotNamed(deps.vault, id, '<id>', false);
        // Its own objects/ stay for the next prune's sweep: later snapshots may point into them.
        const deleted = await deleteSnapshot(deps.vault, manifest);
        out.result(
          { deleted: id, report: deleted },
          `deleted snapshot ${id}; objects no other snapshot uses go at the next \`regvault snapshots prune\``,
        );
      } finally {
        deps.close();
      }
    });

  commandWithSettings(
    snapshots,
    'prune',
    'delete expired snapshots, then the vault objects no remaining snapshot uses',
  )
    .option('--keep-last <n>', 'keep the newest N snapshots of each source')
    .option('--ttl-days <days>', 'expire snapshots older than this')
    .option(
      '--grace-minutes <m>',
      'grace period: keep snapshots superseded less than this ago, and unreferenced objects written less than this before now (or before a running backup started)',
      '60',
    )
    .option('--dry-run', 'say what would be deleted, delete nothing')
    .action(async (flags: Flags) => {
      const settings = await settingsOf(flags);
      const numbers = numbersOf(flags, ['keepLast', 'ttlDays', 'graceMinutes']);
      const policy = parseRetentionPolicy({
        ...(numbers.keepLast === undefined ? {} : { keepLast: numbers.keepLast }),
        ...(numbers.ttlDays === undefined ? {} : { ttlDays: numbers.ttlDays }),
      });
      const out = reporter(settings);
      const deps = depsFor(settings);
      try {
        // A run whose lease died is ended first (its snapshot marked failed), so its data goes now.
        const ended =
          flags['dryRun'] === true ? [] : await reapDeadRuns(deps.vault, deps.now(), deps.log);
        for (const run of ended)
          out.event('run-ended', `ended dead run ${run.runId}: ${run.reason}`, { ...run });
        const report = await prune(deps.vault, policy, {
          now: deps.now(),
          graceMs: (numbers.graceMinutes ?? 60) * 60_000,
          dryRun: flags['dryRun'] === true,
          log: deps.log,
        });
        run.exitCode =
          report.failedDeletes.length > 0 || report.sweepSkipped !== undefined
            ? ExitCode.Partial
            : ExitCode.Ok;
        const kept = report.plan.keep.map(({ id, status, rule, reason, until }) => ({
          id,
          status,
          rule,
          reason,
          ...(until === undefined ? {} : { until }),
        }));
        const grace = describeGrace(report, '--grace-minutes');
        const objectLock = describeObjectLock(report);
        const verdicts = [...report.plan.expire, ...report.plan.keep];
        const width = Math.max(0, ...verdicts.map((v) => v.rule.length));
        const line = (v: SnapshotVerdict) => `  ${v.id}  ${v.rule.padEnd(width)}  ${v.reason}`;
        const count = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;
        out.result(
          {
            ...report,
            kept,
            ...(grace === undefined ? {} : { grace }),
            ...(objectLock === undefined ? {} : { objectLockNote: objectLock }),
          },
          [
            `${report.dryRun ? 'would delete' : 'deleted'} ${count(report.deletedSnapshots.length, 'snapshot')} and ${count(report.deleted.keys, 'object')} (${report.deleted.bytes} bytes)${report.plan.expire.length === 0 ? '' : ':'}`,
            ...report.plan.expire.map(line),
            `kept ${count(kept.length, 'snapshot')}${kept.length === 0 ? '' : ':'}`,
            ...report.plan.keep.map(line),
            ...(grace === undefined ? [] : [grace]),
            ...(objectLock === undefined ? [] : [objectLock]),
            ...(report.sweepSkipped === undefined ? [] : [`sweep skipped: ${report.sweepSkipped}`]),
          ].join('\n'),
        );
      } finally {
        deps.close();
      }
    });
}
