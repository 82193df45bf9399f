import { createHash } from 'node:crypto';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import { type FakeCluster, startFakeCluster } from '../../sandbox/kube/index.ts';
import { BuiltIn } from '../../sandbox/kube/resources.ts';
import type { KubeObject } from '../../sandbox/kube/store.ts';
import { liveProcesses, portInUse } from '../../sandbox/process.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, createBucket, listAll } from '../support/s3.ts';
import { type FakeRegistries, fakeRegistries } from './fake-registry.ts';
import { seedRegistry, UNREAD_STORAGE } from './support.ts';

const NS = 'cpaas-system';

interface PodView {
  metadata: { name: string; deletionTimestamp?: string };
  spec: { containers: Array<{ name: string; env: Array<{ name: string; value?: string }> }> };
  status: {
    phase: string;
    conditions: Array<{ type: string; status: string }>;
    containerStatuses: Array<{
      ready: boolean;
      restartCount: number;
      state: { waiting?: { reason: string }; terminated?: { exitCode: number }; running?: unknown };
    }>;
  };
}

const registryPods = (cluster: FakeCluster) =>
  cluster.server.store
    .list(BuiltIn.pods, NS)
    .filter((pod) => pod.metadata.labels?.['app'] === 'image-registry') as unknown as PodView[];

/** Merge-patches the ModuleInfo's s3storage over HTTP, as regvault does. */
async function patchStorage(
  cluster: FakeCluster,
  s3storage: Record<string, string>,
): Promise<void> {
  const { group, version, resource } = cluster.server.moduleInfo;
  const response = await fetch(
    `${cluster.api}/apis/${group}/${version}/${resource}/image-registry`,
    {
      method: 'PATCH',
      headers: { 'Content-Type': 'application/merge-patch+json' },
      body: JSON.stringify({ spec: { config: { s3storage } } }),
    },
  );
  expect(response.status).toBe(200);
}

async function until(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const v2Status = async (url: string) => {
  const response = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(2_000) });
  await response.body?.cancel();
  return response.status;
};

describe('the registry controller with the real registry on S3', () => {
  let s3: S3ServerHandle;
  let client: S3Client;
  let cluster: FakeCluster;
  /** Set by the test that stops the cluster, so the next test gets a new one. */
  let stopped = false;

  async function startCluster(): Promise<FakeCluster> {
    const started = await startFakeCluster();
    await started.seedAcpRegistry({
      bucket: 'registry-a',
      endpoint: s3.endpoint,
      region: s3.region,
      accessKey: s3.credentials.accessKeyId,
      secretKey: s3.credentials.secretAccessKey,
    });
    return started;
  }

  beforeAll(async () => {
    s3 = await startS3Server({ name: 's3-kube-controller' });
    client = clientFor(s3);
    await Promise.all([createBucket(client, 'registry-a'), createBucket(client, 'registry-b')]);
    cluster = await startCluster();
  });

  // Every test starts from one Ready pod on registry-a with its Secret; a
  // patch to what the ModuleInfo already holds rolls nothing.
  beforeEach(async () => {
    if (stopped) {
      cluster = await startCluster();
      stopped = false;
    }
    await patchStorage(cluster, { bucket: 'registry-a', secretName: 'registry-s3-secret' });
    await cluster.waitForReadyPod(60_000);
  });

  afterAll(async () => {
    await cluster?.stop();
    client?.destroy();
    await s3?.stop();
  });

  /** Points the ModuleInfo at a Secret that does not exist and waits for the new pod to crash-loop. */
  async function breakSecret(): Promise<void> {
    await patchStorage(cluster, { secretName: 'no-such-secret' });
    await until('a crash-looping pod', () =>
      registryPods(cluster).some(
        (pod) => pod.status.containerStatuses[0]?.state.waiting?.reason === 'CrashLoopBackOff',
      ),
    );
  }

  it('rolls to a new Ready pod when the bucket changes while the Service URL keeps answering', async () => {
    // Prepare
    const first = await cluster.waitForReadyPod(60_000);
    const answers: number[] = [];
    let polling = true;
    const poller = (async () => {
      while (polling) {
        answers.push(await v2Status(cluster.registryUrl).catch(() => 0));
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
    // Act
    await patchStorage(cluster, { bucket: 'registry-b' });
    const second = await cluster.waitForReadyPod(60_000);
    polling = false;
    await poller;
    // Assess
    expect(second).not.toBe(first);
    expect(second).toMatch(/^image-registry-[a-z0-9]{10}-[a-z0-9]{5}$/);
    const pods = registryPods(cluster);
    expect(pods.map((pod) => pod.metadata.name)).toEqual([second]);
    const env = pods[0]?.spec.containers[0]?.env ?? [];
    expect(env.find((e) => e.name === 'REGISTRY_STORAGE_S3_BUCKET')?.value).toBe('registry-b');
    expect(pods[0]?.status.containerStatuses[0]?.ready).toBe(true);
    expect(answers.length).toBeGreaterThan(0);
    expect(answers.filter((status) => status !== 200)).toEqual([]);
  });

  it('forwards registry traffic to the pod on the new bucket', async () => {
    // Prepare
    await patchStorage(cluster, { bucket: 'registry-b' });
    await cluster.waitForReadyPod(60_000);
    const blob = Buffer.from(`blob for the new bucket ${Date.now()}`);
    const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
    // Act
    const started = await fetch(`${cluster.registryUrl}/v2/probe/app/blobs/uploads/`, {
      method: 'POST',
    });
    await started.body?.cancel();
    const location = new URL(started.headers.get('location') ?? '', cluster.registryUrl);
    location.searchParams.set('digest', digest);
    const upload = await fetch(location, {
      method: 'PUT',
      headers: { 'Content-Type': 'application/octet-stream' },
      body: blob,
    });
    await upload.body?.cancel();
    const keys = [...(await listAll(client, 'registry-b')).keys()];
    // Assess
    expect(started.status).toBe(202);
    expect(location.host).toBe(new URL(cluster.registryUrl).host);
    expect(upload.status).toBe(201);
    expect(keys).toContain(
      `docker/registry/v2/blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}/data`,
    );
  });

  it('keeps the old pod serving while a pod without its Secret crash-loops, and logs why', async () => {
    // Prepare
    const serving = await cluster.waitForReadyPod(60_000);
    // Act
    await breakSecret();
    const crashing = registryPods(cluster).find((pod) => pod.metadata.name !== serving);
    const log = cluster.server.store.get(BuiltIn.pods, NS, crashing?.metadata.name ?? '') as
      | KubeObject
      | undefined;
    const logText = await (
      await fetch(
        `${cluster.api}/api/v1/namespaces/${NS}/pods/${crashing?.metadata.name}/log?container=registry`,
      )
    ).text();
    // Assess
    expect(log).toBeDefined();
    expect(crashing?.status.phase).toBe('Running');
    expect(crashing?.status.containerStatuses[0]?.ready).toBe(false);
    expect(crashing?.status.containerStatuses[0]?.restartCount).toBeGreaterThan(0);
    expect(crashing?.status.conditions.find((c) => c.type === 'Ready')?.status).toBe('False');
    expect(logText).toContain('secret "no-such-secret" not found');
    expect(registryPods(cluster).map((pod) => pod.metadata.name)).toContain(serving);
    expect(await v2Status(cluster.registryUrl)).toBe(200);
  });

  it('drops the crash-looping pod and keeps the running one when the config is put back', async () => {
    // Prepare
    const serving = await cluster.waitForReadyPod(60_000);
    await breakSecret();
    expect(registryPods(cluster)).toHaveLength(2);
    // Act
    await patchStorage(cluster, { secretName: 'registry-s3-secret' });
    const after = await cluster.waitForReadyPod(60_000);
    // Assess
    expect(after).toBe(serving);
    expect(registryPods(cluster)).toHaveLength(1);
  });

  it('stops every registry process and closes every port on stop()', async () => {
    // Prepare
    const urls = [
      cluster.api,
      cluster.registryUrl,
      ...cluster.controller.pods().flatMap((pod) => pod.url ?? []),
    ];
    const ports = urls.map((url) => Number(new URL(url).port));
    expect(urls).toHaveLength(3);
    // Act
    stopped = true;
    await cluster.stop();
    // Assess
    expect(await Promise.all(ports.map(portInUse))).toEqual(ports.map(() => false));
    expect(liveProcesses().map((child) => child.name)).toEqual([s3.process.name]);
  });
});

describe('the registry controller with a stand-in registry', () => {
  /** Runs `test` on a fake cluster of stand-in registries, stopping it after. */
  async function withStandIns(
    test: (cluster: FakeCluster, registries: FakeRegistries) => Promise<void>,
  ): Promise<void> {
    const registries = fakeRegistries();
    const cluster = await startFakeCluster({ startRegistry: registries.start });
    try {
      await test(cluster, registries);
    } finally {
      await cluster.stop();
    }
  }

  it('marks the pod Failed with a terminated container when the registry process exits', async () => {
    await withStandIns(async (cluster, registries) => {
      // Prepare
      const name = await seedRegistry(cluster);
      // Act
      await [...registries.live.values()][0]?.crash();
      await until('a failed pod', () => registryPods(cluster)[0]?.status.phase === 'Failed');
      // Assess
      const pod = registryPods(cluster)[0];
      expect(pod?.metadata.name).toBe(name);
      expect(pod?.status.containerStatuses[0]?.ready).toBe(false);
      expect(pod?.status.containerStatuses[0]?.state.terminated?.exitCode).toBe(1);
      expect((await fetch(`${cluster.registryUrl}/v2/`)).status).toBe(503);
    });
  });

  it("replaces a deleted pod with a new one and stops the deleted pod's process", async () => {
    await withStandIns(async (cluster, registries) => {
      // Prepare
      const first = await seedRegistry(cluster);
      // Act
      const response = await fetch(`${cluster.api}/api/v1/namespaces/${NS}/pods/${first}`, {
        method: 'DELETE',
      });
      await response.body?.cancel();
      await until('a replacement pod', () =>
        registryPods(cluster).some((pod) => pod.metadata.name !== first),
      );
      const second = await cluster.waitForReadyPod();
      // Assess
      expect(response.status).toBe(200);
      expect(second).not.toBe(first);
      expect(registries.started).toHaveLength(2);
      expect(registries.live.size).toBe(1);
    });
  });

  it('shows a pod Pending while its registry process starts, then Running once it has', async () => {
    // Prepare: the registry's start waits on a gate.
    const registries = fakeRegistries();
    let open: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const cluster = await startFakeCluster({
      startRegistry: async (config) => {
        await gate;
        return registries.start(config);
      },
    });
    try {
      // Act
      const seeding = seedRegistry(cluster);
      await until('a pod in the API', () => registryPods(cluster).length === 1);
      const starting = registryPods(cluster)[0];
      const log = await fetch(
        `${cluster.api}/api/v1/namespaces/${NS}/pods/${starting?.metadata.name}/log`,
      );
      const logAnswer = { status: log.status, body: await log.text() };
      open();
      await seeding;
      // Assess
      expect(starting?.status.phase).toBe('Pending');
      expect(starting?.status.containerStatuses[0]?.state.waiting?.reason).toBe(
        'ContainerCreating',
      );
      expect(logAnswer.status).toBe(400);
      expect(logAnswer.body).toContain('is waiting to start: ContainerCreating');
      expect(registries.started).toHaveLength(1);
      expect(registryPods(cluster)[0]?.status.phase).toBe('Running');
    } finally {
      open();
      await cluster.stop();
    }
  });

  it('crash-loops a pod whose Secret lacks the expected keys', async () => {
    await withStandIns(async (cluster) => {
      // Act
      await cluster.seedAcpRegistry({
        ...UNREAD_STORAGE,
        secretKeyNames: { accessKey: 'AWS_ACCESS_KEY_ID', secretKey: 'AWS_SECRET_ACCESS_KEY' },
      });
      await until('a crash-looping pod', () => registryPods(cluster).length === 1);
      // Assess
      const [pod] = registryPods(cluster);
      expect(pod?.status.containerStatuses[0]?.state.waiting?.reason).toBe('CrashLoopBackOff');
      const log = await (
        await fetch(`${cluster.api}/api/v1/namespaces/${NS}/pods/${pod?.metadata.name}/log`)
      ).text();
      expect(log).toContain('lacks access-key-id or secret-access-key');
    });
  });

  it('leaves nothing listening after stop()', async () => {
    // Prepare
    const registries = fakeRegistries();
    const cluster = await startFakeCluster({ token: 't', startRegistry: registries.start });
    await seedRegistry(cluster);
    const ports = [
      cluster.server.port,
      Number(new URL(cluster.registryUrl).port),
      ...[...registries.live.keys()].map((url) => Number(new URL(url).port)),
    ];
    expect(await Promise.all(ports.map(portInUse))).toEqual(ports.map(() => true));
    // Act
    await cluster.stop();
    // Assess
    expect(await Promise.all(ports.map(portInUse))).toEqual(ports.map(() => false));
    expect(registries.live.size).toBe(0);
    expect(liveProcesses()).toEqual([]);
  });
});
