/**
 * Run leases, read and written here only: `locks/<name>.json` in the vault,
 * one per source a backup is copying into this vault. A backup takes its
 * source's lease before its first vault write (a conditional PUT with
 * `If-None-Match: *`, so of two backups starting at once one wins), renews it
 * while it runs (the local runner on a timer, on AWS every step of the run)
 * and deletes it when its manifest is final. A lease that is not renewed
 * expires: the run that held it died (kill -9, a Lambda timeout, an aborted
 * execution), and whoever sees that next marks its snapshot failed with the
 * reason and may take the lease over (`If-Match` on the dead lease's ETag, so
 * of two takers one wins).
 *
 * S3 conditional writes: AWS S3 evaluates If-None-Match and If-Match on
 * PutObject (412 when the condition fails, 409 while another conditional
 * write of the key is in flight). A store that ignores them (older
 * S3-compatible servers) would let two backups start at once; every write
 * here is therefore read back and must carry this writer's nonce, which turns
 * a lost race into a refusal except when both read back before either wrote.
 */

import { createHash, randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { DeleteObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { z } from 'zod';
import { messageOf, RunLockedError } from '../errors.ts';
import { md5Base64 } from '../s3/fast-copy.ts';
import { getObjectBytes } from '../s3/get-object.ts';
import { SnapshotStatus, vaultKeys } from './format.ts';
import { listKeys, putJson, readManifest, rootOf, type Vault } from './store.ts';

/** Who holds a lease: a CLI process on a host, or an AWS Step Functions execution. */
export const leaseHolderSchema = z.object({
  via: z.enum(['cli', 'aws']),
  host: z.string().optional(),
  pid: z.number().int().positive().optional(),
  /** The execution's ARN (on AWS; a local id for local runs). */
  execution: z.string().optional(),
});
export type LeaseHolder = z.infer<typeof leaseHolderSchema>;

/** The source a lease guards, as snapshots of one source are judged together. */
export const leaseSourceSchema = z.object({
  endpoint: z.string().optional(),
  bucket: z.string(),
  prefix: z.string(),
});
export type LeaseSource = z.infer<typeof leaseSourceSchema>;

export const runLeaseSchema = z.object({
  formatVersion: z.literal(1),
  kind: z.literal('backup'),
  runId: z.string().min(1),
  snapshotId: z.string().min(1),
  source: leaseSourceSchema,
  holder: leaseHolderSchema,
  acquiredAt: z.iso.datetime(),
  renewedAt: z.iso.datetime(),
  expiresAt: z.iso.datetime(),
  /** Changes with every write: a writer that reads its own nonce back knows its write stood. */
  nonce: z.string().min(1),
});
/** `locks/<name>.json`. */
export type RunLease = z.infer<typeof runLeaseSchema>;

/** How long a lease lives unrenewed, and who takes it: from the run's dependencies. */
export interface LeaseSettings {
  readonly ttlMs: number;
  readonly holder: LeaseHolder;
}

/** This process as a lease holder on one machine. */
export function localLeaseHolder(): LeaseHolder {
  return { via: 'cli', host: hostname(), pid: process.pid };
}

/**
 * A local run renews every minute and lives two unrenewed (a process killed
 * on another machine is seen dead two minutes later; on this machine at once).
 */
export const LOCAL_LEASE_TTL_MS = 120_000;
/**
 * On AWS the steps renew: a plan or finalize Lambda runs up to 15 minutes
 * without renewing, so a lease lives 20. The EventBridge rule on the
 * execution's status ends a dead run long before that.
 */
export const AWS_LEASE_TTL_MS = 20 * 60_000;

/** The lease key of a source: a hash of it, so any endpoint, bucket and prefix make a short name. */
export function leaseKeyOf(vault: Vault, source: LeaseSource): string {
  const id = createHash('sha256')
    .update(`${source.endpoint ?? ''}|${source.bucket}|${source.prefix}`)
    .digest('hex')
    .slice(0, 24);
  return `${vaultKeys.locks(rootOf(vault))}backup-${id}.json`;
}

const statusOf = (err: unknown): number | undefined => {
  if (typeof err !== 'object' || err === null) return undefined;
  const meta: unknown = Reflect.get(err, '$metadata');
  const status =
    typeof meta === 'object' && meta !== null ? Reflect.get(meta, 'httpStatusCode') : undefined;
  return typeof status === 'number' ? status : undefined;
};

/** The lease at `key` and its ETag; undefined when there is none. */
async function readLease(
  vault: Vault,
  key: string,
): Promise<{ lease: RunLease; etag: string } | undefined> {
  try {
    const { body, response } = await getObjectBytes(vault.client, {
      Bucket: vault.location.bucket,
      Key: key,
    });
    const parsed = runLeaseSchema.safeParse(JSON.parse(Buffer.from(body).toString('utf8')));
    // A lease this version cannot read guards nothing it could honour: treated as expired.
    const lease: RunLease = parsed.success
      ? parsed.data
      : {
          formatVersion: 1,
          kind: 'backup',
          runId: '(unreadable lease)',
          snapshotId: '(unknown)',
          source: { bucket: '', prefix: '' },
          holder: { via: 'cli' },
          acquiredAt: new Date(0).toISOString(),
          renewedAt: new Date(0).toISOString(),
          expiresAt: new Date(0).toISOString(),
          nonce: 'unreadable',
        };
    return { lease, etag: response.ETag ?? '' };
  } catch (err) {
    const name = typeof err === 'object' && err !== null ? Reflect.get(err, 'name') : undefined;
    if (name === 'NoSuchKey' || name === 'NotFound' || statusOf(err) === 404) return undefined;
    throw err;
  }
}

/**
 * Writes a lease under a condition: `create` (the key must not exist) or an
 * ETag (the key must still hold that version). True when the write stood:
 * the server accepted it, or refused a retry of it whose first attempt had
 * succeeded (the lease read back carries this write's nonce).
 */
async function writeLease(
  vault: Vault,
  key: string,
  lease: RunLease,
  condition: 'create' | { etag: string },
): Promise<boolean> {
  const body = Buffer.from(`${JSON.stringify(lease, null, 2)}\n`);
  try {
    await vault.client.send(
      new PutObjectCommand({
        Bucket: vault.location.bucket,
        Key: key,
        Body: body,
        ContentType: 'application/json',
        ContentLength: body.byteLength,
        ...(condition === 'create' ? { IfNoneMatch: '*' } : { IfMatch: condition.etag }),
        ...(vault.location.contentMd5 === true ? { ContentMD5: md5Base64(body) } : {}),
      }),
    );
  } catch (err) {
    const status = statusOf(err);
    if (status !== 412 && status !== 409 && status !== 404) throw err;
  }
  // Read back: a store that ignored the condition, or a retried write whose answer was lost.
  const stood = (await readLease(vault, key))?.lease.nonce === lease.nonce;
  if (stood) writtenHere.set(`${vault.location.bucket}/${key}`, lease);
  return stood;
}

/**
 * The lease this process last wrote, by bucket and key: a step that renews
 * "unless fresh" (the plan, each count, finalize) skips the three requests
 * of a renewal while less than a quarter of the lease's life has passed
 * since. A lease renewed that recently cannot have expired, and its holder
 * (this process) is alive, so no other run can have seen it dead and taken
 * it over; the local timer always renews for real. On AWS each step is its
 * own Lambda, which never wrote the lease, so every step renews.
 */
const writtenHere = new Map<string, RunLease>();

/** The lease of `runId` at `key` if this process renewed it less than a quarter of its life ago. */
function freshHere(
  vault: Vault,
  key: string,
  runId: string,
  ttlMs: number,
  now: Date,
): RunLease | undefined {
  const mine = writtenHere.get(`${vault.location.bucket}/${key}`);
  return mine?.runId === runId && now.getTime() - Date.parse(mine.renewedAt) < ttlMs / 4
    ? mine
    : undefined;
}

/** Why a lease no longer guards its run, or undefined while it is live. */
export function deadLeaseReason(
  lease: RunLease,
  now: Date,
  alive: (pid: number) => boolean = processAlive,
): string | undefined {
  const who =
    lease.holder.via === 'aws'
      ? `the Step Functions execution ${lease.holder.execution ?? '(unknown)'}`
      : `regvault (pid ${lease.holder.pid ?? '?'} on ${lease.holder.host ?? '?'})`;
  if (Date.parse(lease.expiresAt) <= now.getTime())
    return `${who} stopped renewing the run's lease: last renewed at ${lease.renewedAt}, expired at ${lease.expiresAt} (the process was killed, or the run timed out or was aborted)`;
  if (
    lease.holder.via === 'cli' &&
    lease.holder.host === hostname() &&
    lease.holder.pid !== undefined &&
    !alive(lease.holder.pid)
  )
    return `${who} is gone (no such process on this host; it was killed or crashed) and its lease would have expired at ${lease.expiresAt}`;
  return undefined;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, owned by someone else.
    return typeof err === 'object' && err !== null && Reflect.get(err, 'code') === 'EPERM';
  }
}

/**
 * Marks the snapshot of a run that died failed, with the reason, when its
 * manifest still says running. True when it did.
 */
export async function markRunDied(
  vault: Vault,
  snapshotId: string,
  reason: string,
  now: Date,
): Promise<boolean> {
  const manifest = await readManifest(vault, snapshotId);
  if (manifest === undefined || manifest.status !== SnapshotStatus.Running) return false;
  await putJson(vault, vaultKeys.manifest(rootOf(vault), snapshotId), {
    ...manifest,
    status: SnapshotStatus.Failed,
    finishedAt: now.toISOString(),
    checks: { ...manifest.checks, workflow: { ok: false, detail: `RunDied: ${reason}` } },
  });
  return true;
}

/** What taking a lease found: the run whose dead lease it took over, if any. */
export interface TakenLease {
  readonly lease: RunLease;
  readonly replaced?: { readonly lease: RunLease; readonly reason: string };
}

/** The lease's holder and expiry in words, for the refusal. */
function describeLease(lease: RunLease): string {
  const who =
    lease.holder.via === 'aws'
      ? `the Step Functions execution ${lease.holder.execution ?? '(unknown)'}`
      : `regvault pid ${lease.holder.pid ?? '?'} on ${lease.holder.host ?? '?'}`;
  return `run ${lease.runId} (snapshot ${lease.snapshotId}, held by ${who}, started ${lease.acquiredAt}, lease renewed ${lease.renewedAt}, expires ${lease.expiresAt})`;
}

/**
 * Takes the lease of `source` for a new run, before the run writes anything.
 * A live lease of another run refuses it (RunLockedError naming that run and
 * when its lease expires), unless `breakLock` names that run. A dead lease
 * (expired, or its process gone from this host) is taken over, and its run's
 * snapshot marked failed with the reason first.
 */
export async function acquireRunLease(
  vault: Vault,
  run: { runId: string; snapshotId: string; source: LeaseSource; breakLock?: string },
  settings: LeaseSettings,
  now: Date,
): Promise<TakenLease> {
  const key = leaseKeyOf(vault, run.source);
  const fresh = (): RunLease => ({
    formatVersion: 1,
    kind: 'backup',
    runId: run.runId,
    snapshotId: run.snapshotId,
    source: run.source,
    holder: settings.holder,
    acquiredAt: now.toISOString(),
    renewedAt: now.toISOString(),
    expiresAt: new Date(now.getTime() + settings.ttlMs).toISOString(),
    nonce: randomUUID(),
  });
  for (let attempt = 0; attempt < 5; attempt++) {
    const lease = fresh();
    if (await writeLease(vault, key, lease, 'create')) return { lease };
    const held = await readLease(vault, key);
    if (held === undefined) continue; // released meanwhile: try again
    const dead = deadLeaseReason(held.lease, now);
    const broken =
      run.breakLock !== undefined && held.lease.runId === run.breakLock
        ? `its lease was broken by ${run.runId} (--break-lock ${run.breakLock}) while it was live`
        : undefined;
    const reason = dead ?? broken;
    if (reason === undefined)
      throw new RunLockedError(
        `another backup of s3://${run.source.bucket}/${run.source.prefix}${run.source.endpoint === undefined ? '' : ` at ${run.source.endpoint}`} into this vault is running: ${describeLease(held.lease)}. Wait for it to end (regvault snapshots show ${held.lease.snapshotId}); if it is dead, run again after ${held.lease.expiresAt}, when its lease expires and the next backup marks it failed, or now with --break-lock ${held.lease.runId}`,
      );
    if (await writeLease(vault, key, lease, { etag: held.etag })) {
      await markRunDied(vault, held.lease.snapshotId, reason, now);
      return { lease, replaced: { lease: held.lease, reason } };
    }
  }
  throw new RunLockedError(
    `could not take the run lease ${key}: other runs kept taking it; try again`,
  );
}

/** The lease a run lost: another run took it over (it was seen dead) or it is gone. */
export class RunLeaseLostError extends Error {
  override readonly name = 'RunLeaseLost' as const;
  /** True when no run holds the lease (released by whoever ended this run, or never taken). */
  readonly gone: boolean;
  constructor(message: string, gone: boolean) {
    super(message);
    this.gone = gone;
  }
}

/**
 * Renews a run's lease for another ttl. Throws RunLeaseLostError when the
 * lease is no longer this run's: another run saw it dead, marked this run's
 * snapshot failed and took over, so this run must not write its manifest.
 */
export async function renewRunLease(
  vault: Vault,
  run: { runId: string; source: LeaseSource },
  settings: Pick<LeaseSettings, 'ttlMs'>,
  now: Date,
  options: { readonly unlessFresh?: boolean } = {},
): Promise<RunLease> {
  const key = leaseKeyOf(vault, run.source);
  const mine =
    options.unlessFresh === true
      ? freshHere(vault, key, run.runId, settings.ttlMs, now)
      : undefined;
  if (mine !== undefined) return mine;
  for (let attempt = 0; attempt < 5; attempt++) {
    const held = await readLease(vault, key);
    if (held === undefined || held.lease.runId !== run.runId)
      throw new RunLeaseLostError(
        `run ${run.runId} lost its lease ${key}: ${held === undefined ? 'it is gone' : `run ${held.lease.runId} holds it now`} (this run was seen dead, and its snapshot marked failed)`,
        held === undefined,
      );
    const renewed: RunLease = {
      ...held.lease,
      renewedAt: now.toISOString(),
      expiresAt: new Date(now.getTime() + settings.ttlMs).toISOString(),
      nonce: randomUUID(),
    };
    if (await writeLease(vault, key, renewed, { etag: held.etag })) return renewed;
  }
  throw new RunLeaseLostError(`run ${run.runId} could not renew its lease ${key}`, false);
}

/** Deletes a run's lease if it is still this run's (its manifest is final). */
export async function releaseRunLease(
  vault: Vault,
  run: { runId: string; source: LeaseSource },
  settings?: Pick<LeaseSettings, 'ttlMs'>,
  now?: Date,
): Promise<void> {
  const key = leaseKeyOf(vault, run.source);
  // A lease this process renewed moments ago is still this run's (see writtenHere): not read again.
  const fresh =
    settings !== undefined &&
    now !== undefined &&
    freshHere(vault, key, run.runId, settings.ttlMs, now) !== undefined;
  if (!fresh) {
    const held = await readLease(vault, key);
    if (held === undefined || held.lease.runId !== run.runId) return;
  }
  await vault.client.send(new DeleteObjectCommand({ Bucket: vault.location.bucket, Key: key }));
  writtenHere.delete(`${vault.location.bucket}/${key}`);
}

/** Every lease in the vault (a few: one per source being backed up). */
export async function listRunLeases(vault: Vault): Promise<RunLease[]> {
  const leases: RunLease[] = [];
  for (const { key } of await listKeys(vault, vaultKeys.locks(rootOf(vault)))) {
    const held = await readLease(vault, key);
    if (held !== undefined) leases.push(held.lease);
  }
  return leases;
}

/**
 * Ends the runs whose leases are dead: marks each one's snapshot failed
 * with the reason and deletes its lease (if no run took it meanwhile).
 * Returns what it ended.
 */
export async function reapDeadRuns(
  vault: Vault,
  now: Date,
  log?: { warn(message: string, fields?: Record<string, unknown>): void },
): Promise<Array<{ runId: string; snapshotId: string; reason: string }>> {
  const ended: Array<{ runId: string; snapshotId: string; reason: string }> = [];
  for (const lease of await listRunLeases(vault)) {
    const reason = deadLeaseReason(lease, now);
    if (reason === undefined) continue;
    try {
      await markRunDied(vault, lease.snapshotId, reason, now);
      await releaseRunLease(vault, lease);
      ended.push({ runId: lease.runId, snapshotId: lease.snapshotId, reason });
    } catch (err) {
      log?.warn('could not end a dead run', { runId: lease.runId, error: messageOf(err) });
    }
  }
  return ended;
}

/**
 * Ends the run an execution held (the EventBridge rule on an execution that
 * was aborted, timed out or failed): marks its snapshot failed with `reason`
 * and deletes its lease. Undefined when no lease names the execution (it
 * died before taking one, or its own failure path already ended it).
 */
export async function endRunOfExecution(
  vault: Vault,
  executionArn: string,
  reason: string,
  now: Date,
): Promise<{ runId: string; snapshotId: string; marked: boolean } | undefined> {
  const lease = (await listRunLeases(vault)).find((l) => l.holder.execution === executionArn);
  if (lease === undefined) return undefined;
  const marked = await markRunDied(vault, lease.snapshotId, reason, now);
  await releaseRunLease(vault, lease);
  return { runId: lease.runId, snapshotId: lease.snapshotId, marked };
}

/**
 * The runs whose leases are live, by run id: what prune must treat as
 * running. A `running` manifest that says it is leased and is not here
 * belongs to a dead run.
 */
export async function liveRuns(vault: Vault, now: Date): Promise<Set<string>> {
  return new Set(
    (await listRunLeases(vault))
      .filter((lease) => deadLeaseReason(lease, now) === undefined)
      .map((lease) => lease.runId),
  );
}
