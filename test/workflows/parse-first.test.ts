/**
 * Parse before acting. Every Lambda handler reads its event exactly (no
 * string is a boolean or a number, no unknown key is dropped, no missing
 * field is filled in) and refuses it, naming each bad field, before any side
 * effect. A restore makes every check (cluster, the registry's resource and
 * the target's Secret, target empty, snapshot whole) before it writes
 * anything, so a wrong kube context leaves the target bucket and the vault as
 * they were. The SQS functions read a receive count as digits only and name a
 * shard only from a body that is a copy message. Real parts: the sandbox S3
 * server, two fake clusters reached over HTTPS by the real Kubernetes client,
 * the real registry, the very handlers a Lambda runs.
 */
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeleteObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { Context } from 'aws-lambda';
import { parse, stringify } from 'yaml';
import { awsDeps, readConfig, sqsEventSchema } from '../../functions/commons/aws/runtime.ts';
import { localContext, stepHandler } from '../../functions/commons/aws/step-handler.ts';
import { loadKubeConfig } from '../../functions/commons/cluster/kube.ts';
import { InputError } from '../../functions/commons/errors.ts';
import { runBackupLocally, runRestoreLocally } from '../../functions/commons/local/runner.ts';
import { acpProfile } from '../../functions/commons/registry/acp.ts';
import { vaultKeys } from '../../functions/commons/vault/format.ts';
import type { WorkflowDeps } from '../../functions/commons/workflows/deps.ts';
import { type RestoreState, resolveRestore } from '../../functions/commons/workflows/restore.ts';
import { failDeadLetters } from '../../functions/commons/workflows/sqs-worker.ts';
import type { StepName } from '../../functions/commons/workflows/steps.ts';
import { handler as pruneHandler } from '../../functions/prune.ts';
import { populateRegistry } from '../../sandbox/images/index.ts';
import { REGISTRY_NAMESPACE } from '../../sandbox/kube/controller.ts';
import { type FakeCluster, startFakeCluster } from '../../sandbox/kube/index.ts';
import { BuiltIn } from '../../sandbox/kube/resources.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { seedRegistry } from '../kube/support.ts';
import { recordingDeps } from '../support/deps.ts';
import {
  clientFor,
  copyAllObjects,
  createBucket,
  listAll,
  locationOn,
  putObjects,
  storageOn,
  vaultDeps,
} from '../support/s3.ts';

const ROOT = 'regvault/';
const SECRET = 'registry-s3-secret';
const DAY_MS = 24 * 60 * 60 * 1000;

let s3: S3ServerHandle;
let client: S3Client;
/** The cluster that runs the registry (context "production"). */
let cluster: FakeCluster;
/** Another cluster: the registry's namespace holds the Secret, but no registry runs there (context "staging"). */
let staging: FakeCluster;
/** A kubeconfig with both contexts, "production" current, as an operator's would be. */
let kubeconfigYaml = '';
let deps: WorkflowDeps & { close(): void };
let snapshotId = '';
let targets = 0;
const opened: Array<{ close(): void }> = [];

/** Dependencies on `vault` (default: the shared one) with another kube context or none. */
function depsWith(
  options: { vault?: string; kube?: { yaml?: string; path?: string; context?: string } } = {},
) {
  const made = vaultDeps(s3, options.vault ?? 'vault', ROOT, {
    kube: options.kube ?? { yaml: kubeconfigYaml },
    registryUrl: cluster.registryUrl,
  });
  opened.push(made);
  return made;
}

/** A kubeconfig of two clusters, as `kubectl config view --flatten` would merge them. */
async function mergedKubeconfig(): Promise<string> {
  const files = await Promise.all([
    cluster.writeKubeconfig(join(tmpdir(), `parse-first-${process.pid}-a`), {
      context: 'production',
    }),
    staging.writeKubeconfig(join(tmpdir(), `parse-first-${process.pid}-b`), {
      context: 'staging',
    }),
  ]);
  const [a, b] = await Promise.all(
    files.map(async (file) => parse(await readFile(file, 'utf8')) as Record<string, unknown[]>),
  );
  return stringify({
    ...a,
    clusters: [...(a?.['clusters'] ?? []), ...(b?.['clusters'] ?? [])],
    users: [...(a?.['users'] ?? []), ...(b?.['users'] ?? [])],
    contexts: [...(a?.['contexts'] ?? []), ...(b?.['contexts'] ?? [])],
  });
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

/** The bucket the registry of the production cluster serves from. */
async function servedBucket(): Promise<string> {
  return (await acpProfile(loadKubeConfig({ path: cluster.kubeconfigPath })).discover()).storage
    .bucket;
}

/** An empty new bucket to restore into. */
async function newTarget(): Promise<string> {
  const bucket = `target-${++targets}`;
  await createBucket(client, bucket);
  return bucket;
}

const targetOn = (bucket: string, secretName = SECRET) => ({
  bucket,
  endpoint: s3.endpoint,
  region: s3.region,
  secretName,
});

/** Calls a Lambda handler as the local runner does, returning what it threw (undefined if nothing). */
async function refusalOf(call: () => Promise<unknown>): Promise<unknown> {
  return call().then(
    () => undefined,
    (err: unknown) => err,
  );
}

function expectRefused(refusal: unknown, fields: readonly string[]): void {
  expect(refusal).toBeInstanceOf(InputError);
  const issues = refusal instanceof InputError ? refusal.issues : [];
  for (const field of fields)
    expect(issues.filter((issue) => issue.startsWith(`${field}: `))).not.toEqual([]);
}

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-parse-first', computeChecksums: true });
  client = clientFor(s3);
  for (const bucket of ['registry', 'vault', 'vault-damaged', 'plain'])
    await createBucket(client, bucket);
  [cluster, staging] = await Promise.all([
    startFakeCluster({ tls: true }),
    startFakeCluster({ tls: true }),
  ]);
  await seedRegistry(cluster, storageOn(s3, 'registry'));
  // Staging has the registry's namespace and a Secret of the same name, and no registry.
  staging.server.store.create(BuiltIn.namespaces, {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: REGISTRY_NAMESPACE },
  });
  staging.server.store.create(BuiltIn.secrets, {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: SECRET, namespace: REGISTRY_NAMESPACE },
    type: 'Opaque',
    data: {
      'access-key-id': Buffer.from(s3.credentials.accessKeyId).toString('base64'),
      'secret-access-key': Buffer.from(s3.credentials.secretAccessKey).toString('base64'),
    },
  });
  kubeconfigYaml = await mergedKubeconfig();
  await populateRegistry(new URL(cluster.registryUrl).host, {
    repositories: 2,
    tagsPerRepository: 2,
    layerSizes: [2000, 9000],
  });
  deps = depsWith();
  const backup = await runBackupLocally({}, { deps });
  expect(backup.cause).toBeUndefined();
  snapshotId = (backup.output as { snapshotId: string }).snapshotId;
  // A copy of the vault that lost the largest blob of its pool (a layer).
  await copyAllObjects(client, 'vault', 'vault-damaged');
  const pool = [...(await listAll(client, 'vault-damaged', `${ROOT}blobs/`)).entries()];
  const [largest] = pool.sort(([, a], [, b]) => b.size - a.size)[0] ?? [];
  await client.send(new DeleteObjectCommand({ Bucket: 'vault-damaged', Key: largest }));
  await putObjects(
    client,
    'plain',
    Array.from({ length: 20 }, (_, i) => ({ key: `data/${i}.txt`, body: `object ${i}` })),
  );
}, 240_000);

afterAll(async () => {
  for (const made of opened) made.close();
  client?.destroy();
  await Promise.all([cluster?.stop(), staging?.stop()]);
  await s3?.stop();
});

describe('a restore checks everything before it writes anything', () => {
  it.each([
    {
      name: 'a kube context whose cluster holds the Secret but runs no registry',
      deps: () => depsWith({ kube: { yaml: kubeconfigYaml, context: 'staging' } }),
      input: async () => ({ target: targetOn(await newTarget()) }),
      cause: /ModuleInfo/,
    },
    {
      name: 'a kube context nobody answers',
      deps: async () =>
        depsWith({
          kube: {
            path: await cluster.writeKubeconfig(join(tmpdir(), `parse-first-${process.pid}-c`), {
              server: `https://127.0.0.1:${await closedPort()}`,
            }),
          },
        }),
      input: async () => ({ target: targetOn(await newTarget()) }),
      cause: /127\.0\.0\.1:\d+/,
    },
    {
      name: "a target Secret the registry's namespace does not hold",
      deps: () => deps,
      input: async () => ({ target: targetOn(await newTarget(), 'no-such-secret') }),
      cause: /no-such-secret/,
    },
    {
      name: 'a target that holds objects, not allowed to',
      deps: () => deps,
      input: async () => {
        const bucket = await newTarget();
        await putObjects(client, bucket, [{ key: 'keep-me.txt', body: 'data of its own' }]);
        return { target: targetOn(bucket) };
      },
      cause: /is not empty/,
    },
    {
      name: 'a snapshot whose vault copy lost a blob',
      deps: () => depsWith({ vault: 'vault-damaged' }),
      input: async () => ({ target: targetOn(await newTarget()) }),
      cause: /missing in the vault: blob sha256:/,
    },
  ])('$name: fails, the target bucket and the vault untouched', async (row) => {
    // Prepare
    const runDeps = await row.deps();
    const input = await row.input();
    const vaultBucket = runDeps.vault.location.bucket;
    const targetBefore = await listAll(client, input.target.bucket);
    const vaultBefore = await listAll(client, vaultBucket);

    // Act
    const result = await runRestoreLocally(
      { snapshot: snapshotId, ...input },
      { deps: runDeps, waitMs: 200 },
    );

    // Assess
    expect(result.status).toBe('FAILED');
    expect(result.cause).toMatch(row.cause);
    expect(result.cause).toMatch(/the cluster is unchanged/);
    expect(await listAll(client, input.target.bucket)).toEqual(targetBefore);
    expect(await listAll(client, vaultBucket)).toEqual(vaultBefore);
    expect(await servedBucket()).toBe('registry');
  });

  it('restores once every check passes, the run files written after them', async () => {
    // Prepare
    const bucket = await newTarget();

    // Act
    const result = await runRestoreLocally(
      { snapshot: snapshotId, target: targetOn(bucket), switchRegistry: false },
      { deps, waitMs: 200 },
    );

    // Assess
    expect(result.cause).toBeUndefined();
    expect(result.status).toBe('SUCCEEDED');
    expect((await listAll(client, bucket)).size).toBeGreaterThan(0);
    const runs = [...(await listAll(client, 'vault', `${ROOT}runs/restore-`)).keys()];
    expect(runs.some((key) => key.endsWith('/job.json'))).toBe(true);
  });
});

describe('every Lambda handler parses its event before acting', () => {
  /** A Lambda context of a local invocation with `deps`. */
  const contextOf = (name: string, withDeps: WorkflowDeps): Context => localContext(name, withDeps);

  describe('preflight, and every restore step after it', () => {
    let state: RestoreState;
    let full = '';

    beforeAll(async () => {
      full = await newTarget();
      await putObjects(client, full, [{ key: 'keep-me.txt', body: 'data of its own' }]);
      state = await resolveRestore({ snapshot: snapshotId, target: targetOn(full) }, deps);
    });

    it('refuses a non-empty target when allowNonEmptyTarget is false', async () => {
      // Act
      const refusal = await refusalOf(() =>
        stepHandler('preflight')({ state }, contextOf('preflight', deps)),
      );

      // Assess: the check the string "false" must not get past
      expect(refusal).toBeInstanceOf(InputError);
      expect(String(refusal)).toMatch(/is not empty/);
    });

    it.each([
      {
        name: 'the string "false" as allowNonEmptyTarget',
        change: () => ({ allowNonEmptyTarget: 'false' }),
        fields: ['state.allowNonEmptyTarget'],
      },
      {
        name: 'a misspelt allowNonEmptyTarget',
        change: () => ({ allowNonEmptyTarget: undefined, allownonemptytarget: false }),
        fields: ['state.allowNonEmptyTarget', 'state'],
      },
      {
        name: 'numbers and booleans given as strings',
        change: () => ({ concurrency: '8', switchRegistry: 'true', pushTest: 'false' }),
        fields: ['state.concurrency', 'state.switchRegistry', 'state.pushTest'],
      },
      {
        name: 'a target without its access',
        change: () => ({ target: { ...locationOn(s3, 'target-x'), access: undefined } }),
        fields: ['state.target.access'],
      },
    ])('preflight refuses $name, naming the fields, and writes nothing', async (row) => {
      // Prepare
      const event = { state: { ...state, ...row.change() } };
      const targetBefore = await listAll(client, full);
      const vaultBefore = await listAll(client, 'vault');

      // Act
      const refusal = await refusalOf(() =>
        stepHandler('preflight')(event, contextOf('preflight', deps)),
      );

      // Assess
      expectRefused(refusal, row.fields);
      expect(await listAll(client, full)).toEqual(targetBefore);
      expect(await listAll(client, 'vault')).toEqual(vaultBefore);
    });

    it.each<StepName>(['prove', 'switch', 'verify'])(
      '%s refuses the string "false" as switchRegistry before asking anything of the cluster or a bucket',
      async (name) => {
        // Prepare: dependencies that record what the step asks for
        const asked: string[] = [];
        const watched = recordingDeps(deps, asked);

        // Act
        const refusal = await refusalOf(() =>
          stepHandler(name)(
            { state: { ...state, switchRegistry: 'false' } },
            contextOf(name, watched),
          ),
        );

        // Assess
        expectRefused(refusal, ['state.switchRegistry']);
        expect(asked).toEqual([]);
        expect(await servedBucket()).toBe('registry');
      },
    );
  });

  describe('plan', () => {
    const planState = () => ({
      runId: `backup-plan-${++targets}`,
      snapshotId: `2026-12-03T000000Z-plan${targets}`,
      startedAt: new Date().toISOString(),
      layout: 'generic',
      source: locationOn(s3, 'plain', '', 'vault'),
      profile: 'acp',
      rootDirectory: '',
      targetObjectsPerShard: 100,
      concurrency: 4,
      clusterFiles: [],
    });

    it('plans a well-formed event and writes the run job', async () => {
      // Prepare
      const state = planState();

      // Act
      const plan = await stepHandler('plan')({ state }, contextOf('plan', deps));

      // Assess: what the refusals below must prevent
      expect(plan).toMatchObject({ estimatedObjects: 20 });
      const job = `${vaultKeys.run(ROOT, state.runId)}job.json`;
      expect((await listAll(client, 'vault', job)).has(job)).toBe(true);
    });

    it.each([
      {
        name: 'an unknown key beside the state',
        change: () => ({}),
        extra: { junk: 1 },
        fields: ['(input)'],
      },
      {
        name: 'a misspelt expiresAt (the snapshot would never expire)',
        change: () => ({ expiresat: '2027-01-01T00:00:00Z' }),
        extra: {},
        fields: ['state'],
      },
      {
        name: 'a source without its access (it was filled with "default")',
        change: () => ({ source: { ...locationOn(s3, 'plain'), access: undefined } }),
        extra: {},
        fields: ['state.source.access'],
      },
      {
        name: 'counts given as strings',
        change: () => ({ targetObjectsPerShard: '100', concurrency: '4' }),
        extra: {},
        fields: ['state.targetObjectsPerShard', 'state.concurrency'],
      },
    ])('refuses $name, naming the fields, and writes nothing', async (row) => {
      // Prepare
      const event = { state: { ...planState(), ...row.change() }, ...row.extra };
      const vaultBefore = await listAll(client, 'vault');

      // Act
      const refusal = await refusalOf(() => stepHandler('plan')(event, contextOf('plan', deps)));

      // Assess
      expectRefused(refusal, row.fields);
      expect(await listAll(client, 'vault')).toEqual(vaultBefore);
    });
  });

  describe('prune', () => {
    const PRUNE_ROOT = 'prune/';
    let later: WorkflowDeps & { close(): void };
    const snapshotsHeld = async () =>
      [...(await listAll(client, 'vault', `${PRUNE_ROOT}snapshots/`)).keys()].filter((key) =>
        key.endsWith('/manifest.json'),
      );

    beforeAll(async () => {
      // Two backups of a plain bucket with a one-day ttl, pruned 30 days on.
      const now = vaultDeps(s3, 'vault', PRUNE_ROOT);
      later = vaultDeps(s3, 'vault', PRUNE_ROOT, { now: () => new Date(Date.now() + 30 * DAY_MS) });
      opened.push(now, later);
      for (let i = 0; i < 2; i++) {
        const backup = await runBackupLocally(
          { source: { bucket: 'plain', endpoint: s3.endpoint, region: s3.region }, ttlDays: 1 },
          { deps: now },
        );
        expect(backup.cause).toBeUndefined();
      }
    }, 60_000);

    it.each([
      { name: 'the string "true" as dryRun', event: { dryRun: 'true' }, fields: ['dryRun'] },
      { name: 'a misspelt dryRun', event: { dryrun: true }, fields: ['(input)'] },
      { name: 'a number as dryRun', event: { dryRun: 1 }, fields: ['dryRun'] },
      { name: 'the string "true" as the event', event: 'true', fields: ['(input)'] },
    ])('refuses $name and deletes nothing', async (row) => {
      // Prepare
      const vaultBefore = await listAll(client, 'vault', PRUNE_ROOT);

      // Act
      const refusal = await refusalOf(() =>
        pruneHandler(row.event as never, contextOf('prune', later)),
      );

      // Assess
      expectRefused(refusal, row.fields);
      expect(await listAll(client, 'vault', PRUNE_ROOT)).toEqual(vaultBefore);
    });

    it('reports without deleting on dryRun true, and deletes on dryRun false', async () => {
      // Prepare
      const held = await snapshotsHeld();
      const vaultBefore = await listAll(client, 'vault', PRUNE_ROOT);

      // Act
      const dry = (await pruneHandler({ dryRun: true }, contextOf('prune', later))) as {
        deletedSnapshots: string[];
      };
      const afterDry = await listAll(client, 'vault', PRUNE_ROOT);
      const real = (await pruneHandler({ dryRun: false }, contextOf('prune', later))) as {
        deletedSnapshots: string[];
      };

      // Assess: the refusals above kept a real prune from running
      expect(held).toHaveLength(2);
      expect(dry.deletedSnapshots.length).toBeGreaterThan(0);
      expect(afterDry).toEqual(vaultBefore);
      expect(real.deletedSnapshots).toEqual(dry.deletedSnapshots);
      expect((await snapshotsHeld()).length).toBe(2 - real.deletedSnapshots.length);
    });
  });

  describe('the SQS functions', () => {
    it.each(['', ' 3', '0x3', '1e1', '-1', '0'])('refuses %p as a receive count', (count) => {
      // Act
      const parsed = sqsEventSchema.safeParse({
        Records: [{ messageId: 'm-1', body: '{}', attributes: { ApproximateReceiveCount: count } }],
      });

      // Assess
      expect(parsed.success).toBe(false);
    });

    it.each([
      { name: 'a body that is no copy message', body: { runId: { not: 'a string' }, seq: 'two' } },
      {
        name: 'a copy message of a run with no job',
        body: { runId: 'run-never-planned', shardId: 'blobs-0001', seq: 2 },
      },
    ])('dead-letter ends no shard for $name, and writes nothing', async (row) => {
      // Prepare
      const vaultBefore = await listAll(client, 'vault');

      // Act
      const ended = await failDeadLetters(
        [{ messageId: 'm-1', body: JSON.stringify(row.body), receiveCount: 5 }],
        deps,
      );

      // Assess
      expect(ended).toBe(0);
      expect(await listAll(client, 'vault')).toEqual(vaultBefore);
    });
  });

  describe("the functions' configuration", () => {
    it('refuses a misspelt profile setting, which would leave the default namespace in use', async () => {
      // Prepare
      const config = readConfig({
        VAULT_BUCKET: 'vault',
        AWS_REGION: 'us-east-1',
        PROFILE_SETTINGS: JSON.stringify({ namespce: 'registry-system' }),
      });

      // Act
      const refusal = await refusalOf(() => awsDeps(config));

      // Assess
      expect(refusal).toBeInstanceOf(InputError);
      expect(String(refusal)).toMatch(/namespce/);
    });
  });
});
