/**
 * Profile detection (issue 20): with no --profile, REGVAULT_PROFILE or
 * profile in a config file, the CLI asks the cluster which registry
 * resources it holds. A Quay bed (a QuayRegistry, no ACP ModuleInfo) is
 * the quay profile, an ACP bed (no QuayRegistry type at all: a 404 on the
 * group) is acp, a cluster with both is bad input before anything is
 * written, and a cluster with neither keeps the default (acp) and its error.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { loadKubeConfig } from '../../functions/commons/cluster/kube.ts';
import { detectProfiles } from '../../functions/commons/registry/profiles.ts';
import {
  type FakeCluster,
  type KubeApiServer,
  startFakeCluster,
  startKubeApiServer,
  writeKubeconfig,
} from '../../sandbox/kube/index.ts';
import {
  QUAY_REGISTRY,
  QUAY_REGISTRY_CRD,
  seedQuayRegistry,
} from '../../sandbox/kube/quay-operator.ts';
import { BuiltIn } from '../../sandbox/kube/resources.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import { jsonLines, runRegvault, sandboxEnv } from '../support/cli.ts';
import { type QuayBed, startQuayBed } from '../support/quay.ts';
import { keysSecret } from '../support/quay-restore.ts';
import { clientFor, listAll, serverWithBuckets, storageOn } from '../support/s3.ts';

let s3: S3ServerHandle;
let dir: string;
let quay: QuayBed;
let acp: FakeCluster;
let both: KubeApiServer;
let none: KubeApiServer;
/** Kubeconfigs of the four beds. */
const kubeconfigs: Record<'quay' | 'acp' | 'both' | 'none', string> = {
  quay: '',
  acp: '',
  both: '',
  none: '',
};

/** A labelled ACP ModuleInfo, as ACP's registry plugin leaves it, in `api`'s store. */
function addModuleInfo(api: KubeApiServer): void {
  api.store.create(api.moduleInfo, {
    apiVersion: `${api.moduleInfo.group}/${api.moduleInfo.version}`,
    kind: api.moduleInfo.kind,
    metadata: { name: 'registry-global', labels: { 'cpaas.io/module-name': 'image-registry' } },
    spec: { config: { s3storage: { bucket: 'acp-bucket', region: 'us-east-1', secretName: 's' } } },
  });
}

const TOKEN = 'detect-token';
/** A kubeconfig for `api` (https with a token, as client-node and kubectl want it). */
const kubeconfigFor = (api: KubeApiServer, name: string) =>
  writeKubeconfig(join(dir, name), {
    server: api.url,
    token: TOKEN,
    ...(api.caCert === undefined ? {} : { certificateAuthority: api.caCert }),
  });

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'profile-detect-'));
  const started = await serverWithBuckets('s3-profile-detect', [
    'vault-quay',
    'vault-acp',
    'vault-both',
    'vault-none',
    'vault-restore',
    'quay-detect-restored',
    'acp-detect',
  ]);
  s3 = started.server;
  started.client.destroy();
  quay = await startQuayBed(s3, {
    version: '3.9.1',
    namespace: 'quay-enterprise',
    bucket: 'quay-detect',
    count: 1,
  });
  kubeconfigs.quay = quay.kubeconfig;
  acp = await startFakeCluster({ token: TOKEN });
  await acp.seedAcpRegistry(storageOn(s3, 'acp-detect'));
  kubeconfigs.acp = acp.kubeconfigPath;
  // Both kinds on one cluster: ACP's ModuleInfo and a QuayRegistry (no operator runs it).
  both = await startKubeApiServer({ token: TOKEN });
  addModuleInfo(both);
  both.store.create(BuiltIn.customresourcedefinitions, structuredClone(QUAY_REGISTRY_CRD));
  seedQuayRegistry(both, { namespace: 'quay-enterprise', name: 'registry', ...storageOn(s3, 'x') });
  kubeconfigs.both = await kubeconfigFor(both, 'both');
  none = await startKubeApiServer({ token: TOKEN });
  kubeconfigs.none = await kubeconfigFor(none, 'none');
}, 180_000);

afterAll(async () => {
  await quay?.stop();
  await acp?.stop();
  await both?.stop();
  await none?.stop();
  await s3?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('detectProfiles', () => {
  it.each([
    ['quay', [{ profile: 'quay', resources: ['QuayRegistry quay-enterprise/registry'] }]],
    ['acp', [{ profile: 'acp', resources: ['ModuleInfo image-registry'] }]],
    [
      'both',
      [
        { profile: 'acp', resources: ['ModuleInfo registry-global'] },
        { profile: 'quay', resources: ['QuayRegistry quay-enterprise/registry'] },
      ],
    ],
    ['none', []],
  ] as const)('finds on the %s bed what each profile knows', async (bed, expected) => {
    // Act
    const detection = await detectProfiles(loadKubeConfig({ path: kubeconfigs[bed] }));

    // Assess
    expect(detection).toEqual({ found: expected, refused: [] });
  });

  it('reports a refused read instead of failing', async () => {
    // Prepare
    const api = await startKubeApiServer({
      token: TOKEN,
      forbid: [{ verb: 'list', resource: 'quayregistries' }],
    });
    addModuleInfo(api);
    api.store.create(BuiltIn.customresourcedefinitions, structuredClone(QUAY_REGISTRY_CRD));
    try {
      const path = await kubeconfigFor(api, 'forbidden');

      // Act
      const detection = await detectProfiles(loadKubeConfig({ path }));

      // Assess
      expect(detection.found).toEqual([
        { profile: 'acp', resources: ['ModuleInfo registry-global'] },
      ]);
      expect(detection.refused).toEqual([
        'list quayregistries.quay.redhat.com in all namespaces: refused (403)',
      ]);
    } finally {
      await api.stop();
    }
  });
});

describe('regvault backup without --profile', () => {
  it('detects Quay when a QuayRegistry is the only registry resource, and says so', async () => {
    // Act
    const run = await runRegvault(
      ['backup', '--kubeconfig', kubeconfigs.quay, '--json'],
      sandboxEnv(s3, 'vault-quay'),
    );

    // Assess
    const lines = jsonLines(run.stdout);
    expect(lines[0]).toEqual({
      event: 'profile',
      profile: 'quay',
      resources: ['QuayRegistry quay-enterprise/registry'],
    });
    expect(run.code).toBe(0);
    expect(lines.at(-1)).toMatchObject({ status: 'SUCCEEDED' });
    const keys = [...(await listAll(clientFor(s3), 'vault-quay')).keys()];
    expect(keys.some((key) => key.endsWith('/database/registry-quay-database.sql'))).toBe(true);
  });

  it('detects ACP on a cluster that does not serve the QuayRegistry type', async () => {
    // Act
    const run = await runRegvault(
      ['backup', '--kubeconfig', kubeconfigs.acp],
      sandboxEnv(s3, 'vault-acp'),
    );

    // Assess
    expect(run.stderr).toContain('profile acp detected: ModuleInfo image-registry');
    expect(run.code).toBe(0);
  });

  it('exits 2 naming both registries and --profile, with nothing written, when both are there', async () => {
    // Act
    const run = await runRegvault(
      ['backup', '--kubeconfig', kubeconfigs.both],
      sandboxEnv(s3, 'vault-both'),
    );

    // Assess
    expect(run.code).toBe(2);
    const text = `${run.stdout}${run.stderr}`;
    expect(text).toContain('ModuleInfo registry-global (profile acp)');
    expect(text).toContain('QuayRegistry quay-enterprise/registry (profile quay)');
    expect(text).toContain('give --profile acp or --profile quay');
    expect(await listAll(clientFor(s3), 'vault-both')).toEqual(new Map());
    expect(both.store.read(QUAY_REGISTRY, 'quay-enterprise', 'registry')['spec']).toMatchObject({
      components: expect.arrayContaining([{ kind: 'quay', managed: true }]),
    });
  });

  it('keeps the default profile (acp) and its error when the cluster holds neither', async () => {
    // Act
    const run = await runRegvault(
      ['backup', '--kubeconfig', kubeconfigs.none],
      sandboxEnv(s3, 'vault-none'),
    );

    // Assess
    const text = `${run.stdout}${run.stderr}`;
    expect(text).not.toContain('detected');
    expect(text).toContain('no ModuleInfo is labelled cpaas.io/module-name=image-registry');
    expect(run.code).not.toBe(0);
  });

  it('does not look when the profile is given', async () => {
    // Act: REGVAULT_PROFILE chooses; the cluster holding both is then no question.
    const run = await runRegvault(
      ['backup', '--kubeconfig', kubeconfigs.both],
      sandboxEnv(s3, 'vault-both', { REGVAULT_PROFILE: 'distribution' }),
    );

    // Assess
    const text = `${run.stdout}${run.stderr}`;
    expect(text).not.toContain('more than one kind of registry');
    expect(text).toContain('docker-registry');
  });
});

describe('regvault restore without --profile', () => {
  it('detects Quay and restores it into a new bucket, verified', async () => {
    // Prepare: a snapshot of its own, and the new bucket's keys in the namespace.
    const env = sandboxEnv(s3, 'vault-restore');
    const backup = await runRegvault(
      ['backup', '--profile', 'quay', '--kubeconfig', kubeconfigs.quay, '--json'],
      env,
    );
    const snapshot = jsonLines(backup.stdout).at(-1)?.['snapshot'] as { snapshotId: string };
    keysSecret(s3, quay, 'quay-enterprise', 'restored-s3');

    // Act
    const run = await runRegvault(
      [
        'restore',
        '--kubeconfig',
        kubeconfigs.quay,
        '--snapshot',
        snapshot.snapshotId,
        '--target-bucket',
        'quay-detect-restored',
        '--target-secret',
        'restored-s3',
        '--registry-url',
        quay.registryUrl,
        '--json',
      ],
      env,
    );

    // Assess
    const lines = jsonLines(run.stdout);
    expect(lines[0]).toEqual({
      event: 'profile',
      profile: 'quay',
      resources: ['QuayRegistry quay-enterprise/registry'],
    });
    expect(lines.at(-1)).toMatchObject({ status: 'SUCCEEDED' });
    expect(run.code).toBe(0);
    expect((await listAll(clientFor(s3), 'quay-detect-restored')).size).toBeGreaterThan(0);
  });
});

describe('kubectl on the Quay bed', () => {
  it('lists QuayRegistries in every namespace', async () => {
    // Act
    const env = { ...process.env };
    delete env['KUBECONFIG'];
    const { stdout } = await promisify(execFile)(
      'kubectl',
      [
        '--kubeconfig',
        kubeconfigs.quay,
        '--cache-dir',
        join(dir, 'cache'),
        'get',
        'quayregistries',
        '-A',
        '-o',
        'custom-columns=NS:.metadata.namespace,NAME:.metadata.name',
        '--no-headers',
      ],
      { env, timeout: 30_000 },
    );

    // Assess
    expect(stdout.trim().split(/\s+/)).toEqual(['quay-enterprise', 'registry']);
  });
});
