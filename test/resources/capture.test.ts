import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { parse } from 'yaml';
import {
  type ResourceSelection,
  resourceSelectionSchema,
} from '../../functions/commons/cluster/resources-select.ts';
import { silentLogger } from '../../functions/commons/log.ts';
import { newSnapshotId } from '../../functions/commons/vault/format.ts';
import { readResourceIndex } from '../../functions/commons/vault/resources.ts';
import { captureResources } from '../../functions/commons/workflows/resources-capture.ts';
import { type FakeCluster, startFakeCluster } from '../../sandbox/kube/index.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import { fakeRegistries } from '../kube/fake-registry.ts';
import { UNREAD_STORAGE } from '../kube/support.ts';
import { readObject, serverWithBuckets, vaultDeps } from '../support/s3.ts';
import { seedApplications } from './fixture.ts';

let s3: S3ServerHandle;
let cluster: FakeCluster;
let deps: ReturnType<typeof vaultDeps>;
let client: Awaited<ReturnType<typeof serverWithBuckets>>['client'];

beforeAll(async () => {
  const started = await serverWithBuckets('resources-capture', ['vault']);
  s3 = started.server;
  client = started.client;
  cluster = await startFakeCluster({ tls: true, startRegistry: fakeRegistries().start });
  await cluster.seedAcpRegistry(UNREAD_STORAGE);
  seedApplications(cluster);
  deps = vaultDeps(s3, 'vault', '', { kube: { path: cluster.kubeconfigPath } });
});

afterAll(async () => {
  deps?.close();
  client?.destroy();
  await cluster?.stop();
  await s3?.stop();
});

/** Captures with `selection` into a new snapshot; its index entries as `group/resource ns/name`. */
async function capture(selection: Partial<ResourceSelection>, pageSize?: number) {
  const snapshotId = newSnapshotId();
  const summary = await captureResources({
    vault: deps.vault,
    api: await deps.resources(),
    snapshotId,
    selection: resourceSelectionSchema.parse(selection),
    required: await deps.profile().requiredObjects(),
    log: silentLogger,
    now: new Date(),
    ...(pageSize === undefined ? {} : { pageSize }),
  });
  const index = await readResourceIndex(deps.vault, snapshotId);
  const names = (index?.objects ?? []).map(
    (o) => `${o.group === '' ? '' : `${o.group}/`}${o.resource} ${o.namespace ?? '-'}/${o.name}`,
  );
  /** One captured object's YAML, parsed. */
  const read = async (file: string) =>
    parse(
      (await readObject(client, 'vault', `snapshots/${snapshotId}/resources/${file}`)).toString(),
    ) as Record<string, unknown> & { metadata: Record<string, unknown> };
  return { snapshotId, summary, index, names, read };
}

/** What the registry profile always brings, whatever the selection. */
const REGISTRY_OBJECTS = [
  'cluster.alauda.io/moduleinfos -/image-registry',
  'secrets cpaas-system/registry-s3-secret',
  'apps/deployments cpaas-system/image-registry',
  'services cpaas-system/image-registry',
  'namespaces -/cpaas-system',
];

describe('capture of cluster objects', () => {
  it.each<[string, Partial<ResourceSelection>, string[], string[]]>([
    [
      '--include-namespaces default',
      { includeNamespaces: ['default'] },
      [
        'apps/statefulsets default/web',
        'pods default/web-0',
        'apps/deployments default/shop',
        'configmaps default/shop-settings',
        'secrets default/shop-db',
        'serviceaccounts default/builder',
        'persistentvolumeclaims default/shop-data',
        'example.com/widgets default/w1',
        'apiextensions.k8s.io/customresourcedefinitions -/widgets.example.com',
        'namespaces -/default',
      ],
      ['configmaps tools/notes', 'namespaces -/tools'],
    ],
    [
      '--exclude-namespaces default',
      { excludeNamespaces: ['default'] },
      ['configmaps tools/notes', 'namespaces -/tools'],
      ['apps/statefulsets default/web', 'namespaces -/default'],
    ],
    [
      '--include-resources configmaps,statefulsets.apps',
      { includeResources: ['configmaps', 'statefulsets.apps'] },
      [
        'apps/statefulsets default/web',
        'configmaps default/shop-settings',
        'configmaps tools/notes',
      ],
      ['pods default/web-0', 'apps/deployments default/shop', 'secrets default/shop-db'],
    ],
    [
      '--exclude-resources secrets,pods',
      { excludeResources: ['secrets', 'pods'] },
      ['apps/deployments default/shop', 'configmaps tools/notes'],
      ['secrets default/shop-db', 'pods default/web-0'],
    ],
    [
      '--selector app=nginx',
      { labelSelector: 'app=nginx' },
      ['apps/statefulsets default/web', 'pods default/web-0', 'namespaces -/default'],
      ['apps/deployments default/shop', 'configmaps tools/notes', 'namespaces -/tools'],
    ],
  ])(
    'with %s takes what it selects and what the registry needs',
    async (_flag, selection, taken, left) => {
      // Act
      const { names } = await capture(selection);
      // Assess
      expect(names).toEqual(expect.arrayContaining([...taken, ...REGISTRY_OBJECTS]));
      for (const name of left) expect(names).not.toContain(name);
      expect(new Set(names).size).toBe(names.length);
    },
  );

  it('stores each object without what the server or the old cluster set', async () => {
    // Act
    const { index, read } = await capture({ includeNamespaces: ['default'] });
    const file = (kind: string, name: string) =>
      index?.objects.find((o) => o.kind === kind && o.name === name)?.file ?? '';
    const sts = await read(file('StatefulSet', 'web'));
    const pod = await read(file('Pod', 'web-0'));
    const pvc = await read(file('PersistentVolumeClaim', 'shop-data'));
    // Assess
    expect(sts['status']).toBeUndefined();
    expect(Object.keys(sts.metadata).sort()).toEqual(['labels', 'name', 'namespace']);
    expect(sts).toEqual(expect.objectContaining({ apiVersion: 'apps/v1', kind: 'StatefulSet' }));
    // The captured owner stays (its uid is the old cluster's: a restore sets the new one); the other goes.
    expect(pod.metadata['ownerReferences']).toEqual([
      { apiVersion: 'apps/v1', kind: 'StatefulSet', name: 'web', controller: true },
    ]);
    expect((pod['spec'] as Record<string, unknown>)['nodeName']).toBeUndefined();
    expect((pvc['spec'] as Record<string, unknown>)['volumeName']).toBeUndefined();
  });

  it('marks Secrets in the index, stores them like the rest, and counts them', async () => {
    // Act
    const { index, summary } = await capture({ includeNamespaces: ['default'] });
    // Assess
    const secrets = index?.objects.filter((o) => o.secret).map((o) => o.name);
    expect(secrets?.sort()).toEqual(['registry-s3-secret', 'shop-db']);
    expect(summary.secrets).toBe(2);
    expect(index?.objects.find((o) => o.name === 'registry-s3-secret')?.required).toBe(true);
  });

  it('reads every type a page at a time with limit and continue', async () => {
    // Prepare
    cluster.server.clearRequests();
    // Act
    const { names } = await capture({ includeNamespaces: ['default'] }, 2);
    // Assess
    const lists = cluster.server
      .requests()
      .filter((r) => r.method === 'GET' && r.query.includes('limit=2'));
    expect(lists.some((r) => r.query.includes('continue='))).toBe(true);
    expect(names.filter((n) => n.startsWith('configmaps default/'))).toEqual([
      'configmaps default/shop-settings',
    ]);
  });
});
