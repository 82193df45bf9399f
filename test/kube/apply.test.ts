import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import {
  type FakeCluster,
  startFakeCluster,
  writeKubeconfigContexts,
} from '../../sandbox/kube/index.ts';
import { waitFor } from '../../sandbox/process.ts';
import { fakeRegistries } from './fake-registry.ts';

const exec = promisify(execFile);
const KUBECTL = process.env['KUBECTL'] ?? 'kubectl';

let source: FakeCluster;
let target: FakeCluster;
let dir: string;
let both: string;

/** kubectl with only the given kubeconfig and a private discovery cache. */
async function kubectl(args: readonly string[], kubeconfig = source.kubeconfigPath) {
  const env = { ...process.env };
  delete env['KUBECONFIG'];
  const { stdout } = await exec(
    KUBECTL,
    ['--kubeconfig', kubeconfig, '--cache-dir', join(dir, 'cache'), ...args],
    { env, timeout: 30_000 },
  );
  return stdout;
}

async function kubectlFails(args: readonly string[]): Promise<string> {
  try {
    await kubectl(args);
  } catch (err) {
    return String((err as { stderr?: unknown }).stderr ?? err);
  }
  throw new Error(`kubectl ${args.join(' ')} succeeded but was expected to fail`);
}

/** A field of Deployment shop/web, by jsonpath. */
const webField = (jsonpath: string, kubeconfig?: string) =>
  kubectl(['get', 'deploy', 'web', '-n', 'shop', '-o', `jsonpath={${jsonpath}}`], kubeconfig);

/** Writes `yaml` to a file in the test's folder and returns its path. */
async function manifest(name: string, yaml: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, yaml);
  return path;
}

const deployment = (replicas: number, extra = '') => `apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  replicas: ${replicas}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: old.example.com/team/web:1}]
${extra}`;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'apply-test-'));
  const start = fakeRegistries().start;
  [source, target] = await Promise.all([
    startFakeCluster({ startRegistry: start }),
    startFakeCluster({ startRegistry: start }),
  ]);
  both = await writeKubeconfigContexts(join(dir, 'both'), [
    { server: source.api, context: 'source' },
    { server: target.api, context: 'target' },
  ]);
});

afterAll(async () => {
  await Promise.all([source?.stop(), target?.stop()]);
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

describe('discovery', () => {
  it('lists the workload, storage and definition types in kubectl api-resources', async () => {
    // Act
    const out = await kubectl(['api-resources', '-o', 'name']);
    // Assess
    expect(out.trim().split('\n')).toEqual(
      expect.arrayContaining([
        'serviceaccounts',
        'persistentvolumeclaims',
        'statefulsets.apps',
        'deployments.apps',
        'storageclasses.storage.k8s.io',
        'customresourcedefinitions.apiextensions.k8s.io',
        'moduleinfos.cluster.alauda.io',
      ]),
    );
  });

  it('serves the types of a CustomResourceDefinition once it is stored, and no longer once deleted', async () => {
    // Prepare
    const crd = await manifest(
      'crd.yaml',
      `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.example.com}
spec:
  group: example.com
  scope: Cluster
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions: [{name: v1, served: true, storage: true}]
`,
    );
    // Act
    await kubectl(['apply', '--server-side', '-f', crd]);
    const group = (await fetch(`${source.api}/apis/example.com/v1`).then((r) => r.json())) as {
      resources: Array<{ name: string; namespaced: boolean; kind: string }>;
    };
    await kubectl(['delete', 'crd', 'gadgets.example.com']);
    const gone = await fetch(`${source.api}/apis/example.com/v1`);
    // Assess
    expect(group.resources).toEqual([
      expect.objectContaining({ name: 'gadgets', namespaced: false, kind: 'Gadget' }),
    ]);
    expect(gone.status).toBe(404);
  });
});

describe('server-side apply', () => {
  it('creates objects with kubectl apply --server-side and records what the manager owns', async () => {
    // Prepare
    const file = await manifest('web.yaml', deployment(2));
    // Act
    const out = await kubectl(['apply', '--server-side', '-f', file]);
    const managed = JSON.parse(await webField('.metadata.managedFields')) as Array<{
      manager: string;
      operation: string;
      fieldsV1: Record<string, unknown>;
    }>;
    // Assess
    expect(out).toContain('deployment.apps/web serverside-applied');
    expect(managed).toEqual([
      expect.objectContaining({
        manager: 'kubectl',
        operation: 'Apply',
        fieldsV1: expect.objectContaining({
          'f:spec': expect.objectContaining({ 'f:replicas': {} }),
        }),
      }),
    ]);
  });

  it('refuses to change a field another manager set, naming it, until forced', async () => {
    // Prepare
    const file = await manifest('web-3.yaml', deployment(2));
    await kubectl(['apply', '--server-side', '-f', file]);
    await kubectl([
      'patch',
      'deploy/web',
      '-n',
      'shop',
      '--type',
      'merge',
      '-p',
      '{"spec":{"replicas":5}}',
    ]);
    // Act
    const refused = await kubectlFails(['apply', '--server-side', '-f', file]);
    const replicasAfterRefusal = await webField('.spec.replicas');
    await kubectl(['apply', '--server-side', '--force-conflicts', '-f', file]);
    // Assess
    expect(refused).toContain('conflict with "kubectl-patch": .spec.replicas');
    expect(replicasAfterRefusal).toBe('5');
    expect(await webField('.spec.replicas')).toBe('2');
  });

  it('removes a field its manager applied before and applies no longer', async () => {
    // Prepare
    const withAnnotation = await manifest(
      'annotated.yaml',
      deployment(2).replace(
        'labels: {app: web}}',
        'labels: {app: web}, annotations: {team: blue}}',
      ),
    );
    await kubectl(['apply', '--server-side', '-f', withAnnotation]);
    // Act
    await kubectl(['apply', '--server-side', '-f', await manifest('plain.yaml', deployment(2))]);
    // Assess
    expect(await webField('.metadata.annotations')).toBe('');
  });

  it('requires a field manager for an apply patch', async () => {
    // Act
    const response = await fetch(`${source.api}/api/v1/namespaces/apply-nobody`, {
      method: 'PATCH',
      headers: { 'Content-Type': 'application/apply-patch+yaml' },
      body: 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apply-nobody\n',
    });
    const status = (await response.json()) as { message: string };
    // Assess
    expect(response.status).toBe(422);
    expect(status.message).toContain('fieldManager: Required value');
  });
});

describe('lists and clusters', () => {
  it('pages a list with limit and continue, every object once', async () => {
    // Prepare
    await kubectl(['create', 'namespace', 'paged']);
    for (const n of [1, 2, 3, 4, 5])
      await kubectl(['create', 'configmap', `cm-${n}`, '-n', 'paged', `--from-literal=n=${n}`]);
    // Act
    const names: string[] = [];
    const pages: number[] = [];
    let token = '';
    do {
      const page = (await fetch(
        `${source.api}/api/v1/namespaces/paged/configmaps?limit=2${token === '' ? '' : `&continue=${token}`}`,
      ).then((r) => r.json())) as {
        items: Array<{ metadata: { name: string } }>;
        metadata: { continue?: string };
      };
      names.push(...page.items.map((i) => i.metadata.name));
      pages.push(page.items.length);
      token = page.metadata.continue ?? '';
    } while (token !== '');
    const chunked = await kubectl([
      'get',
      'configmaps',
      '-n',
      'paged',
      '-o',
      'name',
      '--chunk-size=2',
    ]);
    // Assess
    expect(pages).toEqual([2, 2, 1]);
    expect(names).toEqual(['cm-1', 'cm-2', 'cm-3', 'cm-4', 'cm-5']);
    expect(chunked.trim().split('\n')).toHaveLength(5);
  });

  it('runs a second cluster beside the first, each reached by its own context', async () => {
    // Prepare
    await kubectl(['create', 'namespace', 'only-in-target'], target.kubeconfigPath);
    // Act
    const inTarget = await kubectl(
      ['--context', 'target', 'get', 'namespaces', '-o', 'name'],
      both,
    );
    const inSource = await kubectl(
      ['--context', 'source', 'get', 'namespaces', '-o', 'name'],
      both,
    );
    // Assess
    expect(inTarget).toContain('namespace/only-in-target');
    expect(inSource).not.toContain('namespace/only-in-target');
  });

  it('reports a workload whose image cannot be pulled as not ready, with the pull error', async () => {
    // Prepare
    const file = await manifest('unpullable.yaml', deployment(1));
    // Act
    await kubectl(['apply', '--server-side', '-f', file], target.kubeconfigPath);
    let status: {
      readyReplicas?: number;
      conditions?: Array<{ status: string; message: string }>;
    } = {};
    await waitFor('deployment status', async () => {
      status = JSON.parse((await webField('.status', target.kubeconfigPath)) || '{}');
      return status.conditions !== undefined;
    });
    // Assess
    expect(status.readyReplicas).toBe(0);
    expect(status.conditions?.[0]).toEqual(
      expect.objectContaining({
        status: 'False',
        message: expect.stringContaining('old.example.com cannot be reached from the sandbox'),
      }),
    );
  });
});
