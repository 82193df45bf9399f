import { ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import { emptyTotals, type InventoryRecord } from '../../functions/commons/copy/model.ts';
import { InputError } from '../../functions/commons/errors.ts';
import { createLocalDeps } from '../../functions/commons/local/deps.ts';
import { runBackupLocally, runRestoreLocally } from '../../functions/commons/local/runner.ts';
import { fsckRegistry } from '../../functions/commons/registry/fsck.ts';
import { bucketSource } from '../../functions/commons/registry/fsck-sources.ts';
import { blobKeyOf } from '../../functions/commons/registry/layout.ts';
import {
  newSnapshotId,
  type SnapshotManifest,
  vaultKeys,
} from '../../functions/commons/vault/format.ts';
import { deleteSnapshot, prune } from '../../functions/commons/vault/prune.ts';
import { planPrune, type RetentionPolicy } from '../../functions/commons/vault/retention.ts';
import { snapshotSource } from '../../functions/commons/vault/snapshot-source.ts';
import {
  listSnapshots,
  putJson,
  readInventory,
  readManifest,
  resolveSnapshot,
  type Vault,
} from '../../functions/commons/vault/store.ts';
import { backupInputSchema, parseInput } from '../../functions/commons/workflows/backup.ts';
import type { WorkflowDeps } from '../../functions/commons/workflows/deps.ts';
import { OciLayout, pushImage } from '../../sandbox/images/index.ts';
import type { RegistryHandle } from '../../sandbox/registry/index.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, createBucket, listAll, vaultDeps } from '../support/s3.ts';
import {
  mirrorBucket,
  put,
  putOrphanBlob,
  randomBlob,
  registryKey,
  registryOnS3,
  remove,
} from './support.ts';

const ROOT = 'regvault/';
const DAY = 24 * 60 * 60 * 1000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let s3: S3ServerHandle;
let client: S3Client;
let registry: RegistryHandle;
let deps: WorkflowDeps & { close(): void };

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-retention' });
  client = clientFor(s3);
  await createBucket(client, 'vault');
  ({ registry } = await registryOnS3(s3, client, 'registry', 2));
  deps = vaultDeps(s3, 'vault', ROOT, {});
}, 240_000);

afterAll(async () => {
  deps?.close();
  await registry?.stop();
  client?.destroy();
  await s3?.stop();
});

/** A manifest as the backup writes it, with only what planning reads set on purpose. */
function manifestOf(options: {
  startedAt: Date;
  status: SnapshotManifest['status'];
  bucket?: string;
  expiresAt?: Date;
}): SnapshotManifest {
  const id = newSnapshotId(options.startedAt);
  return {
    formatVersion: 1,
    id,
    status: options.status,
    startedAt: options.startedAt.toISOString(),
    ...(options.expiresAt === undefined ? {} : { expiresAt: options.expiresAt.toISOString() }),
    ...(options.status === 'running'
      ? {}
      : { finishedAt: new Date(options.startedAt.getTime() + 60_000).toISOString() }),
    toolVersion: 'test',
    layout: 'registry',
    runId: `backup-${id}`,
    source: {
      profile: 'bucket',
      bucket: options.bucket ?? 'registry',
      endpoint: 'http://127.0.0.1:1',
      region: 'us-east-1',
      prefix: '',
      rootDirectory: '',
    },
    counts: { objects: 0, blobs: 0, repositories: 0, tags: 0 },
    bytes: 0,
    totals: emptyTotals(),
    uploadsSkipped: [],
    checks: {},
    failures: { count: 0, sample: [] },
    clusterFiles: [],
    inventory: { records: 0, parts: [] },
  };
}

/** A backup of the registry bucket into the vault of `into`, which must complete: its snapshot id. */
async function completeBackup(
  into: WorkflowDeps,
  options: { workers?: number; ttlDays?: number } = {},
): Promise<string> {
  const result = await runBackupLocally(
    {
      source: { endpoint: s3.endpoint, region: s3.region, bucket: 'registry' },
      targetObjectsPerShard: 100,
      ...(options.ttlDays === undefined ? {} : { ttlDays: options.ttlDays }),
    },
    { deps: into, workers: options.workers ?? 4 },
  );
  expect(result.cause).toBeUndefined();
  expect((result.output as { status: string }).status).toBe('complete');
  return (result.output as { snapshotId: string }).snapshotId;
}

/** `client`, running `before` ahead of every command it sends (to act at one exact request). */
function withHook(
  client: S3Client,
  before: (command: Parameters<S3Client['send']>[0]) => Promise<void>,
): S3Client {
  return new Proxy(client, {
    get(target, property, receiver) {
      if (property !== 'send') return Reflect.get(target, property, receiver);
      return async (command: Parameters<S3Client['send']>[0]) => {
        await before(command);
        return target.send(command);
      };
    },
  });
}

describe('planning which snapshots expire', () => {
  const now = new Date('2026-03-01T00:00:00Z');
  const ago = (ms: number) => new Date(now.getTime() - ms);
  let vaults = 0;

  type Spec = {
    label: string;
    /** Days since the backup started. */
    age: number;
    status: SnapshotManifest['status'];
    bucket?: string;
    /** Days after now that the snapshot's own ttl ends (negative: it ended that long ago). */
    expiresIn?: number;
  };
  type Extra = Pick<Spec, 'bucket' | 'expiresIn'>;
  const complete = (label: string, age: number, extra: Extra = {}): Spec => ({
    label,
    age,
    status: 'complete',
    ...extra,
  });
  const failed = (label: string, age: number, extra: Extra = {}): Spec => ({
    ...complete(label, age, extra),
    status: 'failed',
  });
  const running = (label: string, age: number): Spec => ({ label, age, status: 'running' });
  const minutes = (count: number) => (count * 60_000) / DAY;
  /** Four complete snapshots ten days apart, the oldest 40 days old. */
  const fourComplete = [complete('a', 40), complete('b', 30), complete('c', 20), complete('d', 10)];
  it.each<{
    name: string;
    policy: RetentionPolicy;
    snapshots: Spec[];
    expire: string[];
    graceMs?: number;
  }>([
    {
      name: 'keeps the last 2 complete snapshots',
      policy: { keepLast: 2 },
      snapshots: fourComplete,
      expire: ['a', 'b'],
    },
    {
      name: 'expires complete snapshots past the ttl',
      policy: { ttlDays: 15 },
      snapshots: [complete('a', 40), complete('b', 20), complete('c', 10)],
      expire: ['a', 'b'],
    },
    {
      name: 'never expires the newest complete snapshot, however old',
      policy: { ttlDays: 15 },
      snapshots: [complete('a', 40), complete('b', 30)],
      expire: ['a'],
    },
    {
      name: 'keeps what either rule keeps when both are set',
      policy: { keepLast: 1, ttlDays: 25 },
      snapshots: fourComplete,
      expire: ['a', 'b'],
    },
    {
      name: 'expires failed snapshots older than the newest complete one and keeps newer ones',
      policy: { keepLast: 10 },
      snapshots: [complete('a', 40), failed('b', 30), complete('c', 20), failed('d', 10)],
      expire: ['b'],
    },
    {
      name: 'keeps a running backup and the snapshot it builds on',
      policy: { keepLast: 1 },
      snapshots: [complete('a', 3), complete('b', 2), running('r', 1), complete('c', 0.5)],
      expire: ['a'],
    },
    {
      name: 'treats a running manifest long past the backup timeout as failed',
      policy: { keepLast: 10 },
      snapshots: [complete('a', 10), running('r', 5), complete('b', 1)],
      expire: ['r'],
    },
    {
      name: 'judges each source on its own',
      policy: { keepLast: 1 },
      snapshots: [
        complete('a', 40, { bucket: 'registry-x' }),
        complete('b', 30, { bucket: 'registry-y' }),
        complete('c', 20, { bucket: 'registry-x' }),
      ],
      expire: ['a'],
    },
    {
      name: 'expires only superseded failed snapshots under a policy with no rule',
      policy: {},
      snapshots: [failed('a', 40), complete('b', 30), complete('c', 20)],
      expire: ['a'],
    },
    {
      name: 'expires a complete snapshot whose own ttl ended, under a policy with no rule',
      policy: {},
      snapshots: [complete('a', 30, { expiresIn: -1 }), complete('b', 20), complete('c', 10)],
      expire: ['a'],
    },
    {
      name: 'expires a snapshot whose own ttl ended even where keepLast would keep it, and gives it no keepLast place',
      policy: { keepLast: 3 },
      snapshots: [
        complete('a', 40),
        complete('b', 30, { expiresIn: -1 }),
        complete('c', 20),
        complete('d', 10),
      ],
      expire: ['b'],
    },
    {
      name: 'keeps a snapshot until its own ttl ends, whatever the policy',
      policy: { keepLast: 1, ttlDays: 5 },
      snapshots: [complete('a', 40, { expiresIn: 10 }), complete('b', 20), complete('c', 10)],
      expire: ['b'],
    },
    {
      name: 'keeps the newest complete snapshot after its own ttl ended',
      policy: {},
      snapshots: [complete('a', 20), complete('b', 10, { expiresIn: -1 })],
      expire: [],
    },
    {
      name: 'keeps a snapshot a running backup builds on after its own ttl ended',
      policy: {},
      snapshots: [complete('a', 3, { expiresIn: -1 }), running('r', 1), complete('c', 0.5)],
      expire: [],
    },
    {
      name: 'expires a failed snapshot newer than any complete one once its own ttl ended',
      policy: {},
      snapshots: [complete('a', 20), failed('b', 10, { expiresIn: -1 })],
      expire: ['b'],
    },
    {
      // A backup that picked it as its base just before the newer one completed may not have written its manifest yet.
      name: 'keeps a snapshot superseded less than the grace period ago',
      policy: { keepLast: 1 },
      snapshots: [complete('a', 2), complete('b', minutes(11))],
      expire: [],
    },
    {
      name: 'expires a superseded snapshot once the grace period has passed',
      policy: { keepLast: 1 },
      graceMs: 5 * 60_000,
      snapshots: [complete('a', 2), complete('b', minutes(11))],
      expire: ['a'],
    },
  ])('$name', async ({ policy, snapshots, expire, graceMs }) => {
    // Prepare
    const vault: Vault = {
      location: { ...deps.vault.location, prefix: `plan-${++vaults}/` },
      client: deps.vault.client,
    };
    const labels = new Map<string, string>();
    for (const spec of snapshots) {
      const manifest = manifestOf({
        startedAt: ago(spec.age * DAY),
        status: spec.status,
        ...(spec.bucket === undefined ? {} : { bucket: spec.bucket }),
        ...(spec.expiresIn === undefined
          ? {}
          : { expiresAt: new Date(now.getTime() + spec.expiresIn * DAY) }),
      });
      labels.set(manifest.id, spec.label);
      await putJson(vault, vaultKeys.manifest(`plan-${vaults}/`, manifest.id), manifest);
    }
    // Act
    const plan = await planPrune(vault, policy, now, graceMs === undefined ? {} : { graceMs });
    // Assess
    expect(plan.expire.map((v) => labels.get(v.id)).sort()).toEqual(expire);
    expect(plan.keep.map((v) => labels.get(v.id)).sort()).toEqual(
      snapshots
        .map((s) => s.label)
        .filter((l) => !expire.includes(l))
        .sort(),
    );
    expect([...plan.keep, ...plan.expire].every((v) => v.reason.length > 0)).toBe(true);
  });
});

describe('pruning a vault of real snapshots', () => {
  /** The three snapshots every test starts from, oldest first. */
  const ids: string[] = [];
  /** A pool blob only the first snapshot holds (the registry lost it before the second backup). */
  let onlyInFirst = '';
  /** A tag link only the first snapshot holds. */
  let tagOnlyInFirst = '';

  async function push(tag: string): Promise<void> {
    const layout = await OciLayout.create();
    try {
      await layout.addImage(tag, [
        { seed: `retention-${tag}`, size: 6000 },
        { seed: 'retention-base', size: 4000 },
      ]);
      await pushImage(layout, tag, `${registry.host}/team-0/app-0:${tag}`);
    } finally {
      await layout.remove();
    }
  }

  const inventoryOf = async (id: string): Promise<InventoryRecord[]> =>
    readInventory(deps.vault, await resolveSnapshot(deps.vault, id));

  /** Every key the snapshot's inventory names is in the vault with its size. */
  async function expectIntact(id: string): Promise<void> {
    const vault = await listAll(client, 'vault');
    const records = await inventoryOf(id);
    const missing = records
      .filter((r) => vault.get(r.targetKey)?.size !== r.size)
      .map((r) => r.targetKey);
    expect(missing).toEqual([]);
    const report = await fsckRegistry(
      snapshotSource(deps.vault, await resolveSnapshot(deps.vault, id)),
      { deep: true },
    );
    expect(report.problems).toEqual([]);
  }

  const exists = async (key: string) => (await listAll(client, 'vault', key)).has(key);

  beforeAll(async () => {
    const orphan = await putOrphanBlob(client, 'registry', 1500);
    ids.push(await completeBackup(deps));
    onlyInFirst = vaultKeys.blob(ROOT, orphan);
    await remove(client, 'registry', registryKey(blobKeyOf(orphan)));
    const tagLink = registryKey('repositories/team-1/app-1/_manifests/tags/v1.1/current/link');
    tagOnlyInFirst =
      (await inventoryOf(ids[0] ?? '')).find((r) => r.key === tagLink)?.targetKey ?? '';
    for (const key of (
      await listAll(
        client,
        'registry',
        registryKey('repositories/team-1/app-1/_manifests/tags/v1.1/'),
      )
    ).keys()) {
      await remove(client, 'registry', key);
    }
    await push('second');
    ids.push(await completeBackup(deps));
    await push('third');
    ids.push(await completeBackup(deps));
    await createBucket(client, 'vault-template');
    await mirrorBucket(client, 'vault', 'vault-template');
  }, 240_000);

  // Every test starts from the vault of the three snapshots, whatever an earlier test pruned or added.
  beforeEach(async () => {
    await mirrorBucket(client, 'vault-template', 'vault');
  });

  /** The running manifest of a first backup of another registry bucket, starting now. */
  const firstBackupOf = (bucket: string) =>
    manifestOf({ startedAt: new Date(), status: 'running', bucket });

  /** Puts a pool blob no snapshot refers to, written well before a backup that starts next. */
  async function stalePoolBlob(): Promise<{ bytes: Buffer; digest: string }> {
    const stale = randomBlob();
    await put(client, 'vault', vaultKeys.blob(ROOT, stale.digest), stale.bytes);
    await sleep(1500);
    return stale;
  }

  /** Prunes the first snapshot, as an earlier run with `keepLast: 2` would have. */
  async function pruneFirst(): Promise<void> {
    const report = await prune(deps.vault, { keepLast: 2 }, { now: new Date(), graceMs: 0 });
    expect(report.deletedSnapshots).toEqual([ids[0]]);
  }

  it('reports in a dry run what a prune would delete, and deletes nothing', async () => {
    // Prepare
    const before = await listAll(client, 'vault');
    // Act
    const report = await prune(
      deps.vault,
      { keepLast: 2 },
      { now: new Date(), graceMs: 0, dryRun: true },
    );
    // Assess
    expect(report.dryRun).toBe(true);
    expect(report.deletedSnapshots).toEqual([ids[0]]);
    expect(report.deleted.poolBlobs).toBeGreaterThanOrEqual(1);
    expect(await listAll(client, 'vault')).toEqual(before);
  });

  it('keeps the last 2 snapshots and every key they refer to, and deletes what only the first one held', async () => {
    // Prepare
    const [first, second, third] = ids as [string, string, string];
    const firstManifest = await resolveSnapshot(deps.vault, first);
    const sharedFromFirst = (await inventoryOf(second)).filter((r) =>
      r.targetKey.startsWith(vaultKeys.objects(ROOT, first)),
    );
    const dryRun = await prune(
      deps.vault,
      { keepLast: 2 },
      { now: new Date(), graceMs: 0, dryRun: true },
    );
    // Act
    const report = await prune(deps.vault, { keepLast: 2 }, { now: new Date(), graceMs: 0 });
    // Assess
    expect(report.deletedSnapshots).toEqual([first]);
    expect(report.deleted).toEqual(dryRun.deleted);
    expect(report.failedDeletes).toEqual([]);
    expect(await readManifest(deps.vault, first)).toBeUndefined();
    expect(await exists(vaultKeys.inventory(ROOT, first))).toBe(false);
    expect((await listAll(client, 'vault', vaultKeys.run(ROOT, firstManifest.runId))).size).toBe(0);
    expect(await exists(onlyInFirst)).toBe(false);
    expect(tagOnlyInFirst).toMatch(new RegExp(`^${vaultKeys.objects(ROOT, first)}`));
    expect(await exists(tagOnlyInFirst)).toBe(false);
    // Unchanged links are not copied again: the second snapshot still reads them from the first one's folder.
    expect(sharedFromFirst.length).toBeGreaterThan(0);
    await expectIntact(second);
    await expectIntact(third);
  });

  it('keeps blobs written after a running backup started, and sweeps older unreferenced ones', async () => {
    // Prepare: the first snapshot pruned; unreferenced blobs from before the backup, a running
    // manifest, blobs it "wrote" but has not recorded
    await pruneFirst();
    const stale = [randomBlob(), randomBlob()];
    for (const blob of stale)
      await put(client, 'vault', vaultKeys.blob(ROOT, blob.digest), blob.bytes);
    await sleep(2500);
    const startedAt = new Date(Date.now() - 1000);
    const running: SnapshotManifest = {
      ...manifestOf({ startedAt, status: 'running' }),
      source: (await resolveSnapshot(deps.vault, ids[2] ?? '')).source,
    };
    await putJson(deps.vault, vaultKeys.manifest(ROOT, running.id), running);
    const fresh = [randomBlob(), randomBlob(), randomBlob()];
    for (const blob of fresh)
      await put(client, 'vault', vaultKeys.blob(ROOT, blob.digest), blob.bytes);
    try {
      // Act
      const report = await prune(deps.vault, { keepLast: 2 }, { now: new Date(), graceMs: 0 });
      // Assess
      expect(report.plan.running).toEqual([
        {
          id: running.id,
          runId: running.runId,
          startedAt: running.startedAt,
          baseSnapshotId: ids[2],
          adoptsFromPool: false,
        },
      ]);
      expect(report.deletedSnapshots).toEqual([]);
      expect(report.poolSweepPostponed).toBeUndefined();
      for (const blob of fresh) expect(await exists(vaultKeys.blob(ROOT, blob.digest))).toBe(true);
      for (const blob of stale) expect(await exists(vaultKeys.blob(ROOT, blob.digest))).toBe(false);
      expect(report.keptForGrace.keys).toBeGreaterThanOrEqual(fresh.length);
      expect(report.keptForGrace.cutoff).toBe(running.startedAt);
      await expectIntact(ids[1] ?? '');
      await expectIntact(ids[2] ?? '');
    } finally {
      await remove(client, 'vault', vaultKeys.manifest(ROOT, running.id));
      for (const blob of fresh) await remove(client, 'vault', vaultKeys.blob(ROOT, blob.digest));
    }
  });

  it('sweeps no pool blob while a backup that may reuse any of them runs', async () => {
    // Prepare: a first backup of another bucket has no snapshot to build on, so it skips blobs it finds in the pool
    const stale = await stalePoolBlob();
    const running = firstBackupOf('another-registry');
    await putJson(deps.vault, vaultKeys.manifest(ROOT, running.id), running);
    try {
      // Act
      const report = await prune(deps.vault, { keepLast: 2 }, { now: new Date(), graceMs: 0 });
      // Assess
      expect(report.plan.running).toEqual([
        expect.objectContaining({ id: running.id, adoptsFromPool: true }),
      ]);
      expect(report.poolSweepPostponed).toContain(running.id);
      expect(await exists(vaultKeys.blob(ROOT, stale.digest))).toBe(true);
    } finally {
      await remove(client, 'vault', vaultKeys.manifest(ROOT, running.id));
    }
    // Once it is gone, the next prune sweeps the blob.
    const after = await prune(deps.vault, { keepLast: 2 }, { now: new Date(), graceMs: 0 });
    expect(after.poolSweepPostponed).toBeUndefined();
    expect(await exists(vaultKeys.blob(ROOT, stale.digest))).toBe(false);
  });

  it('sweeps no pool blob when a backup that may reuse any of them starts while prune lists the pool', async () => {
    // Prepare: the backup writes its running manifest the moment prune lists the pool, after its first check
    const stale = await stalePoolBlob();
    const starting = firstBackupOf('yet-another-registry');
    let started = false;
    const startBackupWhilePoolIsListed = withHook(deps.vault.client, async (command) => {
      if (
        !started &&
        command instanceof ListObjectsV2Command &&
        command.input.Prefix === `${ROOT}blobs/`
      ) {
        started = true;
        await putJson(deps.vault, vaultKeys.manifest(ROOT, starting.id), starting);
      }
    });
    try {
      // Act
      const report = await prune(
        { location: deps.vault.location, client: startBackupWhilePoolIsListed },
        { keepLast: 2 },
        { now: new Date(), graceMs: 0 },
      );
      // Assess
      expect(started).toBe(true);
      expect(report.plan.running).toEqual([]);
      expect(report.poolSweepPostponed).toContain(starting.id);
      expect(await exists(vaultKeys.blob(ROOT, stale.digest))).toBe(true);
    } finally {
      await remove(client, 'vault', vaultKeys.manifest(ROOT, starting.id));
    }
  });

  it('prunes while a real backup runs; that backup completes and both remaining snapshots restore', async () => {
    // Prepare: the first snapshot pruned; a backup held when its link shard writes its records
    // (its one worker busy), after it planned and copied its links and before any blob shard starts
    await pruneFirst();
    await push('fourth');
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let held = false;
    const heldClient = withHook(deps.vault.client, async (command) => {
      const key = (command.input as { Key?: string }).Key ?? '';
      if (command instanceof PutObjectCommand && key.includes('/records/links-')) {
        held = true;
        await gate;
      }
    });
    const gated: WorkflowDeps & { close(): void } = {
      ...deps,
      vault: { ...deps.vault, client: heldClient },
    };
    const running = completeBackup(gated, { workers: 1 });
    // Waits for the hold, or for a backup that ended without reaching it (then the test fails, not hangs).
    let ended = false;
    void running.then(
      () => {
        ended = true;
      },
      () => {
        ended = true;
      },
    );
    while (!held && !ended) await sleep(20);
    expect(held).toBe(true);
    // Act
    const report = await prune(deps.vault, { keepLast: 1 }, { now: new Date(), graceMs: 0 });
    release();
    const fourth = await running;
    // Assess
    const [, second, third] = ids as [string, string, string];
    expect(report.plan.running).toEqual([
      expect.objectContaining({ id: fourth, baseSnapshotId: third, adoptsFromPool: false }),
    ]);
    expect(report.deletedSnapshots).toEqual([second]);
    for (const id of [third, fourth]) {
      await expectIntact(id);
      const bucket = `restored-${id.slice(-6)}`;
      await createBucket(client, bucket);
      const restore = await runRestoreLocally(
        {
          snapshot: id,
          target: { bucket, endpoint: s3.endpoint, region: s3.region },
          switchRegistry: false,
        },
        { deps },
      );
      expect(restore.cause).toBeUndefined();
      expect(restore.status).toBe('SUCCEEDED');
      const restored = await listAll(client, bucket);
      const expected = new Map((await inventoryOf(id)).map((r) => [r.key, r.size]));
      expect(new Map([...restored].map(([key, object]) => [key, object.size]))).toEqual(expected);
      const check = await fsckRegistry(bucketSource(client, bucket, ''), { deep: true });
      expect(check.problems).toEqual([]);
    }
  });
  it('deletes one snapshot by hand, leaving the objects a later snapshot reuses', async () => {
    // Prepare: the first snapshot pruned, so the second and the third are the last two
    await pruneFirst();
    const [, second, third] = ids as [string, string, string];
    expect((await listSnapshots(deps.vault)).map((m) => m.id)).toEqual([second, third]);
    const reused = (await inventoryOf(third)).filter((r) =>
      r.targetKey.startsWith(vaultKeys.objects(ROOT, second)),
    );
    // Act
    const result = await deleteSnapshot(deps.vault, await resolveSnapshot(deps.vault, second));
    const report = await prune(deps.vault, { keepLast: 1 }, { now: new Date(), graceMs: 0 });
    // Assess
    expect(result.failed).toEqual([]);
    expect(await readManifest(deps.vault, second)).toBeUndefined();
    expect(reused.length).toBeGreaterThan(0);
    expect(report.deletedSnapshots).toEqual([]);
    await expectIntact(third);
  });
});

describe('pruning snapshots that carry their own ttl', () => {
  const TTL_ROOT = 'ttl/';
  let ttlDeps: WorkflowDeps & { close(): void };

  beforeAll(async () => {
    await createBucket(client, 'vault-ttl');
    ttlDeps = createLocalDeps({
      vault: {
        location: { ...deps.vault.location, bucket: 'vault-ttl', prefix: TTL_ROOT },
        credentials: s3.credentials,
      },
    });
  });

  afterAll(() => {
    ttlDeps?.close();
  });

  it.each([
    { ttlDays: 0, why: 'zero' },
    { ttlDays: -1, why: 'negative' },
    { ttlDays: 40_000, why: 'longer than a century' },
    { ttlDays: 'P7D', why: 'not a number of days' },
  ])('rejects a ttl that is $why, naming the field', ({ ttlDays }) => {
    // Act
    const parse = () => parseInput(backupInputSchema, { ttlDays }, 'backup input');
    // Assess
    expect(parse).toThrow(InputError);
    expect(parse).toThrow(/ttlDays: /);
  });

  it('deletes a snapshot once its own ttl ended, with the pool blobs only it held, and keeps the one without a ttl', async () => {
    // Prepare: a blob only the short-lived snapshot holds (the registry loses it before the next backup)
    const orphan = await putOrphanBlob(client, 'registry', 1700);
    const shortLived = await completeBackup(ttlDeps, { ttlDays: 1 / 86_400 });
    await remove(client, 'registry', registryKey(blobKeyOf(orphan)));
    const lasting = await completeBackup(ttlDeps);
    const shortManifest = await resolveSnapshot(ttlDeps.vault, shortLived);
    const lastingManifest = await resolveSnapshot(ttlDeps.vault, lasting);
    const onlyInShort = vaultKeys.blob(TTL_ROOT, orphan);
    const shortKeys = new Set(
      (await readInventory(ttlDeps.vault, shortManifest)).map((r) => r.targetKey),
    );
    const shared = (await readInventory(ttlDeps.vault, lastingManifest)).filter(
      (r) => r.targetKey.startsWith(`${TTL_ROOT}blobs/`) && shortKeys.has(r.targetKey),
    );
    const vaultHas = async (key: string) => (await listAll(client, 'vault-ttl', key)).has(key);
    expect(shortManifest.expiresAt).toBe(
      new Date(Date.parse(shortManifest.startedAt) + 1000).toISOString(),
    );
    expect(lastingManifest.expiresAt).toBeUndefined();
    expect(await vaultHas(onlyInShort)).toBe(true);
    await sleep(Math.max(0, Date.parse(shortManifest.expiresAt ?? '') - Date.now() + 10));
    // Act: no policy rule at all; the snapshot's own ttl is what expires it
    const report = await prune(ttlDeps.vault, {}, { now: new Date(), graceMs: 0 });
    // Assess
    expect(report.deletedSnapshots).toEqual([shortLived]);
    expect(report.plan.expire[0]?.reason).toContain(`its ttl ended at ${shortManifest.expiresAt}`);
    expect(report.plan.keep.map((v) => v.id)).toEqual([lasting]);
    expect(report.failedDeletes).toEqual([]);
    expect(await readManifest(ttlDeps.vault, shortLived)).toBeUndefined();
    expect(await vaultHas(onlyInShort)).toBe(false);
    expect(report.deleted.poolBlobs).toBe(1);
    expect(shared.length).toBeGreaterThan(0);
    for (const record of shared) expect(await vaultHas(record.targetKey)).toBe(true);
    const check = await fsckRegistry(snapshotSource(ttlDeps.vault, lastingManifest), {
      deep: true,
    });
    expect(check.problems).toEqual([]);
  });
});
