/**
 * `regvault restore --repository ... --into-live` on ACP: the live bucket and
 * its keys come from the registry's ModuleInfo and Secret through the fake
 * cluster API, and the registry it writes under is the real `docker-registry`
 * the cluster runs, which serves the repository again without a restart.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
// Loaded here: the backup imports the cluster client lazily, which Jest's VM modules only link when a test loaded it first.
import '../../functions/commons/cluster/kube.ts';
import '../../functions/commons/registry/acp.ts';
import { type PopulatedRegistry, populateRegistry, pullImage } from '../../sandbox/images/index.ts';
import { type FakeCluster, startFakeCluster } from '../../sandbox/kube/index.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import { backupThroughCluster } from '../support/backup.ts';
import { jsonLines, runRegvault, sandboxEnv } from '../support/cli.ts';
import { deleteKeys, listAll, serverWithBuckets, storageOn } from '../support/s3.ts';

const BUCKET = 'acp-registry';
const VAULT = 'acp-vault';

let s3: S3ServerHandle;
let client: S3Client;
let cluster: FakeCluster;
let images: PopulatedRegistry;
let snapshotId: string;

const host = () => new URL(cluster.registryUrl).host;

beforeAll(async () => {
  ({ server: s3, client } = await serverWithBuckets('s3-restore-repository-acp', [BUCKET, VAULT]));
  cluster = await startFakeCluster({ tls: true });
  await cluster.seedAcpRegistry(storageOn(s3, BUCKET));
  await cluster.waitForReadyPod(30_000);
  images = await populateRegistry(host(), {
    repositories: 2,
    tagsPerRepository: 2,
    layerSizes: [3000],
    sharedBaseSize: 0,
  });
  snapshotId = await backupThroughCluster(s3, VAULT, cluster.kubeconfigPath);
}, 180_000);

afterAll(async () => {
  client?.destroy();
  await cluster?.stop();
  await s3?.stop();
});

describe('restoring one repository into the live registry on ACP', () => {
  it('finds the bucket by the ModuleInfo and brings the deleted repository back', async () => {
    // Prepare: team-1's folder deleted, as an operator would
    const folder = 'docker/registry/v2/repositories/team-1/app-1/';
    await deleteKeys(client, BUCKET, [...(await listAll(client, BUCKET, folder)).keys()]);
    const env = sandboxEnv(s3, VAULT, {
      KUBECONFIG: cluster.kubeconfigPath,
      REGVAULT_REGISTRY_URL: cluster.registryUrl,
    });
    // Act: a glob of one level, which matches team-1/app-1 only
    const run = await runRegvault(
      ['restore', '--json', '--snapshot', snapshotId, '--repository', 'team-1/*', '--into-live'],
      env,
    );
    // Assess
    expect(run.stderr).not.toContain(s3.credentials.secretAccessKey);
    expect(run.code).toBe(0);
    const result = jsonLines(run.stdout).at(-1) as {
      restore: { target: string; repositories: Array<{ name: string }>; verify: { ok: boolean } };
    };
    expect(result.restore.target).toBe(`s3://${BUCKET}/docker/registry/v2/`);
    expect(result.restore.repositories.map((r) => r.name)).toEqual(['team-1/app-1']);
    expect(result.restore.verify.ok).toBe(true);
    const tags = images.repositories.find((r) => r.name === 'team-1/app-1')?.tags ?? {};
    for (const [tag, digest] of Object.entries(tags))
      expect((await pullImage(`${host()}/team-1/app-1:${tag}`)).digest).toBe(digest);
  }, 120_000);
});
