/**
 * The fake cluster's Jobs (sandbox/kube/jobs.ts): a Job runs its container as
 * a local process with a claim's directory for its volume and its env from
 * the pod spec (Secrets included), and reports succeeded or failed in its
 * status.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { REGISTRY_NAMESPACE } from '../../sandbox/kube/controller.ts';
import { type FakeCluster, startFakeCluster } from '../../sandbox/kube/index.ts';
import { BuiltIn } from '../../sandbox/kube/resources.ts';
import { waitFor } from '../../sandbox/process.ts';

let cluster: FakeCluster;
let claim: string;

const job = (name: string, script: string) => ({
  apiVersion: 'batch/v1',
  kind: 'Job',
  metadata: { name, namespace: REGISTRY_NAMESPACE },
  spec: {
    backoffLimit: 0,
    template: {
      spec: {
        restartPolicy: 'Never',
        containers: [
          {
            name: 'main',
            image: 'busybox',
            command: ['sh', '-c', script, 'job', '/mnt/data/out.txt'],
            env: [
              { name: 'PLAIN', value: 'plain' },
              {
                name: 'FROM_SECRET',
                valueFrom: { secretKeyRef: { name: 'job-secret', key: 'k' } },
              },
            ],
            volumeMounts: [{ name: 'data', mountPath: '/mnt/data' }],
          },
        ],
        volumes: [{ name: 'data', persistentVolumeClaim: { claimName: 'job-data' } }],
      },
    },
  },
});

/** The Job's status once it has a Complete or Failed condition. */
async function ended(name: string): Promise<Record<string, unknown>> {
  let status: Record<string, unknown> = {};
  await waitFor(
    `job ${name}`,
    async () => {
      const object = cluster.server.store.get(BuiltIn.jobs, REGISTRY_NAMESPACE, name);
      status = (object?.['status'] ?? {}) as Record<string, unknown>;
      return Array.isArray(status['conditions']);
    },
    { timeoutMs: 30_000, intervalMs: 100 },
  );
  return status;
}

beforeAll(async () => {
  // A token: kubectl asks for credentials (and waits on stdin) for an https server without any.
  cluster = await startFakeCluster({ token: 'jobs-token' });
  cluster.server.store.create(BuiltIn.namespaces, {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: REGISTRY_NAMESPACE },
  });
  cluster.server.store.create(BuiltIn.secrets, {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: 'job-secret', namespace: REGISTRY_NAMESPACE },
    data: { k: Buffer.from('from-secret').toString('base64') },
  });
  claim = await cluster.createClaim('job-data');
});

afterAll(async () => cluster?.stop());

describe('Jobs in the fake cluster', () => {
  it('runs a Job with its claim as a directory and its env from the pod spec, and reports it succeeded', async () => {
    // Act
    cluster.server.store.create(
      BuiltIn.jobs,
      job(
        'writes',
        ['echo "$PLAIN $FROM_SECRET ', '$', '{HOME:+home} $', '{AWS_CA_BUNDLE:-none}" > "$1"'].join(
          '',
        ),
      ),
    );
    const status = await ended('writes');
    // Assess
    expect(status).toMatchObject({
      succeeded: 1,
      conditions: [{ type: 'Complete', status: 'True' }],
    });
    expect(await readFile(`${claim}/out.txt`, 'utf8')).toBe('plain from-secret home none\n');
    const env = { ...process.env };
    delete env['KUBECONFIG'];
    const listed = await promisify(execFile)(
      'kubectl',
      [
        '--kubeconfig',
        cluster.kubeconfigPath,
        '-n',
        REGISTRY_NAMESPACE,
        'get',
        'jobs',
        '-o',
        'name',
      ],
      { env, timeout: 30_000 },
    );
    expect(listed.stdout).toContain('job.batch/writes');
  });

  it('reports a Job whose process fails as failed', async () => {
    // Act
    cluster.server.store.create(BuiltIn.jobs, job('fails', 'exit 3'));
    const status = await ended('fails');
    // Assess
    expect(status).toMatchObject({ failed: 1, conditions: [{ type: 'Failed', status: 'True' }] });
  });
});
