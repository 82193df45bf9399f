/**
 * The objects the cluster-resources tests capture and restore: the seed's
 * StatefulSet `web` (app=nginx, node affinity, a claim template on a storage
 * class, images from the old registry) and its pod, a Deployment with an init
 * container, a ConfigMap, a Secret, a ServiceAccount, a PVC, a custom resource
 * with its definition, and objects in a second namespace.
 */
import type { FakeCluster } from '../../sandbox/kube/index.ts';
import { BuiltIn, definitionsOfCrd } from '../../sandbox/kube/resources.ts';
import type { KubeObject } from '../../sandbox/kube/store.ts';

/** The image registry the workloads pull from before the restore (the seed's). */
export const OLD_REGISTRY = 'anolis-registry.cn-zhangjiakou.cr.aliyuncs.com/openanolis';
export const SECRET_VALUE = 'p4ssw0rd-never-printed';

const meta = (name: string, namespace?: string, labels?: Record<string, string>) => ({
  name,
  ...(namespace === undefined ? {} : { namespace }),
  ...(labels === undefined ? {} : { labels }),
});

const nodeAffinity = {
  nodeAffinity: {
    requiredDuringSchedulingIgnoredDuringExecution: {
      nodeSelectorTerms: [{ matchExpressions: [{ key: 'is_idc', operator: 'Exists' }] }],
    },
  },
};

/** A Deployment or StatefulSet in `default` labelled and selecting `app`. */
const workload = (
  kind: 'Deployment' | 'StatefulSet',
  name: string,
  app: string,
  replicas: number,
  podSpec: Record<string, unknown>,
): KubeObject => ({
  apiVersion: 'apps/v1',
  kind,
  metadata: meta(name, 'default', { app }),
  spec: {
    replicas,
    selector: { matchLabels: { app } },
    template: { metadata: { labels: { app } }, spec: podSpec },
  },
});

export const WIDGET_CRD: KubeObject = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: meta('widgets.example.com'),
  spec: {
    group: 'example.com',
    scope: 'Namespaced',
    names: { plural: 'widgets', singular: 'widget', kind: 'Widget' },
    versions: [{ name: 'v1', served: true, storage: true }],
  },
};

/** Seeds the objects into `cluster`, straight into its store as controllers and earlier tools left them. */
export function seedApplications(cluster: FakeCluster): void {
  const { store } = cluster.server;
  const create = (ref: Parameters<typeof store.create>[0], object: KubeObject) =>
    store.create(ref, object);
  for (const [name, labels] of [
    ['default', { 'kubernetes.io/metadata.name': 'default' }],
    ['tools', { team: 'ops' }],
  ] as const)
    create(BuiltIn.namespaces, {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: meta(name, undefined, labels),
    });
  const sts = create(BuiltIn.statefulsets, {
    ...workload('StatefulSet', 'web', 'nginx', 2, {
      affinity: nodeAffinity,
      containers: [{ name: 'nginx', image: `${OLD_REGISTRY}/nginx:1.14.1-8.6` }],
    }),
    status: { replicas: 2, readyReplicas: 2 },
  });
  const spec = sts['spec'] as Record<string, unknown>;
  spec['serviceName'] = 'nginx';
  spec['volumeClaimTemplates'] = [
    {
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      metadata: { name: 'www', labels: { app: 'nginx' } },
      spec: {
        accessModes: ['ReadWriteOnce'],
        resources: { requests: { storage: '20Gi' } },
        storageClassName: 'alicloud-disk-topology-alltype',
      },
    },
  ];
  store.replace(BuiltIn.statefulsets, sts);
  create(BuiltIn.pods, {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      ...meta('web-0', 'default', { app: 'nginx' }),
      ownerReferences: [
        {
          apiVersion: 'apps/v1',
          kind: 'StatefulSet',
          name: 'web',
          uid: sts.metadata.uid,
          controller: true,
        },
        {
          apiVersion: 'apps/v1',
          kind: 'ReplicaSet',
          name: 'gone-rs',
          uid: '0000',
          controller: false,
        },
      ],
    },
    spec: {
      nodeName: 'idc-node-1',
      affinity: nodeAffinity,
      containers: [{ name: 'nginx', image: `${OLD_REGISTRY}/nginx:1.14.1-8.6` }],
    },
    status: { phase: 'Running' },
  });
  create(
    BuiltIn.deployments,
    workload('Deployment', 'shop', 'shop', 1, {
      serviceAccountName: 'builder',
      initContainers: [{ name: 'migrate', image: `${OLD_REGISTRY}/migrate:2` }],
      containers: [
        { name: 'shop', image: `${OLD_REGISTRY}/shop:3` },
        { name: 'sidecar', image: 'docker.io/library/busybox:1.36' },
      ],
    }),
  );
  create(BuiltIn.serviceaccounts, {
    apiVersion: 'v1',
    kind: 'ServiceAccount',
    metadata: meta('builder', 'default', { app: 'shop' }),
  });
  create(BuiltIn.configmaps, {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: meta('shop-settings', 'default', { app: 'shop' }),
    data: { color: 'blue' },
  });
  create(BuiltIn.secrets, {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: meta('shop-db', 'default', { app: 'db' }),
    type: 'Opaque',
    data: { password: Buffer.from(SECRET_VALUE).toString('base64') },
  });
  create(BuiltIn.persistentvolumeclaims, {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: meta('shop-data', 'default', { app: 'shop' }),
    spec: {
      accessModes: ['ReadWriteOnce'],
      resources: { requests: { storage: '1Gi' } },
      storageClassName: 'alicloud-disk-topology-alltype',
      volumeName: 'pvc-1234',
    },
    status: { phase: 'Bound' },
  });
  create(BuiltIn.customresourcedefinitions, WIDGET_CRD);
  const [widgets] = definitionsOfCrd(WIDGET_CRD);
  if (widgets === undefined) throw new Error('the widget definition serves no type');
  create(widgets, {
    apiVersion: 'example.com/v1',
    kind: 'Widget',
    metadata: meta('w1', 'default', { app: 'shop' }),
    spec: { size: 3 },
  });
  create(BuiltIn.configmaps, {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: meta('notes', 'tools', { app: 'notes' }),
    data: { text: 'hello' },
  });
}
