/**
 * The vault folders each function's role may reach (infra/function-specs.ts)
 * cover what its step does, measured: two backups, a restore that is proven,
 * switches and verifies, and a prune run on one machine through the local
 * runner (the same step code as the Lambda handlers), every request to the
 * vault recorded with the step that made it. The steps that only run when
 * something died (mark-failed, dead-letter, end-dead-run, a rollback that
 * switches back) are not reached here; their rows are read from their code.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { subscribe } from 'node:diagnostics_channel';
import type { ClientRequest } from 'node:http';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { runBackupLocally, runRestoreLocally } from '../../functions/commons/local/runner.ts';
import { prune } from '../../functions/commons/vault/prune.ts';
import type { WorkflowDeps } from '../../functions/commons/workflows/deps.ts';
import { type FunctionName, stepsOf } from '../../functions/commons/workflows/steps.ts';
import { FUNCTIONS, type FunctionSpec, VAULT_ACTIONS } from '../../infra/function-specs.ts';
import { populateRegistry } from '../../sandbox/images/index.ts';
import { type FakeCluster, startFakeCluster } from '../../sandbox/kube/index.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, createBucket, storageOn, vaultDeps } from '../support/s3.ts';

const VAULT = 'vault';
const ROOT = 'regvault/';
const step = new AsyncLocalStorage<string>();
const seen = new Map<string, Set<string>>();

function note(action: string, key: string) {
  if (!key.startsWith(ROOT)) return;
  const folder = key.slice(ROOT.length).split('/')[0] ?? '';
  const who = step.getStore() ?? '?';
  const set = seen.get(who) ?? new Set<string>();
  set.add(`${folder} ${action}`);
  seen.set(who, set);
}

/** The IAM action of an object request by its method and query (undefined: a listing or a bucket call). */
function actionOf(method: string, query: URLSearchParams, copies: boolean): string | undefined {
  if (query.has('list-type') || query.has('object-lock') || query.has('versioning'))
    return undefined;
  if (method === 'GET' || method === 'HEAD')
    return query.has('tagging') ? 's3:GetObjectTagging' : 's3:GetObject';
  if (method === 'PUT')
    return query.has('tagging') && !copies ? 's3:PutObjectTagging' : 's3:PutObject';
  if (method === 'POST') return query.has('delete') ? undefined : 's3:PutObject';
  if (method === 'DELETE')
    return query.has('uploadId') ? 's3:AbortMultipartUpload' : 's3:DeleteObject';
  return undefined;
}

// Every request leaves through node:http, the SDK's and the copy's own signed fast path alike;
// the channel runs in the caller's async context, so the step is the one that made it.
subscribe('http.client.request.start', (message) => {
  const request = (message as { request: ClientRequest }).request;
  const url = new URL(request.path, 'http://s3');
  const [, bucket, ...rest] = url.pathname.split('/');
  const copySource = request.getHeader('x-amz-copy-source');
  if (typeof copySource === 'string') {
    const source = decodeURIComponent(copySource.replace(/^\//, '')).split('?')[0] ?? '';
    if (source.startsWith(`${VAULT}/`)) note('s3:GetObject', source.slice(VAULT.length + 1));
  }
  if (bucket !== VAULT) return;
  // A listing is granted on the whole vault prefix (infra/vault-bucket.ts), recorded by the folder it lists.
  const listed = url.searchParams.get('prefix');
  if (url.searchParams.has('list-type') && listed !== null) note('s3:ListBucket', listed);
  const action = actionOf(request.method, url.searchParams, copySource !== undefined);
  if (action !== undefined) note(action, decodeURIComponent(rest.join('/')));
});

/** DeleteObjects names its keys in the body: recorded from the SDK call that sends it. */
function recordDeletes(client: S3Client) {
  client.middlewareStack.add(
    (next) => async (args) => {
      const input = args.input as {
        Bucket?: string;
        Delete?: { Objects?: Array<{ Key?: string }> };
      };
      if (input.Bucket === VAULT)
        for (const object of input.Delete?.Objects ?? []) note('s3:DeleteObject', object.Key ?? '');
      return next(args);
    },
    { step: 'initialize', name: 'vaultDeleteRecorder' },
  );
}

/** The deps with the keys of their batch deletes recorded. */
function recorded(deps: WorkflowDeps & { close(): void }): WorkflowDeps & { close(): void } {
  const instrumented = new WeakSet<S3Client>();
  const once = (client: S3Client) => {
    if (!instrumented.has(client)) recordDeletes(client);
    instrumented.add(client);
    return client;
  };
  once(deps.vault.client);
  return {
    ...deps,
    close: () => deps.close(),
    s3: async (location) => once(await deps.s3(location)),
  };
}

const stepOfState = new Map<string, string>();
for (const workflow of ['backup', 'restore'] as const)
  for (const { name, states } of stepsOf(workflow))
    for (const state of states) stepOfState.set(state, name);

let s3: S3ServerHandle;
let client: S3Client;
let cluster: FakeCluster;

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-vault-prefixes', computeChecksums: true });
  client = clientFor(s3);
  for (const bucket of ['registry', VAULT, 'restored']) await createBucket(client, bucket);
  cluster = await startFakeCluster({ tls: true });
  await cluster.seedAcpRegistry(storageOn(s3, 'registry'));
  await cluster.waitForReadyPod(30_000);
  await populateRegistry(new URL(cluster.registryUrl).host, {
    repositories: 3,
    tagsPerRepository: 2,
    layerSizes: [3000, 40_000],
  });
  const deps = () =>
    recorded(
      vaultDeps(s3, VAULT, ROOT, {
        kube: { path: cluster.kubeconfigPath },
        registryUrl: cluster.registryUrl,
      }),
    );
  const options = (d: WorkflowDeps) => ({
    deps: d,
    waitMs: 100,
    onState: (state: string) => step.enterWith(stepOfState.get(state) ?? state),
  });
  for (let i = 0; i < 2; i++) {
    const d = deps();
    const backup = await step.run('copy-worker', () => runBackupLocally({}, options(d)));
    d.close();
    expect(backup.cause).toBeUndefined();
  }
  const d = deps();
  const restore = await step.run('copy-worker', () =>
    runRestoreLocally(
      {
        target: {
          bucket: 'restored',
          endpoint: s3.endpoint,
          region: s3.region,
          secretName: 'registry-s3-secret',
        },
        rolloutTimeoutSeconds: 60,
      },
      options(d),
    ),
  );
  expect(restore.cause).toBeUndefined();
  await step.run('prune', () => prune(d.vault, { keepLast: 1 }, { now: new Date(), graceMs: 0 }));
  d.close();
}, 300_000);

afterAll(async () => {
  client?.destroy();
  await cluster?.stop();
  await s3?.stop();
});

/** What a row grants in each folder: its level's actions, and its run-lease writes on locks/. */
function grantedBy(name: FunctionName): Set<string> {
  const spec: FunctionSpec = FUNCTIONS[name];
  const granted = new Set<string>();
  for (const [folder, access] of Object.entries(spec.vault))
    for (const action of VAULT_ACTIONS[access]) granted.add(`${folder} ${action}`);
  // Any vault access lists the vault prefix: ListBucket is granted on it whole, not by folder.
  if (Object.keys(spec.vault).length > 0)
    for (const folder of ['blobs', 'snapshots', 'runs', 'locks'])
      granted.add(`${folder} s3:ListBucket`);
  if (spec.runLease !== undefined) granted.add('locks s3:PutObject');
  if (spec.runLease === 'release') granted.add('locks s3:DeleteObject');
  return granted;
}

describe('the vault folders of each function', () => {
  it('names the step of every vault request made', () => {
    // Assess
    expect([...seen.keys()].filter((who) => !(who in FUNCTIONS))).toEqual([]);
  });

  it.each([
    ['discover'],
    ['plan'],
    ['enqueue-shards'],
    ['count-shards'],
    ['copy-worker'],
    ['finalize'],
    ['resolve'],
    ['preflight'],
    ['prove'],
    ['switch'],
    ['verify'],
    ['prune'],
  ] as const)('lets %s reach every folder its step reached, with the actions it used', (name) => {
    // Act
    const used = [...(seen.get(name) ?? [])].sort();
    const outside = used.filter((use) => !grantedBy(name).has(use));

    // Assess
    expect(used.length).toBeGreaterThan(0);
    expect(outside).toEqual([]);
  });

  it('keeps every step but prune and the copy worker from deleting outside the leases, and the copy worker to the pool', () => {
    // Act
    const deleters = (Object.keys(FUNCTIONS) as FunctionName[]).flatMap((name) =>
      [...grantedBy(name)]
        .filter((grant) => grant.endsWith('s3:DeleteObject') && !grant.startsWith('locks '))
        .map((grant) => `${name}: ${grant.split(' ')[0]}`),
    );

    // Assess
    expect(deleters.sort()).toEqual([
      'copy-worker: blobs',
      'prune: blobs',
      'prune: runs',
      'prune: snapshots',
    ]);
  });
});
