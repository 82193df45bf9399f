/**
 * `regvault backup --include-namespaces` in one fake cluster and `regvault
 * restore --resources` into a second, as users run them (the CLI as a child
 * process, a real S3 server for the vault, a real registry serving the
 * images the workloads are mapped to, kubectl-grade fake API servers).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { OciLayout, pushImage } from '../../sandbox/images/index.ts';
import {
  type FakeCluster,
  startFakeCluster,
  writeKubeconfigContexts,
} from '../../sandbox/kube/index.ts';
import { BuiltIn } from '../../sandbox/kube/resources.ts';
import type { KubeObject } from '../../sandbox/kube/store.ts';
import { type RegistryHandle, startRegistry } from '../../sandbox/registry/index.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import { fakeRegistries } from '../kube/fake-registry.ts';
import { jsonLines, runRegvault, sandboxEnv } from '../support/cli.ts';
import { serverWithBuckets, storageOn } from '../support/s3.ts';
import { OLD_REGISTRY, SECRET_VALUE, seedApplications } from './fixture.ts';

let s3: S3ServerHandle;
let source: FakeCluster;
let target: FakeCluster;
let registry: RegistryHandle;
let dir: string;
let kubeconfig: string;
let env: NodeJS.ProcessEnv;
let backupOutput: string;

/** One of the seed's rules: remove `path` from nginx objects of a type in namespace default. */
const seedRule = (groupResource: string, nameRegex: string | undefined, path: string) =>
  [
    '- conditions:',
    `    groupResource: ${groupResource}`,
    ...(nameRegex === undefined ? [] : [`    resourceNameRegex: "${nameRegex}"`]),
    '    namespaces: [default]',
    '    labelSelector: {matchLabels: {app: nginx}}',
    '  patches:',
    '  - operation: remove',
    `    path: "${path}"`,
  ].join('\n');

/** The seed's modifiers: node affinity off the nginx StatefulSet's template, affinity off its pods. */
const SEED_MODIFIERS = [
  'version: v1',
  'resourceModifierRules:',
  seedRule('statefulsets.apps', undefined, '/spec/template/spec/affinity/nodeAffinity'),
  seedRule('pods', '^web.*$', '/spec/affinity'),
  '',
].join('\n');

const regvault = (args: readonly string[]) =>
  runRegvault([...args, '--kubeconfig', kubeconfig], env);

/** `restore --resources` into the target cluster with `flags`. */
const restoreInto = (flags: readonly string[]) =>
  regvault(['restore', '--resources', '--context', 'target', ...flags]);

/** The mappings of the seed's restore, onto the registry this test runs. */
const mappingFlags = (namespace: string) => [
  '--namespace-mapping',
  `default=${namespace}`,
  '--storage-class-mapping',
  'alicloud-disk-topology-alltype=gp3',
  '--image-registry-mapping',
  `${OLD_REGISTRY}=${registry.host}/team`,
  '--image-registry-mapping',
  `docker.io/library=${registry.host}/library`,
];

async function file(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

const targetObject = (
  ref: Parameters<FakeCluster['server']['store']['get']>[0],
  namespace: string | undefined,
  name: string,
) => target.server.store.get(ref, namespace, name);

/** The value at `keys` inside `value`, or undefined where the way ends. */
const dig = (value: unknown, ...keys: Array<string | number>): unknown =>
  keys.reduce<unknown>(
    (node, key) => (typeof node === 'object' && node !== null ? Reflect.get(node, key) : undefined),
    value,
  );

const podSpecOf = (object: KubeObject | undefined) =>
  ((object?.['spec'] as { template?: { spec?: Record<string, unknown> } } | undefined)?.template
    ?.spec ?? {}) as { affinity?: unknown; containers?: Array<{ image: string }> };

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'resources-restore-'));
  ({ server: s3 } = await serverWithBuckets('resources-restore', ['vault', 'registry']));
  const start = fakeRegistries().start;
  [source, target, registry] = await Promise.all([
    startFakeCluster({ tls: true, startRegistry: start }),
    startFakeCluster({ tls: true, startRegistry: start }),
    startRegistry({ storage: { kind: 'filesystem' } }),
  ]);
  await source.seedAcpRegistry(storageOn(s3, 'registry'));
  seedApplications(source);
  // The images the workloads pull, in the registry they are mapped to.
  const layout = await OciLayout.create();
  try {
    for (const [repository, tag] of [
      ['team/nginx', '1.14.1-8.6'],
      ['team/migrate', '2'],
      ['team/shop', '3'],
      ['library/busybox', '1.36'],
    ] as const) {
      const ref = `${repository.replace('/', '-')}-${tag}`;
      await layout.addImage(ref, [{ seed: ref, size: 512 }]);
      await pushImage(layout, ref, `${registry.host}/${repository}:${tag}`);
    }
  } finally {
    await layout.remove();
  }
  kubeconfig = await writeKubeconfigContexts(join(dir, 'kubeconfig'), [
    { server: source.api, certificateAuthority: source.server.caCert ?? '', context: 'source' },
    { server: target.api, certificateAuthority: target.server.caCert ?? '', context: 'target' },
  ]);
  env = sandboxEnv(s3, 'vault');
  const backup = await regvault([
    'backup',
    '--context',
    'source',
    '--include-namespaces',
    'default',
    '--json',
  ]);
  if (backup.code !== 0) throw new Error(`the backup failed: ${backup.stderr}`);
  backupOutput = backup.stdout;
}, 180_000);

afterAll(async () => {
  await Promise.all([source?.stop(), target?.stop(), registry?.stop()]);
  await s3?.stop();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

describe('restore --resources into a second cluster', () => {
  it('counts what the backup captured in its summary', () => {
    // Act
    const result = jsonLines(backupOutput).at(-1) as { snapshot: { message: string } };
    // Assess: the default namespace's Secret and the registry's storage Secret
    expect(result.snapshot.message).toMatch(
      /, and \d+ cluster objects of \d+ types \(2 Secrets\)$/,
    );
  });

  it('applies every object in order with the seed mappings and modifiers, and proves workloads Ready', async () => {
    // Prepare
    const modifiers = await file('seed-modifiers.yaml', SEED_MODIFIERS);
    // Act
    const restored = await restoreInto([
      ...mappingFlags('default1'),
      '--resource-modifiers',
      modifiers,
      '--ready-timeout',
      '20',
      '--json',
    ]);
    // Assess
    const lines = jsonLines(restored.stdout);
    const result = lines.at(-1) as {
      ok: boolean;
      resources: {
        counts: Record<string, number>;
        workloads: Array<{ name: string; ready: boolean }>;
        mismatches: string[];
      };
    };
    expect({ code: restored.code, stderr: restored.stderr }).toEqual({ code: 0, stderr: '' });
    expect(result.resources.mismatches).toEqual([]);
    expect(result.resources.workloads).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ name: 'web', ready: true }),
        expect.objectContaining({ name: 'shop', ready: true }),
      ]),
    );
    const order = lines
      .filter((l) => l['event'] === 'resource')
      .map((l) => String(l['groupResource']));
    expect(order.indexOf('namespaces')).toBe(0);
    expect(order.indexOf('customresourcedefinitions.apiextensions.k8s.io')).toBeLessThan(
      order.indexOf('serviceaccounts'),
    );
    expect(order.indexOf('secrets')).toBeLessThan(order.indexOf('persistentvolumeclaims'));
    expect(order.indexOf('persistentvolumeclaims')).toBeLessThan(
      order.indexOf('statefulsets.apps'),
    );
    expect(order.indexOf('pods')).toBeLessThan(order.indexOf('widgets.example.com'));
    const sts = targetObject(BuiltIn.statefulsets, 'default1', 'web');
    expect(podSpecOf(sts).containers?.[0]?.image).toBe(`${registry.host}/team/nginx:1.14.1-8.6`);
    expect(podSpecOf(sts).affinity).toEqual({});
    expect(dig(sts, 'spec', 'volumeClaimTemplates', 0, 'spec', 'storageClassName')).toBe('gp3');
    const pod = targetObject(BuiltIn.pods, 'default1', 'web-0');
    expect(dig(pod, 'spec', 'affinity')).toBeUndefined();
    expect(pod?.metadata['ownerReferences']).toEqual([
      expect.objectContaining({ kind: 'StatefulSet', name: 'web', uid: sts?.metadata.uid }),
    ]);
    const shop = podSpecOf(targetObject(BuiltIn.deployments, 'default1', 'shop')) as {
      initContainers?: Array<{ image: string }>;
    };
    expect(shop.initContainers?.[0]?.image).toBe(`${registry.host}/team/migrate:2`);
    expect(targetObject(BuiltIn.persistentvolumeclaims, 'default1', 'shop-data')?.['spec']).toEqual(
      expect.objectContaining({ storageClassName: 'gp3' }),
    );
    const secret = targetObject(BuiltIn.secrets, 'default1', 'shop-db');
    expect(Buffer.from(String(dig(secret, 'data', 'password')), 'base64').toString()).toBe(
      SECRET_VALUE,
    );
    expect(secret?.metadata['managedFields']).toEqual([
      expect.objectContaining({ manager: 'regvault', operation: 'Apply' }),
    ]);
    expect(
      target.server.store.get(target.server.moduleInfo, undefined, 'image-registry'),
    ).toBeDefined();
    expect(restored.stdout).not.toContain(SECRET_VALUE);
  });

  it('prints the mapped and modified YAML in a dry run and writes nothing', async () => {
    // Prepare
    const modifiers = await file('dry-modifiers.yaml', SEED_MODIFIERS);
    const before = target.server.store.resourceVersion();
    // Act
    const dry = await restoreInto([
      '--dry-run',
      ...mappingFlags('dry-run'),
      '--resource-modifiers',
      modifiers,
    ]);
    // Assess
    expect({ code: dry.code, stderr: dry.stderr }).toEqual({ code: 0, stderr: '' });
    expect(target.server.store.resourceVersion()).toBe(before);
    expect(target.server.store.get(BuiltIn.namespaces, undefined, 'dry-run')).toBeUndefined();
    expect(dry.stdout).toMatch(/^create namespaces dry-run$/m);
    expect(dry.stdout).toMatch(/^create statefulsets\.apps dry-run\/web \(modifier rules 0\)$/m);
    expect(dry.stdout).toContain(`image: ${registry.host}/team/nginx:1.14.1-8.6`);
    expect(dry.stdout).toContain('storageClassName: gp3');
    expect(dry.stdout).toContain('password: (redacted, ');
    expect(dry.stdout).not.toContain(SECRET_VALUE);
    expect(dry.stdout).toContain('dry run, nothing written: would create');
  });

  it('skips objects that exist, and with --existing update takes them back', async () => {
    // Prepare
    const first = await restoreInto([...mappingFlags('again'), '--ready-timeout', '20']);
    const settings = targetObject(BuiltIn.configmaps, 'again', 'shop-settings') as KubeObject;
    target.server.store.replace(BuiltIn.configmaps, { ...settings, data: { color: 'red' } });
    // Act
    const skipped = await restoreInto([...mappingFlags('again'), '--json']);
    const colorAfterSkip = dig(
      targetObject(BuiltIn.configmaps, 'again', 'shop-settings'),
      'data',
      'color',
    );
    const updated = await restoreInto([...mappingFlags('again'), '--existing', 'update', '--json']);
    // Assess
    expect(first.code).toBe(0);
    const counts = (run: { stdout: string }) =>
      (jsonLines(run.stdout).at(-1) as { resources: { counts: Record<string, number> } }).resources
        .counts;
    expect(counts(skipped)).toEqual(expect.objectContaining({ create: 0, update: 0, failed: 0 }));
    expect(colorAfterSkip).toBe('red');
    expect(counts(updated)).toEqual(expect.objectContaining({ create: 0, skip: 0, failed: 0 }));
    expect(dig(targetObject(BuiltIn.configmaps, 'again', 'shop-settings'), 'data', 'color')).toBe(
      'blue',
    );
  });

  it('reports workloads that cannot pull their images as not Ready, with why (exit 3)', async () => {
    // Act: no image mapping, so the images stay on the old registry the sandbox cannot reach
    const restored = await restoreInto([
      '--namespace-mapping',
      'default=unmapped',
      '--ready-timeout',
      '5',
    ]);
    // Assess
    expect(restored.code).toBe(3);
    // The registry's own Deployment is Ready when this test restores it first: only the two count here.
    expect(restored.stdout).toMatch(/workloads Ready: [01] of [23]/);
    expect(restored.stdout).toMatch(/deployments\.apps unmapped\/shop not Ready: ErrImagePull/);
    expect(restored.stdout).toMatch(
      /statefulsets\.apps unmapped\/web not Ready: ErrImagePull: .*anolis-registry\.cn-zhangjiakou\.cr\.aliyuncs\.com cannot be reached/,
    );
  });
});

describe('restore --resources refuses bad input before any write', () => {
  it.each([
    [
      "the seed's second rule as printed, its path outside the patch",
      SEED_MODIFIERS.replace(
        '  - operation: remove\n    path: "/spec/affinity"',
        '  - operation: remove\n  path: "/spec/affinity"',
      ),
      [
        'resourceModifierRules[1]: unknown field "path"',
        'a patch (operation, path, from, value) is a list item under patches',
      ],
    ],
    [
      'a patch the snapshot has no field for',
      SEED_MODIFIERS.replace('path: "/spec/affinity"', 'path: "/spec/tolerations"'),
      [
        'resourceModifierRules[1].patches[0] (remove /spec/tolerations) on pods default/web-0: "/spec/tolerations" does not exist',
      ],
    ],
  ])('refuses modifiers with %s (exit 2), naming the rule and field', async (_case, text, said) => {
    // Prepare
    const modifiers = await file(`bad-${_case.length}.yaml`, text);
    const before = target.server.store.resourceVersion();
    // Act
    const refused = await restoreInto([
      ...mappingFlags('refused'),
      '--resource-modifiers',
      modifiers,
    ]);
    // Assess
    expect(refused.code).toBe(2);
    for (const text of said) expect(refused.stderr).toContain(text);
    expect(target.server.store.resourceVersion()).toBe(before);
  });

  it('reads the modifiers from a ConfigMap in the target cluster, and refuses one with two keys', async () => {
    // Prepare
    target.server.store.create(BuiltIn.namespaces, {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'csdr' },
    });
    target.server.store.create(BuiltIn.configmaps, {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'two-keys', namespace: 'csdr' },
      data: { a: SEED_MODIFIERS, b: SEED_MODIFIERS },
    });
    target.server.store.create(BuiltIn.configmaps, {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'modifier', namespace: 'csdr' },
      data: { modifier: SEED_MODIFIERS },
    });
    const before = target.server.store.resourceVersion();
    // Act
    const refused = await restoreInto([
      '--dry-run',
      '--resource-modifiers',
      'configmap:csdr/two-keys',
    ]);
    const dry = await restoreInto([
      '--dry-run',
      ...mappingFlags('from-cm'),
      '--resource-modifiers',
      'configmap:csdr/modifier',
    ]);
    // Assess
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('ConfigMap csdr/two-keys has 2 data keys');
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(/pods from-cm\/web-0 \(modifier rules 1\)/);
    expect(target.server.store.resourceVersion()).toBe(before);
  });

  it('refuses bad mappings, every one named with its flag (exit 2), and writes nothing', async () => {
    // Prepare
    const before = target.server.store.resourceVersion();
    // Act
    const refused = await restoreInto([
      '--namespace-mapping',
      'Default=prod,default',
      '--storage-class-mapping',
      'a=b=c',
      '--image-registry-mapping',
      'https://old.example.com=new.example.com',
    ]);
    const policy = await restoreInto(['--existing', 'overwrite', '--target-bucket', 'b']);
    // Assess
    expect(refused.code).toBe(2);
    for (const said of [
      '--namespace-mapping "Default=prod": "Default" is not namespace names',
      '--namespace-mapping "default": expected old=new, e.g. default=default1',
      '--storage-class-mapping "a=b=c": expected old=new',
      '--image-registry-mapping "https://old.example.com=new.example.com": "https://old.example.com" is not image prefixes',
    ])
      expect(refused.stderr).toContain(said);
    expect(policy.code).toBe(2);
    expect(policy.stderr).toContain(
      '--existing: "overwrite" is not a policy; give skip (the default) or update',
    );
    expect(policy.stderr).toContain(
      '--target-bucket: restore --resources applies cluster objects only',
    );
    expect(target.server.store.resourceVersion()).toBe(before);
  });

  it('refuses resource flags on a data restore, and a bad capture selection on backup', async () => {
    // Act
    const alone = await regvault(['restore', '--target-bucket', 'b', '--namespace-mapping', 'a=b']);
    const selection = await regvault([
      'backup',
      '--context',
      'source',
      '--include-namespaces',
      'Bad_NS',
    ]);
    // Assess
    expect(alone.code).toBe(2);
    expect(alone.stderr).toContain('--namespace-mapping: only `restore --resources` takes it');
    expect(selection.code).toBe(2);
    expect(selection.stderr).toContain('--include-namespaces ("Bad_NS"): a namespace name');
  });
});
