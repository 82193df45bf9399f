import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import {
  ApiException,
  AppsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import { type FakeCluster, startFakeCluster } from '../../sandbox/kube/index.ts';
import { fakeRegistries } from './fake-registry.ts';
import { acpStorage, seedRegistry } from './support.ts';

const TOKEN = 'client-node-token';
const NS = 'cpaas-system';
const MI = { group: 'cluster.alauda.io', version: 'v1alpha1', plural: 'moduleinfos' } as const;
const mergePatch = () => setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

interface ModuleInfo {
  metadata: { name: string; resourceVersion: string; generation: number };
  spec: { config: { s3storage: Record<string, string> } };
}

let cluster: FakeCluster;
let dir: string;
let kc: KubeConfig;

/** The ApiException a call fails with; fails the test when the call succeeds. */
async function apiError(call: () => Promise<unknown>): Promise<ApiException<unknown>> {
  try {
    await call();
  } catch (err) {
    if (err instanceof ApiException) return err;
    throw err;
  }
  throw new Error('expected the call to fail with an ApiException');
}

/** The registry's ModuleInfo, read by name. */
const registryModuleInfo = async (custom: CustomObjectsApi) =>
  (await custom.getClusterCustomObject({ ...MI, name: 'image-registry' })) as ModuleInfo;

const statusOf = (err: ApiException<unknown>) =>
  JSON.parse(String(err.body)) as Record<string, unknown>;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'client-node-test-'));
  cluster = await startFakeCluster({ token: TOKEN, startRegistry: fakeRegistries().start });
  kc = new KubeConfig();
  kc.loadFromFile(cluster.kubeconfigPath);
});

// Every test starts from the ModuleInfo and Secret as ACP leaves them, whatever an earlier test patched.
beforeEach(async () => {
  await seedRegistry(cluster, acpStorage('AKIA-CLIENT', 'secret-client'));
});

afterAll(async () => {
  await cluster?.stop();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

describe('@kubernetes/client-node against the fake apiserver', () => {
  it('lists ModuleInfos by label and reads one by name', async () => {
    // Prepare
    const custom = kc.makeApiClient(CustomObjectsApi);
    // Act
    const list = (await custom.listClusterCustomObject({
      ...MI,
      labelSelector: 'cpaas.io/module-name=image-registry',
    })) as { kind: string; items: ModuleInfo[] };
    const one = await registryModuleInfo(custom);
    // Assess
    expect(list.kind).toBe('ModuleInfoList');
    expect(list.items.map((item) => item.metadata.name)).toEqual(['image-registry']);
    expect(one.spec.config.s3storage['secretName']).toBe('registry-s3-secret');
  });

  it('merge-patches a ModuleInfo with the resourceVersion as a precondition', async () => {
    // Prepare
    const custom = kc.makeApiClient(CustomObjectsApi);
    const current = await registryModuleInfo(custom);
    // Act
    const patched = (await custom.patchClusterCustomObject(
      {
        ...MI,
        name: 'image-registry',
        body: {
          metadata: { resourceVersion: current.metadata.resourceVersion },
          spec: { config: { s3storage: { bucket: 'registry-b' } } },
        },
      },
      mergePatch(),
    )) as ModuleInfo;
    // Assess
    expect(patched.spec.config.s3storage['bucket']).toBe('registry-b');
    expect(patched.spec.config.s3storage['region']).toBe('us-east-1');
    expect(patched.metadata.generation).toBe(current.metadata.generation + 1);
    expect(Number(patched.metadata.resourceVersion)).toBeGreaterThan(
      Number(current.metadata.resourceVersion),
    );
    const sent = cluster.server.requests().filter((r) => r.method === 'PATCH');
    expect(sent.at(-1)?.contentType).toBe('application/merge-patch+json');
  });

  it('gets 409 with a Conflict Status for a stale resourceVersion', async () => {
    // Prepare
    const custom = kc.makeApiClient(CustomObjectsApi);
    const current = await registryModuleInfo(custom);
    await custom.patchClusterCustomObject(
      { ...MI, name: 'image-registry', body: { metadata: { labels: { touched: 'yes' } } } },
      mergePatch(),
    );
    // Act
    const err = await apiError(() =>
      custom.patchClusterCustomObject(
        {
          ...MI,
          name: 'image-registry',
          body: { metadata: { resourceVersion: current.metadata.resourceVersion }, spec: {} },
        },
        mergePatch(),
      ),
    );
    // Assess
    expect(err.code).toBe(409);
    expect(statusOf(err)).toMatchObject({
      kind: 'Status',
      apiVersion: 'v1',
      status: 'Failure',
      reason: 'Conflict',
      code: 409,
      message:
        'Operation cannot be fulfilled on moduleinfos.cluster.alauda.io "image-registry": the object has been modified; please apply your changes to the latest version and try again',
    });
  });

  it('gets 404 with a NotFound Status for a missing ModuleInfo', async () => {
    // Act
    const err = await apiError(() =>
      kc.makeApiClient(CustomObjectsApi).getClusterCustomObject({ ...MI, name: 'nope' }),
    );
    // Assess
    expect(err.code).toBe(404);
    expect(statusOf(err)).toMatchObject({
      reason: 'NotFound',
      message: 'moduleinfos.cluster.alauda.io "nope" not found',
    });
  });

  it('reads the Secret, lists registry pods by label, reads a pod log and the Deployment', async () => {
    // Prepare
    const core = kc.makeApiClient(CoreV1Api);
    const apps = kc.makeApiClient(AppsV1Api);
    const podName = await cluster.waitForReadyPod();
    // Act
    const secret = await core.readNamespacedSecret({ name: 'registry-s3-secret', namespace: NS });
    const pods = await core.listNamespacedPod({
      namespace: NS,
      labelSelector: 'app=image-registry',
    });
    const none = await core.listNamespacedPod({
      namespace: NS,
      labelSelector: 'app in (other,another)',
    });
    const log = await core.readNamespacedPodLog({
      name: podName,
      namespace: NS,
      container: 'registry',
      tailLines: 50,
    });
    const deployment = await apps.readNamespacedDeployment({
      name: 'image-registry',
      namespace: NS,
    });
    // Assess
    expect(Buffer.from(secret.data?.['secret-access-key'] ?? '', 'base64').toString()).toBe(
      'secret-client',
    );
    expect(pods.items.map((pod) => pod.metadata?.name)).toEqual([podName]);
    const pod = pods.items[0];
    expect(pod?.status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
    expect(pod?.status?.containerStatuses?.[0]?.ready).toBe(true);
    expect(none.items).toEqual([]);
    expect(log).toContain('bucket=registry-a');
    expect(deployment.spec?.replicas).toBe(1);
    expect(deployment.status?.readyReplicas).toBe(1);
    expect(deployment.status?.updatedReplicas).toBe(1);
  });

  it('gets 401 with a wrong token', async () => {
    // Prepare
    const wrong = new KubeConfig();
    wrong.loadFromFile(await cluster.writeKubeconfig(join(dir, 'wrong'), { token: 'wrong-token' }));
    // Act
    const err = await apiError(() =>
      wrong
        .makeApiClient(CoreV1Api)
        .readNamespacedSecret({ name: 'registry-s3-secret', namespace: NS }),
    );
    // Assess
    expect(err.code).toBe(401);
  });

  it('gets 403 with an RBAC-style Status when a rule forbids the call', async () => {
    // Prepare
    cluster.server.setForbidden([{ verb: 'get', resource: 'secrets', namespace: NS }]);
    try {
      // Act
      const err = await apiError(() =>
        kc
          .makeApiClient(CoreV1Api)
          .readNamespacedSecret({ name: 'registry-s3-secret', namespace: NS }),
      );
      // Assess
      expect(err.code).toBe(403);
      expect(statusOf(err)).toMatchObject({
        reason: 'Forbidden',
        message: `secrets "registry-s3-secret" is forbidden: User "regvault" cannot get resource "secrets" in API group "" in the namespace "${NS}"`,
      });
    } finally {
      cluster.server.setForbidden([]);
    }
  });
});
