/**
 * Prune's outcome in words for people: what the grace period kept, and when
 * a prune again would delete it.
 */
import type { PruneReport } from './prune.ts';
import { describeAge, KeepRule } from './retention.ts';

/**
 * What the grace period kept, in words, or undefined when it kept nothing.
 * When it kept all that prune would otherwise have deleted, it says so
 * plainly: such a prune must not look like one that found nothing to do.
 * `graceSetting` names where the caller's grace period is set.
 */
export function describeGrace(report: PruneReport, graceSetting: string): string | undefined {
  const snapshots = report.plan.keep.filter((v) => v.rule === KeepRule.GracePeriod);
  const keys = report.keptForGrace.keys;
  if (snapshots.length === 0 && keys === 0) return undefined;
  const grace = `${describeAge(report.plan.graceMs)} grace period`;
  const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;
  const lastEnd = snapshots
    .map((v) => v.until ?? '')
    .sort()
    .at(-1);
  const running = report.plan.running.map((r) => r.id);
  const kept = [
    ...(snapshots.length === 0
      ? []
      : [
          `${plural(snapshots.length, 'snapshot')} the policy expires, superseded less than ${describeAge(report.plan.graceMs)} ago (until ${lastEnd})`,
        ]),
    ...(keys === 0
      ? []
      : [
          `${plural(keys, 'unreferenced object')} (${report.keptForGrace.bytes} bytes) written after ${report.keptForGrace.cutoff} (${running.length === 0 ? 'now' : `the start of the running backup ${running[0]}`} less the grace period)`,
        ]),
  ].join(', and ');
  if (report.deletedSnapshots.length > 0 || report.deleted.keys > 0)
    return `the ${grace} also kept ${kept}`;
  // Unreferenced keys are kept for the grace period after they were written: at most from now.
  const graceEnds =
    keys > 0 ? new Date(Date.parse(report.plan.now) + report.plan.graceMs).toISOString() : lastEnd;
  const later =
    running.length === 0 ? `after ${graceEnds}` : 'once the running backup has finished';
  return `the ${grace}${running.length === 0 ? '' : ` and the running backup ${running.join(', ')}`} kept everything this prune would delete: ${kept}; prune again ${later}, or set a shorter grace period (${graceSetting}) when no backup is running`;
}

/**
 * What deleting meant on this vault, in words, or undefined when it has no
 * Object Lock: on a locked vault a delete hides an object behind a delete
 * marker, and its locked version stays (and takes space) until its
 * retention ends. Prune never shortens a retention or bypasses a lock.
 */
export function describeObjectLock(report: PruneReport): string | undefined {
  const lock = report.objectLock;
  if (lock.state === 'none') return undefined;
  const deleted = report.deleted.keys;
  const verb = report.dryRun ? 'would leave' : 'left';
  if (lock.state === 'unknown')
    return `the vault's Object Lock configuration could not be read (${lock.why}); if the bucket has a default retention, the ${deleted} objects deleted keep their locked versions until it ends`;
  const latest = new Date(Date.parse(report.plan.now) + lock.days * 86_400_000).toISOString();
  return `the vault has Object Lock (${lock.mode}, ${lock.days} days): the ${deleted} objects deleted ${verb} delete markers, and their versions stay locked for ${lock.days} days after each was written (until ${latest} at the latest), taking space until then and until the bucket's noncurrent-version rule removes them; prune bypasses no retention`;
}
