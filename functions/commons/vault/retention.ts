/**
 * The retention decision: which snapshots a policy (or a snapshot's own ttl)
 * keeps and which expire, judged from the manifests and the running backups
 * alone, each with the rule and the reason. Nothing here deletes: the sweep
 * is vault/prune.ts. The rules and why they are safe: docs/integrity.md.
 */
import { z } from 'zod';
import { inputErrorFrom } from '../errors.ts';
import { type RepositorySelection, selectionText } from '../registry/selection.ts';
import { type SnapshotManifest, SnapshotStatus } from './format.ts';
import { liveRuns } from './run-lease.ts';
import { copyJobSchema, jobKey } from './runs.ts';
import { getJson, listSnapshotIds, listSnapshots, type Vault } from './store.ts';

export const retentionPolicySchema = z
  .object({
    /** Keep the newest N complete snapshots of each source. */
    keepLast: z.number().int().min(1).optional(),
    /** Keep complete snapshots younger than this many days (Velero's `ttl`). */
    ttlDays: z.number().positive().optional(),
  })
  .strict();
/**
 * Which snapshots to keep. Each rule names snapshots to keep; a complete
 * snapshot that no rule keeps expires (with both rules, keepLast is a floor
 * under the ttl). The newest complete snapshot of each source is always kept.
 * A snapshot that carries its own `expiresAt` (a backup given a ttl) is
 * judged by it instead, and does not count towards keepLast.
 */
export type RetentionPolicy = z.infer<typeof retentionPolicySchema>;

const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * For manifests written before run leases: the backup workflow times out
 * after 48 hours, so one still `running` long after that belongs to a dead run.
 */
export const STALE_RUNNING_AFTER_MS = 3 * DAY_MS;

/** Default grace period: covers clock skew between the S3 server and the backup's clock. */
export const DEFAULT_GRACE_MS = 60 * 60 * 1000;

/** Why prune keeps a snapshot: the rule that keeps it, for programs (`reason` says it in words). */
export const KeepRule = {
  /** A running backup records its unchanged objects with this snapshot's keys. */
  BaseOfRunningBackup: 'base-of-running-backup',
  /** A backup still running (younger than the backup timeout). */
  Running: 'running',
  /** The newest complete snapshot of its source: never expired. */
  NewestComplete: 'newest-complete',
  /** The policy (or its own ttl) would expire it, but it was superseded less than the grace period ago. */
  GracePeriod: 'grace-period',
  /** It carries its own ttl, and that has not ended. */
  OwnTtl: 'own-ttl',
  /** One of the newest `keepLast` complete snapshots of its source. */
  KeepLast: 'keep-last',
  /** Younger than the policy's `ttlDays`. */
  WithinTtl: 'within-ttl',
  /** The policy has neither rule. */
  NoPolicyRule: 'no-policy-rule',
  /** Failed (or a dead run), but newer than any complete snapshot of its source: kept to diagnose. */
  NewestFailed: 'newest-failed',
} as const;
export type KeepRule = (typeof KeepRule)[keyof typeof KeepRule];

/** Why prune expires a snapshot. */
export const ExpireRule = {
  /** Its own ttl ended. */
  OwnTtlEnded: 'own-ttl-ended',
  /** Not one of the last `keepLast`, and/or older than `ttlDays`. */
  Policy: 'policy',
  /** Failed (or a dead run) and older than a complete snapshot of its source. */
  FailedSuperseded: 'failed-superseded',
} as const;
export type ExpireRule = (typeof ExpireRule)[keyof typeof ExpireRule];

export interface SnapshotVerdict {
  readonly id: string;
  readonly status: SnapshotManifest['status'];
  readonly startedAt: string;
  /** Snapshots of one source are judged together: `endpoint|bucket|prefix`. */
  readonly source: string;
  readonly rule: KeepRule | ExpireRule;
  readonly reason: string;
  /** With the grace-period rule: when the grace ends and a prune may expire it. */
  readonly until?: string;
}

/** A backup in progress, as prune must respect it. */
export interface RunningBackup {
  readonly id: string;
  readonly runId: string;
  readonly startedAt: string;
  /** The complete snapshot it builds on (its unchanged objects are recorded with that snapshot's keys). */
  readonly baseSnapshotId?: string;
  /**
   * True when it has no base snapshot: it then skips any blob it finds in the
   * pool, so pool blobs it has not recorded yet may be ones no snapshot names.
   */
  readonly adoptsFromPool: boolean;
}

export interface PrunePlan {
  readonly now: string;
  /** The grace period the plan was made with. */
  readonly graceMs: number;
  readonly keep: SnapshotVerdict[];
  readonly expire: SnapshotVerdict[];
  readonly running: RunningBackup[];
  /**
   * `running` manifests of runs that died: their lease is gone or expired
   * (or, written before leases, they are older than the stale age). Judged
   * as failed; their partial data is not kept for them.
   */
  readonly dead: string[];
  /** Snapshot folders without a manifest (a prune that stopped half-way, or a backup that is just starting). */
  readonly withoutManifest: string[];
}

export interface PlanOptions {
  /**
   * A `running` manifest written before run leases, older than this, is
   * treated as failed (default `STALE_RUNNING_AFTER_MS`); a leased one is
   * running while its lease is live.
   */
  readonly staleRunningAfterMs?: number;
  /**
   * Covers clock skew and the moments between a backup picking its base and
   * writing its running manifest: keys written later than (the oldest running
   * backup's start, or now, whichever is earlier) minus this are never swept,
   * and a complete snapshot superseded less than this ago is kept. Default one hour.
   */
  readonly graceMs?: number;
}

/**
 * The line of snapshots a backup of `source` (of `selection`'s repositories
 * only, for a partial one) belongs to: `endpoint|bucket|prefix`, and the
 * selection. A partial backup builds on the last of its line, and retention
 * judges each line on its own, so a partial snapshot never takes a place of
 * the whole registry's under keepLast, nor counts as its newest.
 */
export const lineOf = (
  source: {
    readonly endpoint?: string | undefined;
    readonly bucket: string;
    readonly prefix: string;
  },
  selection: RepositorySelection | undefined,
) =>
  `${source.endpoint ?? ''}|${source.bucket}|${source.prefix}${selection === undefined ? '' : `|${selectionText(selection)}`}`;

/** Snapshots of one source (and selection) are judged together: lineOf. */
export const sourceOf = (m: SnapshotManifest) => lineOf(m.source, m.selection);
/** When a snapshot's backup started (ms). */
export const startedMs = (m: SnapshotManifest) => Date.parse(m.startedAt);

/** The snapshot a running backup builds on: from its job when planned, else as discovery picks it. */
export async function runningBackupOf(
  vault: Vault,
  manifest: SnapshotManifest,
  all: readonly SnapshotManifest[],
): Promise<RunningBackup> {
  let job: z.infer<typeof copyJobSchema> | undefined;
  try {
    job = await getJson(vault, jobKey(vault, manifest.runId), copyJobSchema);
  } catch {
    job = undefined; // an unreadable job tells nothing: infer the base below
  }
  let base: string | undefined;
  if (job?.purpose === 'backup') {
    base = job.previousSnapshotId;
  } else {
    // Discovery takes the newest complete snapshot of the same source that existed when it started.
    base = all
      .filter(
        (m) =>
          m.status === SnapshotStatus.Complete &&
          sourceOf(m) === sourceOf(manifest) &&
          m.id < manifest.id &&
          Date.parse(m.finishedAt ?? m.startedAt) <= startedMs(manifest),
      )
      .at(-1)?.id;
  }
  return {
    id: manifest.id,
    runId: manifest.runId,
    startedAt: manifest.startedAt,
    ...(base === undefined ? {} : { baseSnapshotId: base }),
    adoptsFromPool: base === undefined && manifest.layout !== 'generic',
  };
}

/**
 * The complete snapshot that first made `m` no longer the newest of its
 * source (`complete` holds that source's complete snapshots), and when.
 */
function supersededBy(
  m: SnapshotManifest,
  complete: readonly SnapshotManifest[],
): { id: string; atMs: number } | undefined {
  let first: { id: string; atMs: number } | undefined;
  for (const later of complete) {
    if (later.id <= m.id) continue;
    const atMs = Date.parse(later.finishedAt ?? later.startedAt);
    if (first === undefined || atMs < first.atMs) first = { id: later.id, atMs };
  }
  return first;
}

/** An age in words: days, hours or minutes. */
export function describeAge(ms: number): string {
  const count = (n: number, unit: string) => `${n} ${unit}${n === 1 ? '' : 's'}`;
  if (ms >= DAY_MS) return `${(ms / DAY_MS).toFixed(1)} days`;
  if (ms >= 3_600_000) return count(Math.round(ms / 3_600_000), 'hour');
  return count(Math.round(ms / 60_000), 'minute');
}

const EXPIRE_RULES = new Set<string>(Object.values(ExpireRule));
const expires = (rule: KeepRule | ExpireRule): rule is ExpireRule => EXPIRE_RULES.has(rule);

/**
 * A complete snapshot that is not its source's newest, by its own ttl or the
 * policy alone (the grace period is judged after, so its reason can say what
 * the grace saved it from).
 */
function judgeSuperseded(
  m: SnapshotManifest,
  rank: number,
  age: number,
  ownTtlEnded: boolean,
  policy: RetentionPolicy,
  ttlMs: number | undefined,
): { rule: KeepRule | ExpireRule; reason: string } {
  if (m.expiresAt !== undefined)
    return ownTtlEnded
      ? { rule: ExpireRule.OwnTtlEnded, reason: `its ttl ended at ${m.expiresAt}` }
      : { rule: KeepRule.OwnTtl, reason: `its ttl runs until ${m.expiresAt}` };
  if (policy.keepLast !== undefined && rank < policy.keepLast)
    return { rule: KeepRule.KeepLast, reason: `one of the last ${policy.keepLast}` };
  if (ttlMs !== undefined && age <= ttlMs)
    return { rule: KeepRule.WithinTtl, reason: `younger than ${policy.ttlDays} days` };
  if (policy.keepLast === undefined && ttlMs === undefined)
    return { rule: KeepRule.NoPolicyRule, reason: 'the policy has no rule' };
  const rules = [
    ...(policy.keepLast === undefined ? [] : [`not one of the last ${policy.keepLast}`]),
    ...(ttlMs === undefined ? [] : [`${describeAge(age)} old, past the ${policy.ttlDays}-day ttl`]),
  ];
  return { rule: ExpireRule.Policy, reason: rules.join(' and ') };
}

/** Judges snapshots against the policy from their manifests alone. */
function judge(
  manifests: readonly SnapshotManifest[],
  policy: RetentionPolicy,
  now: Date,
  running: ReadonlyMap<string, RunningBackup>,
  graceMs: number,
): { keep: SnapshotVerdict[]; expire: SnapshotVerdict[] } {
  const keep: SnapshotVerdict[] = [];
  const expire: SnapshotVerdict[] = [];
  const bases = new Map<string, string>();
  for (const backup of running.values())
    if (backup.baseSnapshotId !== undefined) bases.set(backup.baseSnapshotId, backup.id);
  const ttlMs = policy.ttlDays === undefined ? undefined : policy.ttlDays * DAY_MS;
  const bySource = new Map<string, SnapshotManifest[]>();
  for (const manifest of manifests)
    bySource.set(sourceOf(manifest), [...(bySource.get(sourceOf(manifest)) ?? []), manifest]);
  for (const [source, group] of bySource) {
    const verdict = (
      m: SnapshotManifest,
      rule: KeepRule | ExpireRule,
      reason: string,
      until?: string,
    ): SnapshotVerdict => ({
      id: m.id,
      status: m.status,
      startedAt: m.startedAt,
      source,
      rule,
      reason,
      ...(until === undefined ? {} : { until }),
    });
    const complete = group
      .filter((m) => m.status === SnapshotStatus.Complete)
      .sort((a, b) => b.id.localeCompare(a.id));
    const newest = complete[0];
    // Snapshots with their own ttl are judged by it, so they take no keepLast place.
    const governed = complete.filter((m) => m.expiresAt === undefined);
    for (const m of group) {
      const age = now.getTime() - startedMs(m);
      const ownTtlEnded = m.expiresAt !== undefined && Date.parse(m.expiresAt) <= now.getTime();
      const base = bases.get(m.id);
      if (base !== undefined) {
        keep.push(
          verdict(m, KeepRule.BaseOfRunningBackup, `the running backup ${base} builds on it`),
        );
        continue;
      }
      const isRunning = m.status === SnapshotStatus.Running;
      if (running.has(m.id)) {
        keep.push(verdict(m, KeepRule.Running, 'running'));
        continue;
      }
      if (m.status === SnapshotStatus.Complete) {
        if (m === newest) {
          keep.push(
            verdict(
              m,
              KeepRule.NewestComplete,
              `the newest complete snapshot of its source${ownTtlEnded ? ` (its ttl ended at ${m.expiresAt}; it goes once a newer one completes)` : ''}`,
            ),
          );
          continue;
        }
        const judged = judgeSuperseded(m, governed.indexOf(m), age, ownTtlEnded, policy, ttlMs);
        const superseded = supersededBy(m, complete);
        if (
          expires(judged.rule) &&
          superseded !== undefined &&
          now.getTime() - superseded.atMs < graceMs
        ) {
          // Discovery picks the newest complete snapshot as a base before it writes its running
          // manifest; until the grace has passed, a backup prune cannot see yet may build on this one.
          const until = new Date(superseded.atMs + graceMs).toISOString();
          keep.push(
            verdict(
              m,
              KeepRule.GracePeriod,
              `would expire (${judged.reason}), but was superseded by ${superseded.id} only ${describeAge(Math.max(0, now.getTime() - superseded.atMs))} ago, within the ${describeAge(graceMs)} grace period (a backup that started before may build on it); it may expire after ${until}`,
              until,
            ),
          );
        } else (expires(judged.rule) ? expire : keep).push(verdict(m, judged.rule, judged.reason));
        continue;
      }
      // Failed, or a running manifest of a run that died: never restorable.
      const what = isRunning
        ? m.leased === true
          ? `running since ${m.startedAt}, but its run is dead (its lease is gone or expired)`
          : `running since ${m.startedAt}, long past the backup timeout`
        : 'failed';
      if (newest !== undefined && m.id < newest.id)
        expire.push(
          verdict(
            m,
            ExpireRule.FailedSuperseded,
            `${what}, and older than the complete snapshot ${newest.id}`,
          ),
        );
      else if (ownTtlEnded)
        expire.push(
          verdict(m, ExpireRule.OwnTtlEnded, `${what}, and its ttl ended at ${m.expiresAt}`),
        );
      else if (ttlMs !== undefined && age > ttlMs)
        expire.push(
          verdict(m, ExpireRule.Policy, `${what}, and past the ${policy.ttlDays}-day ttl`),
        );
      else
        keep.push(
          verdict(
            m,
            KeepRule.NewestFailed,
            `${what}, and newer than any complete snapshot of its source (kept to diagnose)`,
          ),
        );
    }
  }
  const byId = (a: SnapshotVerdict, b: SnapshotVerdict) => a.id.localeCompare(b.id);
  return { keep: keep.sort(byId), expire: expire.sort(byId) };
}

/**
 * Which snapshots expire under `policy` (or their own `expiresAt`) at `now`,
 * and which backups are running. Never expires the newest complete snapshot
 * of a source, a running snapshot, the snapshot a running backup builds on,
 * or a complete snapshot superseded less than the grace period ago.
 */
export async function planPrune(
  vault: Vault,
  policy: RetentionPolicy,
  now: Date,
  options: PlanOptions = {},
): Promise<PrunePlan> {
  const staleAfterMs = options.staleRunningAfterMs ?? STALE_RUNNING_AFTER_MS;
  const graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
  const ids = await listSnapshotIds(vault);
  const manifests = await listSnapshots(vault);
  const withManifest = new Set(manifests.map((m) => m.id));
  const running = new Map<string, RunningBackup>();
  const dead: string[] = [];
  const live = manifests.some((m) => m.status === SnapshotStatus.Running && m.leased === true)
    ? await liveRuns(vault, now)
    : new Set<string>();
  for (const manifest of manifests) {
    if (manifest.status !== SnapshotStatus.Running) continue;
    // A leased run lives while its lease does; one written before leases, until the stale age.
    const alive =
      manifest.leased === true
        ? live.has(manifest.runId)
        : now.getTime() - startedMs(manifest) <= staleAfterMs;
    if (alive) running.set(manifest.id, await runningBackupOf(vault, manifest, manifests));
    else dead.push(manifest.id);
  }
  const { keep, expire } = judge(manifests, policy, now, running, graceMs);
  return {
    now: now.toISOString(),
    graceMs,
    keep,
    expire,
    running: [...running.values()],
    dead,
    withoutManifest: ids.filter((id) => !withManifest.has(id)),
  };
}

/** Parses a retention policy at the edge (CLI flags, execution input), naming every bad field. */
export function parseRetentionPolicy(raw: unknown): RetentionPolicy {
  const parsed = retentionPolicySchema.safeParse(raw ?? {});
  if (parsed.success) return parsed.data;
  throw inputErrorFrom(parsed.error, 'retention policy', '(policy)');
}
