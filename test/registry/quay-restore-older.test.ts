/**
 * The quay profile's restore on Quay before 3.7 (issue 20's scale path): the
 * operator there knows no replica overrides, so the restore quiesces as the
 * backup does, by scaling the operator's Deployment and then the component
 * Deployments to 0, and puts back exactly the replicas it found. Into a new
 * namespace and bucket (verified through the registry API), and in place
 * with a verification that fails (rolled back, the Deployments as recorded).
 * A rollout is not done while a quay-app pod still runs the storage from
 * before the switch (here the components come back before the operator that
 * rolls the new config). A quay-app pod replaced between a listing and the
 * read of its config (the fake API server's raceAnswers) is passed over, not
 * an error: it failed a restore in CI at 6681492.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { KubeConfig } from '@kubernetes/client-node';
import type { RolloutStatus } from '../../functions/commons/registry/profile.ts';
import { quayProfile, runningConfig } from '../../functions/commons/registry/quay.ts';
import { quayCluster } from '../../functions/commons/registry/quay-cluster.ts';
import { quaySettingsSchema } from '../../functions/commons/registry/quay-settings.ts';
import { QUAY_REGISTRY } from '../../sandbox/kube/quay-operator.ts';
import { BuiltIn } from '../../sandbox/kube/resources.ts';
import { NOTHING_ANSWERS } from '../../sandbox/process.ts';
import { quayRows } from '../../sandbox/quay-schema.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import { QUAY_DATABASE, QUAY_NAME, type QuayBed } from '../support/quay.ts';
import {
  blobsIn,
  drNamespace,
  keysSecret,
  type RestoreBed,
  restoreQuay,
  startRestoreBed,
} from '../support/quay-restore.ts';

const NS = 'quay-old';
const DR = 'quay-old-dr';
const COMPONENTS = ['quay-app', 'clair-app', 'quay-mirror', 'quay-database'] as const;
let s3: S3ServerHandle;
let bed: QuayBed;
let snapshotId: string;
let rows: string[];
/** The operator's and the components' replicas before anything ran. */
let before: Record<string, number>;

const operatorName = () => `quay-operator.v${bed.operator.version}`;
const replicasOf = (namespace: string, name: string) =>
  Number(
    (bed.api.store.get(BuiltIn.deployments, namespace, name)?.['spec'] as { replicas?: number })
      ?.replicas ?? -1,
  );
/** The operator's and `namespace`'s component Deployments' replicas. */
const replicas = (namespace: string): Record<string, number> => ({
  operator: replicasOf(bed.operator.operatorNamespace, operatorName()),
  ...Object.fromEntries(COMPONENTS.map((c) => [c, replicasOf(namespace, `${QUAY_NAME}-${c}`)])),
});
const spec = (namespace: string) =>
  bed.api.store.read(QUAY_REGISTRY, namespace, QUAY_NAME)['spec'] as {
    configBundleSecret: string;
    components: unknown;
  };

/** The bed's kubeconfig, and the quay profile's settings for the QuayRegistry in NS. */
const bedKubeConfig = () => {
  const kc = new KubeConfig();
  kc.loadFromFile(bed.kubeconfig);
  return kc;
};
const bedSettings = () =>
  quaySettingsSchema.parse({
    namespace: NS,
    operatorNamespace: bed.operator.operatorNamespace,
    waitSeconds: 30,
  });
const profileOfBed = () => quayProfile(bedKubeConfig(), bedSettings());

/** Polls the rollout as a restore does until it is done or `ms` pass. */
const doneWithin = async (
  profile: ReturnType<typeof quayProfile>,
  ms: number,
): Promise<RolloutStatus> => {
  const deadline = Date.now() + ms;
  for (;;) {
    const status = await profile.rolloutStatus({ podsBefore: [] });
    if (status.done || Date.now() > deadline) return status;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
};

const restore = (namespace: string, bucket: string, secretName: string, registryUrl: string) =>
  restoreQuay(s3, bed, { snapshotId, namespace, bucket, secretName, registryUrl });

let started: RestoreBed;

beforeAll(async () => {
  started = await startRestoreBed(
    's3-quay-restore-older',
    ['older-dr-bucket', 'older-rollback', 'older-noload', 'older-moved'],
    { version: '3.6.4', namespace: NS, bucket: 'quay-older', count: 2 },
    (b: QuayBed) => {
      bed = b;
      before = replicas(NS);
    },
  );
  ({ s3, bed, rows, snapshotId } = started);
}, 240_000);

afterAll(async () => {
  await started?.stop();
});

describe('quay restore before 3.7 (the scale path)', () => {
  it('restores into a new namespace and bucket, scaling the operator and components and back', async () => {
    // Prepare
    const url = await drNamespace(s3, bed, DR, 'dr-s3');
    // What ran beside psql while it loaded the dump: Quay's writers must all be stopped.
    const beside: string[][] = [];
    bed.operator.overrideExec(DR, '*postgres', (fallback) => (command, io, container) => {
      if (command[0] === 'psql' && !command.includes('--version'))
        beside.push(
          bed.api.store
            .list(BuiltIn.pods, DR)
            .map((pod) => pod.metadata.labels?.['quay-component'] ?? '')
            .filter((c) => c !== 'postgres'),
        );
      return fallback(command, io, container);
    });
    const operatorReplicas: number[] = [];
    const unwatch = bed.api.store.watch((event) => {
      if (event.ref.resource === 'deployments' && event.object.metadata.name === operatorName())
        operatorReplicas.push(Number((event.object['spec'] as { replicas?: number }).replicas));
    });

    // Act
    const result = await restore(DR, 'older-dr-bucket', 'dr-s3', url).finally(() => {
      unwatch();
      bed.operator.overrideExec(DR, '*postgres', undefined);
    });

    // Assess
    expect(result.cause).toBeUndefined();
    expect(result.status).toBe('SUCCEEDED');
    expect(await quayRows(await bed.operator.database(DR, QUAY_NAME), QUAY_DATABASE)).toEqual(rows);
    const blobs = await blobsIn(s3, 'older-dr-bucket');
    for (const image of bed.images)
      for (const blob of image.blobs) expect(blobs.has(blob.digest)).toBe(true);
    // No replica overrides written: Quay before 3.7 has none; the components are as captured.
    expect(spec(DR).components).toEqual(spec(NS).components);
    expect(replicas(DR)).toEqual(before);
    expect(replicas(NS)).toEqual(before);
    expect(beside.length).toBeGreaterThan(0);
    expect(beside.every((pods) => pods.length === 0)).toBe(true);
    expect(operatorReplicas).toContain(0);
    const tags = (await (await fetch(`${url}/v2/team/app1/tags/list`)).json()) as {
      tags: string[];
    };
    expect(tags.tags).toEqual(['v1']);
  });

  it('rolls back a restore that does not verify, the operator and components as recorded', async () => {
    // Prepare
    const bundle = spec(NS).configBundleSecret;
    keysSecret(s3, bed, NS, 'quay-s3');

    // Act: a registry URL nothing answers on, so the verification fails.
    const result = await restore(NS, 'older-rollback', 'quay-s3', NOTHING_ANSWERS);

    // Assess
    expect(result.status).toBe('FAILED');
    expect({ error: result.error, cause: result.cause }).toMatchObject({
      error: 'RestoreRolledBack',
    });
    expect(spec(NS).configBundleSecret).toBe(bundle);
    await bed.operator.waitForAvailable(NS, QUAY_NAME, 30_000);
    expect(replicas(NS)).toEqual(before);
    expect(await quayRows(await bed.database(), QUAY_DATABASE)).toEqual(rows);
  });

  it('puts the operator and components back when the database cannot be loaded', async () => {
    // Prepare: psql in the postgres pod refuses the DROP DATABASE that starts the load.
    keysSecret(s3, bed, NS, 'quay-s3');
    const bundle = spec(NS).configBundleSecret;
    bed.operator.overrideExec(NS, '*postgres', (fallback) => async (command, io, container) => {
      if (command[0] !== 'psql' || !command.some((a) => a.startsWith('DROP DATABASE')))
        return fallback(command, io, container);
      io.stderr('ERROR:  permission denied to drop database\n');
      return 1;
    });

    // Act
    const result = await restore(NS, 'older-noload', 'quay-s3', bed.registryUrl).finally(() =>
      bed.operator.overrideExec(NS, '*postgres', undefined),
    );

    // Assess
    expect(result.status).toBe('FAILED');
    expect(result.cause).toContain('permission denied to drop database');
    expect(spec(NS).configBundleSecret).toBe(bundle);
    expect(replicas(NS)).toEqual(before);
    await bed.operator.waitForAvailable(NS, QUAY_NAME, 30_000);
    expect(await quayRows(await bed.database(), QUAY_DATABASE)).toEqual(rows);
  });

  it('does not call the rollout done while a ready quay-app pod runs the storage from before the switch', async () => {
    // Prepare: the operator down (as the scale path leaves it until the end), the
    // QuayRegistry pointed at a bundle on another bucket, as a switch does.
    const profile = profileOfBed();
    const store = bed.api.store;
    const scaleOperator = (count: number) => {
      const operator = store.read(
        BuiltIn.deployments,
        bed.operator.operatorNamespace,
        operatorName(),
      );
      store.replace(BuiltIn.deployments, {
        ...operator,
        spec: { ...(operator['spec'] as object), replicas: count },
      });
    };
    const pointAt = (bundle: string) => {
      const quay = store.read(QUAY_REGISTRY, NS, QUAY_NAME);
      store.replace(QUAY_REGISTRY, {
        ...quay,
        spec: { ...(quay['spec'] as object), configBundleSecret: bundle },
      });
    };
    const original = spec(NS).configBundleSecret;
    const bundle = store.read(BuiltIn.secrets, NS, original);
    const config = Buffer.from(
      String((bundle['data'] as Record<string, string>)['config.yaml']),
      'base64',
    )
      .toString('utf8')
      .replaceAll('quay-older', 'older-moved');
    store.create(BuiltIn.secrets, {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'config-bundle-moved', namespace: NS },
      data: { 'config.yaml': Buffer.from(config).toString('base64') },
    });
    try {
      // Act
      scaleOperator(0);
      await bed.operator.sync();
      pointAt('config-bundle-moved');
      await bed.operator.sync();
      await bed.operator.sync();
      // On a loaded machine a probe may keep the pod unready a moment: wait until one is ready.
      let whileDown = await profile.rolloutStatus({ podsBefore: [] });
      for (let tries = 0; whileDown.ready === 0 && tries < 40; tries++) {
        await new Promise((resolve) => setTimeout(resolve, 250));
        whileDown = await profile.rolloutStatus({ podsBefore: [] });
      }
      scaleOperator(1);
      const afterOperator = await doneWithin(profile, 20_000);

      // Assess
      expect(whileDown.ready).toBeGreaterThan(0);
      expect(whileDown.done).toBe(false);
      expect(whileDown.message).toContain('still on the storage from before');
      expect(whileDown.message).toContain('s3://quay-older');
      expect(afterOperator.done).toBe(true);
    } finally {
      scaleOperator(1);
      pointAt(original);
      await doneWithin(profile, 20_000);
      store.delete(BuiltIn.secrets, NS, 'config-bundle-moved');
    }
  });

  it('takes a quay-app pod replaced between the poll listing it and reading its config as not rolled yet', async () => {
    // Prepare: Quay rolled and available; the next listing of the pods races with
    // their replacement (the operator rolling them), as it did in CI at 6681492.
    await bed.operator.waitForAvailable(NS, QUAY_NAME, 30_000);
    const profile = profileOfBed();
    expect((await doneWithin(profile, 20_000)).done).toBe(true);
    const gone: string[] = [];
    bed.api.raceAnswers({
      verb: 'list',
      resource: 'pods',
      count: 1,
      change: (answer) => {
        for (const pod of [answer].flat()) {
          if (pod.metadata.labels?.['quay-component'] !== 'quay-app') continue;
          bed.api.store.delete(BuiltIn.pods, pod.metadata.namespace, pod.metadata.name);
          gone.push(pod.metadata.name);
        }
      },
    });

    // Act
    const racing = await profile.rolloutStatus({ podsBefore: [] });
    await bed.operator.sync();
    const later = await doneWithin(profile, 20_000);

    // Assess
    expect(gone.length).toBeGreaterThan(0);
    expect(racing.done).toBe(false);
    expect(racing.message).toContain(`${gone[0]} (gone since it was listed)`);
    expect(later.done).toBe(true);
  });

  it('reads the running config from another ready quay-app pod when the one listed is replaced', async () => {
    // Prepare: two quay-app pods (the operator down, so it leaves the Deployment's
    // replicas as set); the first listing's first ready pod is deleted as it is answered.
    const store = bed.api.store;
    const operator = store.read(
      BuiltIn.deployments,
      bed.operator.operatorNamespace,
      operatorName(),
    );
    const app = store.read(BuiltIn.deployments, NS, `${QUAY_NAME}-quay-app`);
    const scale = (object: typeof app, count: number) =>
      store.replace(BuiltIn.deployments, {
        ...object,
        spec: { ...(object['spec'] as object), replicas: count },
      });
    const readyApps = () =>
      store
        .list(BuiltIn.pods, NS)
        .filter(
          (pod) =>
            pod.metadata.labels?.['quay-component'] === 'quay-app' &&
            (
              pod['status'] as { conditions?: Array<{ type: string; status: string }> }
            )?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
        );
    const gone: string[] = [];
    try {
      scale(store.read(BuiltIn.deployments, bed.operator.operatorNamespace, operatorName()), 0);
      scale(store.read(BuiltIn.deployments, NS, `${QUAY_NAME}-quay-app`), 2);
      await bed.operator.sync();
      for (let tries = 0; readyApps().length < 2 && tries < 80; tries++)
        await new Promise((resolve) => setTimeout(resolve, 250));
      bed.api.raceAnswers({
        verb: 'list',
        resource: 'pods',
        count: 1,
        change: (answer) => {
          const first = [answer]
            .flat()
            .find((pod) => readyApps().some((r) => r.metadata.name === pod.metadata.name));
          if (first === undefined) return;
          store.delete(BuiltIn.pods, first.metadata.namespace, first.metadata.name);
          gone.push(first.metadata.name);
        },
      });

      // Act
      const text = await runningConfig(quayCluster(bedKubeConfig(), bedSettings()));

      // Assess
      expect(readyApps().length).toBeGreaterThan(0);
      expect(gone).toHaveLength(1);
      expect(text).toContain('quay-older');
    } finally {
      scale(
        store.read(BuiltIn.deployments, NS, `${QUAY_NAME}-quay-app`),
        Number((app['spec'] as { replicas?: number }).replicas ?? 1),
      );
      scale(
        store.read(BuiltIn.deployments, bed.operator.operatorNamespace, operatorName()),
        Number((operator['spec'] as { replicas?: number }).replicas ?? 1),
      );
      await bed.operator.sync();
      await doneWithin(profileOfBed(), 20_000);
    }
  });
});
