/**
 * The sandbox's Quay Operator (issue 20's test bed), as kubectl and
 * client-node see it: the QuayRegistry type is served, it reconciles into
 * Deployments whose replicas follow the overrides (with the HPA unmanaged),
 * quay-app pods serve the registry API as Quay does (rows in the database,
 * blobs at Quay's keys in the config bundle's bucket), the
 * postgres pod runs real pg_dump through pods/exec, Available follows the
 * pods, and before 3.7 the operator is a Deployment whose scale to 0 lets
 * the components stay scaled down.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import {
  AppsV1Api,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import { pushOneLayerImage } from '../../sandbox/images/index.ts';
import {
  type KubeApiServer,
  startKubeApiServer,
  writeKubeconfig,
} from '../../sandbox/kube/index.ts';
import {
  QUAY_REGISTRY,
  type QuayOperator,
  seedQuayRegistry,
  startQuayOperator,
} from '../../sandbox/kube/quay-operator.ts';
import { BuiltIn } from '../../sandbox/kube/resources.ts';
import { startQuayApp } from '../../sandbox/quay-app.ts';
import { ONE_IMAGE, quayRows, seedQuayDatabase } from '../../sandbox/quay-schema.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, createBucket, listAll, storageOn } from '../support/s3.ts';

const run = promisify(execFile);
const NS = 'quay-enterprise';
const OLD_NS = 'quay-old';
/** kubectl asks for a user and password over TLS without a credential: a token it is. */
const TOKEN = 'quay-operator-token';

let s3: S3ServerHandle;
let dir: string;

interface Bed {
  api: KubeApiServer;
  operator: QuayOperator;
  kubeconfig: string;
}
let current: Bed;
let older: Bed;

async function bed(version: string, namespace: string, bucket: string): Promise<Bed> {
  const api = await startKubeApiServer({ token: TOKEN });
  const operator = await startQuayOperator({ server: api, version });
  const kubeconfig = await writeKubeconfig(join(dir, `kubeconfig-${version}`), {
    server: api.url,
    token: TOKEN,
    ...(api.caCert === undefined ? {} : { certificateAuthority: api.caCert }),
  });
  await createBucket(clientFor(s3), bucket);
  seedQuayRegistry(api, { namespace, name: 'registry', ...storageOn(s3, bucket) });
  await operator.waitForAvailable(namespace, 'registry', 60_000);
  return { api, operator, kubeconfig };
}

async function kubectl(b: Bed, ...args: string[]): Promise<string> {
  const env = { ...process.env };
  delete env['KUBECONFIG'];
  return (
    await run(
      'kubectl',
      ['--kubeconfig', b.kubeconfig, '--cache-dir', join(dir, 'cache'), ...args],
      {
        env,
        timeout: 30_000,
      },
    )
  ).stdout;
}

/** `kubectl exec` into the first pod of a component. */
const execInto = (b: Bed, namespace: string, component: string, ...command: string[]) =>
  kubectl(
    b,
    'exec',
    '-n',
    namespace,
    podsOf(b, namespace, component)[0]?.metadata.name ?? '',
    '--',
    ...command,
  );

const podsOf = (b: Bed, namespace: string, component: string) =>
  b.api.store
    .list(BuiltIn.pods, namespace)
    .filter((pod) => pod.metadata.labels?.['quay-component'] === component);

const replicasOf = (b: Bed, namespace: string, name: string) =>
  (b.api.store.get(BuiltIn.deployments, namespace, name)?.['spec'] as { replicas?: number })
    ?.replicas;

async function until(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const available = (b: Bed, namespace: string) => {
  const quay = b.api.store.get(QUAY_REGISTRY, namespace, 'registry');
  const conditions = ((quay?.['status'] as { conditions?: Array<{ type: string; status: string }> })
    ?.conditions ?? []) as Array<{ type: string; status: string }>;
  return conditions.find((c) => c.type === 'Available')?.status;
};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'quay-operator-test-'));
  s3 = await startS3Server({ name: 's3-quay-operator' });
  current = await bed('3.9.1', NS, 'quay-current');
  older = await bed('3.6.4', OLD_NS, 'quay-older');
}, 180_000);

afterAll(async () => {
  for (const b of [current, older]) {
    await b?.operator.stop();
    await b?.api.stop();
  }
  await s3?.stop();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

describe('the sandbox Quay Operator, 3.7 and later', () => {
  it('serves QuayRegistry to kubectl and client-node, Available once reconciled', async () => {
    // Act
    const listed = await kubectl(current, 'get', 'quayregistries', '-n', NS, '-o', 'name');
    const kc = new KubeConfig();
    kc.loadFromFile(current.kubeconfig);
    const read = (await kc.makeApiClient(CustomObjectsApi).getNamespacedCustomObject({
      group: 'quay.redhat.com',
      version: 'v1',
      namespace: NS,
      plural: 'quayregistries',
      name: 'registry',
    })) as { status: { conditions: Array<{ type: string; status: string }> } };
    const waited = await kubectl(
      current,
      'wait',
      'quayregistry/registry',
      '-n',
      NS,
      '--for=condition=Available=true',
      '--timeout=20s',
    );

    // Assess
    expect(listed.trim()).toBe('quayregistry.quay.redhat.com/registry');
    expect(read.status.conditions).toContainEqual(
      expect.objectContaining({ type: 'Available', status: 'True' }),
    );
    expect(waited).toContain('condition met');
  });

  it('generates the managed-secret-keys Secret with DB_URI naming the database', async () => {
    // Act
    const uri = await kubectl(
      current,
      'get',
      'secret',
      '-n',
      NS,
      'registry-quay-registry-managed-secret-keys',
      '-o',
      'jsonpath={.data.DB_URI}',
    );

    // Assess
    expect(Buffer.from(uri, 'base64').toString('utf8')).toMatch(
      /^postgresql:\/\/.+\/registry-quay-database$/,
    );
  });

  it('prints the running config.yaml through kubectl exec into a quay-app pod', async () => {
    // Act
    const config = await execInto(current, NS, 'quay-app', 'cat', '/conf/stack/config.yaml');

    // Assess
    expect(config).toContain('bucket_name: quay-current');
    expect(config).toContain('DB_URI: postgresql://');
  });

  it('serves the registry API from the bucket through its Service URL', async () => {
    // Prepare
    const url = await current.operator.serviceUrl(NS, 'registry');

    // Act
    const digest = await pushOneLayerImage(`${new URL(url).host}/team/web:v1`, 'quay-op', 2_000);
    const tags = (await (await fetch(`${url}/v2/team/web/tags/list`)).json()) as { tags: string[] };

    // Assess
    expect(digest).toMatch(/^sha256:/);
    expect(tags.tags).toEqual(['v1']);
  });

  it("keeps a push as Quay does: blobs at Quay's keys under storage_path, the manifest and tag as rows", async () => {
    // Prepare
    const url = await current.operator.serviceUrl(NS, 'registry');

    // Act
    const digest = await pushOneLayerImage(
      `${new URL(url).host}/team/api:v2`,
      'quay-layout',
      3_000,
    );

    // Assess: no Distribution layout; every key is sha256/<2 hex>/<its 64 hex> below storage_path.
    const keys = [...(await listAll(clientFor(s3), 'quay-current')).keys()];
    expect(keys.length).toBeGreaterThanOrEqual(2);
    for (const key of keys) {
      expect(key).not.toContain('docker/registry/v2');
      expect(key).toMatch(/^datastorage\/registry\/sha256\/([0-9a-f]{2})\/\1[0-9a-f]{62}$/);
    }
    const rows = await quayRows(
      await current.operator.database(NS, 'registry'),
      'registry-quay-database',
    );
    const row = rows.find((line) => line.startsWith('team/api:v2 '));
    expect(row?.split(' ')[1]).toBe(digest);
    // Every blob the rows name for it is in the bucket at its key.
    for (const blob of (row?.split(' ')[2] ?? '').split(',')) {
      const hex = blob.split('=')[0]?.replace('sha256:', '') ?? '';
      expect(keys).toContain(`datastorage/registry/sha256/${hex.slice(0, 2)}/${hex}`);
    }
    const manifest = await fetch(`${url}/v2/team/api/manifests/v2`);
    expect(manifest.headers.get('docker-content-digest')).toBe(digest);
    const bytes = Buffer.from(await manifest.arrayBuffer());
    expect(`sha256:${createHash('sha256').update(bytes).digest('hex')}`).toBe(digest);
  });

  it('runs pg_dump in the postgres pod through kubectl exec', async () => {
    // Prepare
    const postgres = await current.operator.database(NS, 'registry');
    const image = { ...ONE_IMAGE, repository: 'dumped' };
    await seedQuayDatabase(postgres, 'registry-quay-database', [image]);

    // Act
    const dump = await execInto(
      current,
      NS,
      'postgres',
      '/usr/bin/pg_dump',
      '-C',
      'registry-quay-database',
    );

    // Assess
    expect(dump).toContain('CREATE DATABASE "registry-quay-database"');
    expect(dump).toContain(ONE_IMAGE.manifestDigest);
    expect(await quayRows(postgres, 'registry-quay-database')).toContainEqual(
      expect.stringMatching(/^team\/dumped:v1 /),
    );
  });

  it('scales quay, clair and mirror to the overrides only once the HPA is unmanaged, and back', async () => {
    // Prepare
    const patch = (components: unknown[]) =>
      kubectl(
        current,
        'patch',
        'quayregistry',
        'registry',
        '-n',
        NS,
        '--type',
        'merge',
        '-p',
        JSON.stringify({ spec: { components } }),
      );
    const spec = current.api.store.get(QUAY_REGISTRY, NS, 'registry')?.['spec'] as {
      components: Array<{ kind: string; managed: boolean }>;
    };
    const original = spec.components;
    const zero = (hpaManaged: boolean) =>
      original.map((c) =>
        ['quay', 'clair', 'mirror'].includes(c.kind)
          ? { ...c, overrides: { replicas: 0 } }
          : c.kind === 'horizontalpodautoscaler'
            ? { ...c, managed: hpaManaged }
            : c,
      );

    // Act
    await patch(zero(true));
    await current.operator.sync();
    const withHpa = replicasOf(current, NS, 'registry-quay-app');
    await patch(zero(false));
    await until('quay-app pods gone', () => podsOf(current, NS, 'quay-app').length === 0);
    await until('Available False', () => available(current, NS) === 'False');
    const down = ['quay-app', 'clair-app', 'quay-mirror'].map((c) => podsOf(current, NS, c).length);
    await patch(original);
    await current.operator.waitForAvailable(NS, 'registry', 30_000);

    // Assess
    expect(withHpa).toBe(2);
    expect(down).toEqual([0, 0, 0]);
    expect(podsOf(current, NS, 'postgres')).toHaveLength(1);
    expect(podsOf(current, NS, 'quay-app')).toHaveLength(2);
  });
});

describe('the sandbox Quay Operator before 3.7', () => {
  it('runs the operator as a Deployment and makes no managed-secret-keys', async () => {
    // Act
    const deployments = await kubectl(
      older,
      'get',
      'deployments',
      '-n',
      'openshift-operators',
      '-o',
      'name',
    );

    // Assess
    expect(deployments.trim()).toBe('deployment.apps/quay-operator.v3.6.4');
    expect(
      older.api.store.get(BuiltIn.secrets, OLD_NS, 'registry-quay-registry-managed-secret-keys'),
    ).toBeUndefined();
  });

  it('scales quay-app back while the operator runs, and leaves it at 0 once the operator is scaled to 0', async () => {
    // Prepare
    const kc = new KubeConfig();
    kc.loadFromFile(older.kubeconfig);
    const apps = kc.makeApiClient(AppsV1Api);

    // Act
    await kubectl(older, 'scale', 'deployment', 'registry-quay-app', '-n', OLD_NS, '--replicas=0');
    await until(
      'the operator to scale quay-app back',
      () => replicasOf(older, OLD_NS, 'registry-quay-app') === 2,
    );
    await kubectl(
      older,
      'scale',
      'deployment',
      'quay-operator.v3.6.4',
      '-n',
      'openshift-operators',
      '--replicas=0',
    );
    for (const name of ['registry-quay-app', 'registry-quay-mirror', 'registry-clair-app'])
      await apps.patchNamespacedDeployment(
        {
          name,
          namespace: OLD_NS,
          body: { spec: { replicas: 0 } },
        },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
    await until('quay-app pods gone', () => podsOf(older, OLD_NS, 'quay-app').length === 0);
    await older.operator.sync();
    const stayed = replicasOf(older, OLD_NS, 'registry-quay-app');
    await kubectl(
      older,
      'scale',
      'deployment',
      'quay-operator.v3.6.4',
      '-n',
      'openshift-operators',
      '--replicas=1',
    );
    // The status is stale while the operator is down (it said Available throughout): wait for the pods.
    await until('quay-app pods ready again', () =>
      podsOf(older, OLD_NS, 'quay-app').some((pod) =>
        JSON.stringify(pod['status']).includes('"ready":true'),
      ),
    );

    // Assess
    expect(stayed).toBe(0);
    expect(replicasOf(older, OLD_NS, 'registry-quay-app')).toBe(2);
    expect(available(older, OLD_NS)).toBe('True');
  });
});

describe('a quay-app pod while its process starts', () => {
  it('is in the API (Pending) from the start, and a scale to 0 meanwhile removes it only once the process has stopped', async () => {
    // Prepare: quay-app's start (its migrations, on a real cluster) waits on a gate.
    let open: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const instances: Array<{ running(): boolean }> = [];
    const api = await startKubeApiServer({ token: TOKEN });
    const operator = await startQuayOperator({
      server: api,
      version: '3.9.1',
      intervalMs: 50,
      startQuayApp: async (options) => {
        await gate;
        const instance = await startQuayApp(options);
        instances.push(instance);
        return instance;
      },
    });
    const gated: Bed = { api, operator, kubeconfig: '' };
    const NS_GATED = 'quay-gated';
    await createBucket(clientFor(s3), 'quay-gated');
    try {
      seedQuayRegistry(api, {
        namespace: NS_GATED,
        name: 'registry',
        ...storageOn(s3, 'quay-gated'),
      });
      await until('quay-app pods in the API', () => podsOf(gated, NS_GATED, 'quay-app').length > 0);
      const starting = podsOf(gated, NS_GATED, 'quay-app').map(
        (pod) => (pod['status'] as { phase?: string } | undefined)?.phase,
      );

      // Act: quiesced as a backup does, while the process is still starting.
      const quay = api.store.get(QUAY_REGISTRY, NS_GATED, 'registry');
      if (quay === undefined) throw new Error('the QuayRegistry is gone');
      const spec = quay['spec'] as { components: Array<{ kind: string }> };
      api.store.replace(QUAY_REGISTRY, {
        ...quay,
        spec: {
          ...spec,
          components: spec.components.map((c) =>
            ['quay', 'clair', 'mirror'].includes(c.kind)
              ? { ...c, overrides: { replicas: 0 } }
              : c.kind === 'horizontalpodautoscaler'
                ? { ...c, managed: false }
                : c,
          ),
        },
      });
      await new Promise((resolve) => setTimeout(resolve, 300));
      const whileStarting = podsOf(gated, NS_GATED, 'quay-app').length;
      open();
      await until('quay-app pods gone', () => podsOf(gated, NS_GATED, 'quay-app').length === 0);
      const runningWhenGone = instances.map((instance) => instance.running());

      // Assess
      expect(starting.every((phase) => phase === 'Pending')).toBe(true);
      expect(whileStarting).toBeGreaterThan(0);
      expect(instances).toHaveLength(1);
      expect(runningWhenGone).toEqual([false]);
    } finally {
      open();
      await operator.stop();
      await api.stop();
    }
  });
});
