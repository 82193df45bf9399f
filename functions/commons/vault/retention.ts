/**
 * Snapshot retention and garbage collection of the vault. Expired snapshots
 * lose their manifest first (so nothing can pick them any more), then their
 * own files; then a mark and sweep removes pool blobs and snapshot objects
 * that no remaining snapshot refers to. Keys written after the oldest running
 * backup started (less a grace period) are never swept, because a running
 * backup writes objects before its inventory names them. The rules and why
 * they are safe: docs/integrity.md.
 */
import {
  DeleteObjectCommand,
  DeleteObjectsCommand,
  ListObjectsV2Command,
  type ListObjectsV2CommandOutput,
} from '@aws-sdk/client-s3';
import { z } from 'zod';
import { inventoryRecordSchema } from '../copy/model.ts';
import { inputErrorFrom, messageOf } from '../errors.ts';
import type { StepLogger } from '../workflows/deps.ts';
import { copyJobSchema, jobKey } from '../workflows/job.ts';
import { type SnapshotManifest, SnapshotStatus, vaultKeys } from './format.ts';
import {
  getBytes,
  getJson,
  gunzipLines,
  listSnapshotIds,
  listSnapshots,
  readInventory,
  readManifest,
  rootOf,
  type Vault,
} from './store.ts';

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

/** The backup workflow times out after 48 hours; a manifest still `running` long after that belongs to a dead run. */
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
  /** Snapshot folders without a manifest (a prune that stopped half-way, or a backup that is just starting). */
  readonly withoutManifest: string[];
}

export interface PlanOptions {
  /** A `running` manifest older than this is treated as failed (default `STALE_RUNNING_AFTER_MS`). */
  readonly staleRunningAfterMs?: number;
  /**
   * Covers clock skew and the moments between a backup picking its base and
   * writing its running manifest: keys written later than (the oldest running
   * backup's start, or now, whichever is earlier) minus this are never swept,
   * and a complete snapshot superseded less than this ago is kept. Default one hour.
   */
  readonly graceMs?: number;
}

const sourceOf = (m: SnapshotManifest) =>
  `${m.source.endpoint ?? ''}|${m.source.bucket}|${m.source.prefix}`;
const startedMs = (m: SnapshotManifest) => Date.parse(m.startedAt);

/** The snapshot a running backup builds on: from its job when planned, else as discovery picks it. */
async function runningBackupOf(
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
    adoptsFromPool: base === undefined && manifest.layout === 'registry',
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

function describeAge(ms: number): string {
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
  staleAfterMs: number,
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
      if (isRunning && age <= staleAfterMs) {
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
        ? `running since ${m.startedAt}, long past the backup timeout`
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
  for (const manifest of manifests) {
    if (
      manifest.status === SnapshotStatus.Running &&
      now.getTime() - startedMs(manifest) <= staleAfterMs
    ) {
      running.set(manifest.id, await runningBackupOf(vault, manifest, manifests));
    }
  }
  const { keep, expire } = judge(manifests, policy, now, running, staleAfterMs, graceMs);
  return {
    now: now.toISOString(),
    graceMs,
    keep,
    expire,
    running: [...running.values()],
    withoutManifest: ids.filter((id) => !withManifest.has(id)),
  };
}

export interface PruneOptions extends PlanOptions {
  readonly now: Date;
  /** Plan, mark and list, and report what would go; delete nothing. */
  readonly dryRun?: boolean;
  readonly log?: StepLogger;
}

export interface PruneReport {
  readonly dryRun: boolean;
  readonly plan: PrunePlan;
  /** Snapshots whose manifest was deleted (or would be, in a dry run). */
  readonly deletedSnapshots: string[];
  /** Keys deleted (or that would be): expired snapshots' own files, their runs, unreferenced objects and pool blobs. */
  readonly deleted: { readonly keys: number; readonly bytes: number; readonly poolBlobs: number };
  /** Unreferenced keys left alone because they are newer than the cutoff. */
  readonly keptForGrace: { readonly keys: number; readonly bytes: number; readonly cutoff: string };
  /** Keys referenced by the remaining snapshots (their inventories and running backups' records). */
  readonly marked: number;
  /** Why pool blobs were not swept this time, when they were not. */
  readonly poolSweepPostponed?: string;
  /** Why nothing was swept, when garbage collection was stopped for safety. */
  readonly sweepSkipped?: string;
  readonly failedDeletes: Array<{ key: string; message: string }>;
}

interface ListedKey {
  readonly key: string;
  readonly size: number;
  readonly lastModified: number;
}

/** Every key under a prefix with its size and LastModified (ms). */
async function listDated(vault: Vault, prefix: string): Promise<ListedKey[]> {
  const keys: ListedKey[] = [];
  let token: string | undefined;
  do {
    const page: ListObjectsV2CommandOutput = await vault.client.send(
      new ListObjectsV2Command({
        Bucket: vault.location.bucket,
        Prefix: prefix,
        ...(token === undefined ? {} : { ContinuationToken: token }),
      }),
    );
    for (const item of page.Contents ?? []) {
      // A key without a date is treated as brand new: never swept on a guess.
      keys.push({
        key: item.Key ?? '',
        size: item.Size ?? 0,
        lastModified: item.LastModified?.getTime() ?? Number.POSITIVE_INFINITY,
      });
    }
    token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
  } while (token !== undefined);
  return keys;
}

/** Deletes keys in batches of 1000; returns the keys that could not be deleted. */
async function deleteKeys(
  vault: Vault,
  keys: readonly string[],
): Promise<Array<{ key: string; message: string }>> {
  const failed: Array<{ key: string; message: string }> = [];
  for (let start = 0; start < keys.length; start += 1000) {
    const batch = keys.slice(start, start + 1000);
    try {
      const response = await vault.client.send(
        new DeleteObjectsCommand({
          Bucket: vault.location.bucket,
          Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
        }),
      );
      for (const error of response.Errors ?? [])
        failed.push({
          key: error.Key ?? '',
          message: `${error.Code ?? 'Error'}: ${error.Message ?? ''}`,
        });
    } catch (err) {
      for (const key of batch) failed.push({ key, message: messageOf(err) });
    }
  }
  return failed;
}

const runRecordSchema = z.object({ r: inventoryRecordSchema });

/** Vault keys a running backup has recorded so far (its record files; see workflows/worker.ts). */
async function recordedKeys(vault: Vault, runId: string): Promise<string[]> {
  const keys: string[] = [];
  for (const file of await listDated(vault, `${vaultKeys.run(rootOf(vault), runId)}records/`)) {
    const bytes = await getBytes(vault, file.key);
    if (bytes === undefined) continue;
    for (const line of await gunzipLines(bytes)) {
      const parsed = runRecordSchema.safeParse(line);
      if (parsed.success) keys.push(parsed.data.r.targetKey);
    }
  }
  return keys;
}

/**
 * Deletes one snapshot the safe way: its manifest first (so nothing picks it
 * any more), then its inventory, catalog, cluster files and its run's working
 * files. Its `objects/` stay: later snapshots may refer to them, and the next
 * prune sweeps the ones nobody does. Keys in `protect` are never deleted.
 */
export async function deleteSnapshot(
  vault: Vault,
  manifest: SnapshotManifest,
  options: { readonly dryRun?: boolean; readonly protect?: ReadonlySet<string> } = {},
): Promise<{ keys: number; bytes: number; failed: Array<{ key: string; message: string }> }> {
  const root = rootOf(vault);
  const manifestKey = vaultKeys.manifest(root, manifest.id);
  const own = (await listDated(vault, vaultKeys.snapshot(root, manifest.id))).filter(
    (k) =>
      !k.key.startsWith(vaultKeys.objects(root, manifest.id)) &&
      options.protect?.has(k.key) !== true,
  );
  const run = await listDated(vault, vaultKeys.run(root, manifest.runId));
  const files = [...own.filter((k) => k.key !== manifestKey), ...run];
  let failed: Array<{ key: string; message: string }> = [];
  if (options.dryRun !== true) {
    await vault.client.send(
      new DeleteObjectCommand({ Bucket: vault.location.bucket, Key: manifestKey }),
    );
    failed = await deleteKeys(
      vault,
      files.map((k) => k.key),
    );
  }
  return {
    keys: 1 + files.length - failed.length,
    bytes: [...own, ...run].reduce((sum, k) => sum + k.size, 0),
    failed,
  };
}

/**
 * Watches for backups that start while prune runs and could reuse any pool
 * blob (no base snapshot). A snapshot folder without a manifest counts as one
 * when it holds a key newer than the cutoff: discovery writes the cluster
 * files just before the manifest. Older manifest-less folders are leftovers.
 */
class AdopterWatch {
  readonly #vault: Vault;
  readonly #settled = new Set<string>();
  readonly #manifests: readonly SnapshotManifest[];
  readonly #cutoffMs: number;

  constructor(
    vault: Vault,
    settled: Iterable<string>,
    manifests: readonly SnapshotManifest[],
    cutoffMs: number,
  ) {
    this.#vault = vault;
    for (const id of settled) this.#settled.add(id);
    this.#manifests = manifests;
    this.#cutoffMs = cutoffMs;
  }

  /** The id of a backup that may adopt pool blobs, if one appeared. */
  async check(): Promise<string | undefined> {
    for (const id of await listSnapshotIds(this.#vault)) {
      if (this.#settled.has(id)) continue;
      const manifest = await readManifest(this.#vault, id);
      if (manifest === undefined) {
        const keys = await listDated(this.#vault, vaultKeys.snapshot(rootOf(this.#vault), id));
        if (keys.some((k) => k.lastModified > this.#cutoffMs)) return id;
        this.#settled.add(id);
        continue;
      }
      if (
        manifest.status === SnapshotStatus.Running &&
        (await runningBackupOf(this.#vault, manifest, this.#manifests)).adoptsFromPool
      )
        return id;
      // A backup with a base only reuses what that base (kept, and marked) refers to.
      this.#settled.add(id);
    }
    return undefined;
  }
}

/**
 * Applies `policy`: deletes expired snapshots (manifest first, then their own
 * files and their run's working files), then sweeps pool blobs and objects
 * of deleted snapshots that no remaining snapshot (complete, failed or
 * running) refers to, except keys newer than the cutoff. A key referenced by
 * a remaining snapshot is never deleted; when an inventory cannot be read,
 * nothing is swept.
 */
export async function prune(
  vault: Vault,
  policy: RetentionPolicy,
  options: PruneOptions,
): Promise<PruneReport> {
  const dryRun = options.dryRun ?? false;
  const graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
  const log = options.log;
  const root = rootOf(vault);
  const plan = await planPrune(vault, policy, options.now, options);
  const failedDeletes: PruneReport['failedDeletes'] = [];
  let deletedKeys = 0;
  let deletedBytes = 0;
  let poolBlobs = 0;
  const expiredIds = new Set(plan.expire.map((v) => v.id));
  const manifests = await listSnapshots(vault);
  const expired = manifests.filter((m) => expiredIds.has(m.id));
  const remaining = manifests.filter((m) => !expiredIds.has(m.id));
  const cutoffMs =
    Math.min(options.now.getTime(), ...plan.running.map((r) => Date.parse(r.startedAt))) - graceMs;
  const cutoff = new Date(cutoffMs).toISOString();

  // 1. Mark: every key a remaining snapshot refers to, and what running backups have recorded so far.
  const marked = new Set<string>();
  let sweepSkipped: string | undefined;
  try {
    for (const manifest of remaining) {
      for (const record of await readInventory(vault, manifest)) marked.add(record.targetKey);
      if (manifest.status === SnapshotStatus.Running)
        for (const key of await recordedKeys(vault, manifest.runId)) marked.add(key);
    }
  } catch (err) {
    sweepSkipped = `cannot read what the remaining snapshots refer to (${messageOf(err)}); nothing was swept: fix or delete that snapshot and prune again`;
    log?.warn('prune skips garbage collection', { reason: sweepSkipped });
  }

  // 2. Expired snapshots: the manifest first, so no restore or backup picks the snapshot while its files go.
  for (const manifest of expired) {
    const result = await deleteSnapshot(vault, manifest, { dryRun, protect: marked });
    failedDeletes.push(...result.failed);
    deletedKeys += result.keys;
    deletedBytes += result.bytes;
    log?.info('prune deleted an expired snapshot', {
      snapshotId: manifest.id,
      reason: plan.expire.find((v) => v.id === manifest.id)?.reason,
    });
  }
  const report = (grace: { keys: number; bytes: number }, postponed?: string): PruneReport => ({
    dryRun,
    plan,
    deletedSnapshots: expired.map((m) => m.id),
    deleted: { keys: deletedKeys, bytes: deletedBytes, poolBlobs },
    keptForGrace: { ...grace, cutoff },
    marked: marked.size,
    failedDeletes,
    ...(postponed === undefined ? {} : { poolSweepPostponed: postponed }),
    ...(sweepSkipped === undefined ? {} : { sweepSkipped }),
  });
  if (sweepSkipped !== undefined) return report({ keys: 0, bytes: 0 });

  // 3. Sweep candidates: pool blobs, and what is left in snapshot folders without a manifest.
  const watch = new AdopterWatch(
    vault,
    // Only what the plan judged is settled: a backup that started since is checked.
    [...plan.keep, ...plan.expire].map((v) => v.id),
    manifests,
    cutoffMs,
  );
  const adopter = plan.running.find((r) => r.adoptsFromPool);
  const postpone = (id: string | undefined) =>
    id === undefined
      ? undefined
      : `backup ${id} started during the prune with no snapshot to build on`;
  let poolSweepPostponed =
    adopter !== undefined
      ? `the running backup ${adopter.id} has no snapshot to build on and may reuse any pool blob`
      : postpone(await watch.check());
  const orphanFolders: string[] = [...expiredIds];
  for (const id of plan.withoutManifest) {
    // A manifest that appeared since the plan is a backup starting: its folder is its own.
    if ((await readManifest(vault, id)) === undefined) orphanFolders.push(id);
  }
  const candidates: Array<ListedKey & { pool: boolean }> = [];
  for (const key of await listDated(vault, `${root}blobs/`))
    candidates.push({ ...key, pool: true });
  for (const id of orphanFolders) {
    for (const key of await listDated(vault, vaultKeys.snapshot(root, id))) {
      // In a dry run the expired snapshots' own files are still there, and already counted above.
      if (dryRun && expiredIds.has(id) && !key.key.startsWith(vaultKeys.objects(root, id)))
        continue;
      candidates.push({ ...key, pool: false });
    }
  }
  let graceKeys = 0;
  let graceBytes = 0;
  const doomed: Array<ListedKey & { pool: boolean }> = [];
  for (const candidate of candidates) {
    if (marked.has(candidate.key)) continue;
    if (candidate.pool && poolSweepPostponed !== undefined) continue;
    if (candidate.lastModified > cutoffMs) {
      graceKeys++;
      graceBytes += candidate.size;
      continue;
    }
    doomed.push(candidate);
  }

  // 4. Delete, checking before each batch of pool blobs (the first too: listing the pool
  // can take minutes) that no backup started that could reuse one.
  for (let start = 0; start < doomed.length; start += 1000) {
    let batch = doomed.slice(start, start + 1000);
    if (poolSweepPostponed === undefined && batch.some((k) => k.pool))
      poolSweepPostponed = postpone(await watch.check());
    if (poolSweepPostponed !== undefined) batch = batch.filter((k) => !k.pool);
    if (batch.length === 0) continue;
    const failed = dryRun
      ? []
      : await deleteKeys(
          vault,
          batch.map((k) => k.key),
        );
    const failedSet = new Set(failed.map((f) => f.key));
    failedDeletes.push(...failed);
    for (const key of batch) {
      if (failedSet.has(key.key)) continue;
      deletedKeys++;
      deletedBytes += key.size;
      if (key.pool) poolBlobs++;
    }
  }
  log?.info('prune swept the vault', {
    dryRun,
    deletedKeys,
    deletedBytes,
    poolBlobs,
    keptForGrace: graceKeys,
    cutoff,
    poolSweepPostponed,
  });
  return report({ keys: graceKeys, bytes: graceBytes }, poolSweepPostponed);
}

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

/** Parses a retention policy at the edge (CLI flags, execution input), naming every bad field. */
export function parseRetentionPolicy(raw: unknown): RetentionPolicy {
  const parsed = retentionPolicySchema.safeParse(raw ?? {});
  if (parsed.success) return parsed.data;
  throw inputErrorFrom(parsed.error, 'retention policy', '(policy)');
}
