import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import { type FakeCluster, startFakeCluster } from '../../sandbox/kube/index.ts';
import { BuiltIn } from '../../sandbox/kube/resources.ts';
import { fakeRegistries } from './fake-registry.ts';
import { acpStorage, seedRegistry } from './support.ts';

const run = promisify(execFile);
const KUBECTL = process.env['KUBECTL'] ?? 'kubectl';
const TOKEN = 'kubectl-test-token';
const NS = 'cpaas-system';

let cluster: FakeCluster;
let dir: string;

/**
 * kubectl with only our kubeconfig: no KUBECONFIG from the caller, a private
 * discovery cache. Arguments given as one string are split at its spaces, as
 * a shell would split an unquoted command line.
 */
async function kubectl(
  args: string | string[],
  kubeconfig = cluster.kubeconfigPath,
): Promise<string> {
  const env = { ...process.env };
  delete env['KUBECONFIG'];
  const { stdout } = await run(
    KUBECTL,
    [
      '--kubeconfig',
      kubeconfig,
      '--cache-dir',
      join(dir, 'cache'),
      ...(typeof args === 'string' ? args.split(' ') : args),
    ],
    { env, timeout: 30_000 },
  );
  return stdout;
}

/** The stderr of a kubectl call that must fail. */
async function kubectlFails(args: string | string[], kubeconfig?: string): Promise<string> {
  try {
    await kubectl(args, kubeconfig);
  } catch (err) {
    return String((err as { stderr?: unknown }).stderr ?? err);
  }
  throw new Error(`kubectl ${[args].flat().join(' ')} succeeded but was expected to fail`);
}

/** `kubectl patch` of the registry ModuleInfo with a patch of `type`. */
const patchModuleInfo = (type: 'merge' | 'json', patch: string) => [
  'patch',
  'moduleinfo',
  'image-registry',
  '--type',
  type,
  '-p',
  patch,
];

const generation = async () =>
  Number(await kubectl('get moduleinfo image-registry -o jsonpath={.metadata.generation}'));

const moduleInfo = async () =>
  JSON.parse(await kubectl('get moduleinfo image-registry -o json')) as {
    metadata: { resourceVersion: string; annotations?: Record<string, string> };
    spec: { config: { s3storage: Record<string, string> } };
  };

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kubectl-test-'));
  cluster = await startFakeCluster({ token: TOKEN, startRegistry: fakeRegistries().start });
});

// Every test starts from the ModuleInfo and Secret as ACP leaves them, whatever an earlier test patched.
beforeEach(async () => {
  await seedRegistry(cluster, acpStorage('AKIA-KUBECTL', 'secret-kubectl'));
});

afterAll(async () => {
  await cluster?.stop();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

describe('kubectl against the fake apiserver', () => {
  it('lists the registry ModuleInfo by label as JSON', async () => {
    // Act
    const list = JSON.parse(
      await kubectl('get moduleinfos -l cpaas.io/module-name=image-registry -o json'),
    ) as {
      items: Array<{
        kind: string;
        metadata: { name: string };
        spec: { config: { s3storage: { bucket: string } } };
      }>;
    };
    const none = JSON.parse(
      await kubectl('get moduleinfos -l cpaas.io/module-name!=image-registry -o json'),
    ) as { items: unknown[] };
    // Assess
    expect(list.items.map((item) => item.metadata.name)).toEqual(['image-registry']);
    expect(list.items[0]?.kind).toBe('ModuleInfo');
    expect(list.items[0]?.spec.config.s3storage.bucket).toBe('registry-a');
    expect(none.items).toEqual([]);
  });

  it('reads a Secret key with jsonpath', async () => {
    // Act
    const encoded = await kubectl(
      `get secret -n ${NS} registry-s3-secret -o jsonpath={.data.access-key-id}`,
    );
    // Assess
    expect(Buffer.from(encoded, 'base64').toString()).toBe('AKIA-KUBECTL');
  });

  it('merge-patches the ModuleInfo and bumps its generation', async () => {
    // Prepare
    const before = await generation();
    // Act
    const out = await kubectl(
      patchModuleInfo('merge', '{"spec":{"config":{"s3storage":{"region":"eu-west-1"}}}}'),
    );
    // Assess
    expect(out).toContain('moduleinfo.cluster.alauda.io/image-registry patched');
    const after = await moduleInfo();
    expect(after.spec.config.s3storage['region']).toBe('eu-west-1');
    expect(after.spec.config.s3storage['bucket']).toBe('registry-a');
    expect(await generation()).toBe(before + 1);
  });

  it('json-patches the ModuleInfo, unescaping ~1 in pointers and honouring test ops', async () => {
    // Act
    await kubectl(
      patchModuleInfo(
        'json',
        JSON.stringify([
          { op: 'test', path: '/spec/config/s3storage/region', value: 'us-east-1' },
          { op: 'replace', path: '/spec/config/s3storage/region', value: 'eu-west-1' },
          {
            op: 'add',
            path: '/metadata/annotations/regvault.io~1switched-from',
            value: 'registry-a',
          },
        ]),
      ),
    );
    const failed = await kubectlFails(
      patchModuleInfo(
        'json',
        '[{"op":"test","path":"/spec/config/s3storage/region","value":"nowhere"}]',
      ),
    );
    // Assess
    const after = await moduleInfo();
    expect(after.spec.config.s3storage['region']).toBe('eu-west-1');
    expect(after.metadata.annotations?.['regvault.io/switched-from']).toBe('registry-a');
    expect(failed).toContain('test operation');
  });

  it('refuses a merge patch carrying a stale resourceVersion with the real conflict message', async () => {
    // Prepare
    const stale = (await moduleInfo()).metadata.resourceVersion;
    await kubectl('annotate moduleinfo image-registry touched=yes');
    // Act
    const stderr = await kubectlFails(
      patchModuleInfo(
        'merge',
        JSON.stringify({
          metadata: { resourceVersion: stale },
          spec: { config: { s3storage: { bucket: 'x' } } },
        }),
      ),
    );
    // Assess
    expect(stderr).toContain(
      'Operation cannot be fulfilled on moduleinfos.cluster.alauda.io "image-registry": the object has been modified; please apply your changes to the latest version and try again',
    );
  });

  it('shows the registry pod as Ready with the usual columns and prints its log', async () => {
    // Prepare
    await cluster.waitForReadyPod();
    // Act
    const table = await kubectl(`get pods -n ${NS} -l app=image-registry`);
    const name = (
      await kubectl(`get pods -n ${NS} -l app=image-registry -o jsonpath={.items[0].metadata.name}`)
    ).trim();
    const logs = await kubectl(`logs -n ${NS} ${name} -c registry`);
    const tail = await kubectl(`logs -n ${NS} ${name} -c registry --tail 1`);
    // Assess
    expect(table).toMatch(/^NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE/);
    expect(table).toMatch(new RegExp(`${name}\\s+1/1\\s+Running\\s+0`));
    expect(name).toMatch(/^image-registry-[a-z0-9]{10}-[a-z0-9]{5}$/);
    expect(logs).toContain('starting registry');
    expect(tail.trim().split('\n')).toHaveLength(1);
  });

  it('waits for the Deployment rollout through a watch', async () => {
    // Prepare
    await cluster.waitForReadyPod();
    const started = Date.now();
    // Act
    const out = await kubectl(`rollout status deployment/image-registry -n ${NS} --timeout=20s`);
    // Assess
    expect(out).toContain('deployment "image-registry" successfully rolled out');
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('creates, applies and deletes a Secret from a manifest without extra flags', async () => {
    // Prepare
    const manifest = join(dir, 'secret.yaml');
    const write = (value: string) =>
      writeFile(
        manifest,
        `apiVersion: v1\nkind: Secret\nmetadata:\n  name: other-s3\n  namespace: ${NS}\ntype: Opaque\nstringData:\n  access-key-id: ${value}\n`,
      );
    await write('first');
    // Act
    const created = await kubectl(['create', '-f', manifest]);
    await write('second');
    const applied = await kubectl(['apply', '-f', manifest]);
    const value = await kubectl(`get secret -n ${NS} other-s3 -o jsonpath={.data.access-key-id}`);
    const deleted = await kubectl(['delete', '-f', manifest]);
    const gone = await kubectlFails(`get secret -n ${NS} other-s3`);
    // Assess
    expect(created).toContain('secret/other-s3 created');
    expect(applied).toContain('secret/other-s3 configured');
    expect(Buffer.from(value, 'base64').toString()).toBe('second');
    expect(deleted).toContain('secret "other-s3" deleted');
    expect(gone).toContain('secrets "other-s3" not found');
  });

  it('creates a Secret and a ConfigMap imperatively, which kubectl sends as protobuf', async () => {
    // Act
    const secret = await kubectl(
      `create secret generic imperative-s3 -n ${NS} --from-literal=access-key-id=AK-PB --from-literal=secret-access-key=SK-PB`,
    );
    const configMap = await kubectl(
      `create configmap imperative-cm -n ${NS} --from-literal=mode=restore`,
    );
    const stored = cluster.server.store.get(BuiltIn.secrets, NS, 'imperative-s3');
    const sent = cluster.server
      .requests()
      .filter((r) => r.method === 'POST' && r.path.endsWith('/secrets'));
    // Assess
    expect(secret).toContain('secret/imperative-s3 created');
    expect(configMap).toContain('configmap/imperative-cm created');
    expect(sent.at(-1)?.contentType).toBe('application/vnd.kubernetes.protobuf');
    expect(stored?.['type']).toBe('Opaque');
    expect(stored?.['data']).toEqual({
      'access-key-id': Buffer.from('AK-PB').toString('base64'),
      'secret-access-key': Buffer.from('SK-PB').toString('base64'),
    });
    expect(await kubectl(`get configmap imperative-cm -n ${NS} -o jsonpath={.data.mode}`)).toBe(
      'restore',
    );
  });

  it('is told it must log in when the token is wrong', async () => {
    // Prepare
    const wrong = await cluster.writeKubeconfig(join(dir, 'wrong-token'), {
      token: 'not-the-token',
    });
    // Act
    const stderr = await kubectlFails('get moduleinfos', wrong);
    // Assess
    expect(stderr).toContain('You must be logged in to the server');
  });

  it('gets an RBAC-style Forbidden message for a denied verb', async () => {
    // Prepare
    cluster.server.setForbidden([{ verb: 'patch', resource: 'moduleinfos' }]);
    try {
      // Act
      const stderr = await kubectlFails(patchModuleInfo('merge', '{"spec":{}}'));
      const stillReadable = await kubectl('get moduleinfo image-registry -o name');
      // Assess
      expect(stderr).toContain(
        'moduleinfos.cluster.alauda.io "image-registry" is forbidden: User "regvault" cannot patch resource "moduleinfos" in API group "cluster.alauda.io" at the cluster scope',
      );
      expect(stillReadable.trim()).toBe('moduleinfo.cluster.alauda.io/image-registry');
    } finally {
      cluster.server.setForbidden([]);
    }
  });

  it("runs the ACP runbook's reads and its merge patch as a shell script, unchanged in form", async () => {
    // Prepare: the runbook's commands as an operator types them, with kubectl
    // finding the cluster through KUBECONFIG and a private HOME for its cache.
    const script = [
      'set -eu',
      "mi=$(kubectl get moduleinfo -l cpaas.io/module-name=image-registry -o jsonpath='{.items[0].metadata.name}')",
      "bucket=$(kubectl get moduleinfo $mi -o jsonpath='{.spec.config.s3storage.bucket}')",
      "endpoint=$(kubectl get moduleinfo $mi -o jsonpath='{.spec.config.s3storage.regionEndpoint}')",
      "region=$(kubectl get moduleinfo $mi -o jsonpath='{.spec.config.s3storage.region}')",
      "secret=$(kubectl get moduleinfo $mi -o jsonpath='{.spec.config.s3storage.secretName}')",
      "data=$(kubectl get secret -n cpaas-system $secret -o jsonpath='{.data}')",
      'kubectl patch moduleinfo $mi --type=merge -p \'{"spec":{"config":{"s3storage":{"bucket":"\'"$NEW_BUCKET"\'","regionEndpoint":"\'"$NEW_ENDPOINT"\'","region":"\'"$NEW_REGION"\'","secretName":"\'"$secret"\'"}}}}\' >/dev/null',
      "after=$(kubectl get moduleinfo $mi -o jsonpath='{.spec.config.s3storage.bucket} {.spec.config.s3storage.regionEndpoint} {.spec.config.s3storage.region}')",
      'printf "%s\\n" "$mi" "$bucket" "$endpoint" "$region" "$secret" "$data" "$after"',
    ].join('\n');
    const home = await mkdtemp(join(dir, 'home-'));
    const before = await moduleInfo();
    // Act
    const { stdout } = await run('sh', ['-c', script], {
      env: {
        PATH: process.env['PATH'] ?? '',
        HOME: home,
        KUBECONFIG: cluster.kubeconfigPath,
        NEW_BUCKET: 'registry-bucket-restored',
        NEW_ENDPOINT: 'http://127.0.0.1:9100',
        NEW_REGION: 'eu-west-1',
      },
      timeout: 60_000,
    });
    // Assess
    const [mi, bucket, endpoint, region, secret, data, after] = stdout.trimEnd().split('\n');
    expect([mi, bucket, endpoint, region, secret]).toEqual([
      'image-registry',
      'registry-a',
      'http://127.0.0.1:9000',
      'us-east-1',
      'registry-s3-secret',
    ]);
    const keys = JSON.parse(data ?? '{}') as Record<string, string>;
    expect(Buffer.from(keys['access-key-id'] ?? '', 'base64').toString()).toBe('AKIA-KUBECTL');
    expect(Buffer.from(keys['secret-access-key'] ?? '', 'base64').toString()).toBe(
      'secret-kubectl',
    );
    expect(after).toBe('registry-bucket-restored http://127.0.0.1:9100 eu-west-1');
    const patched = await moduleInfo();
    expect(Number(patched.metadata.resourceVersion)).toBeGreaterThan(
      Number(before.metadata.resourceVersion),
    );
    expect(patched.spec.config.s3storage['secretName']).toBe('registry-s3-secret');
  });
});
