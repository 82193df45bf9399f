/**
 * The step table is the map of the workflows: every Task state of the ASL
 * files is served by one entry, every entry is used, and a local run calls the very handler a Lambda runs, which
 * parses its event before the step touches anything.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { stepHandler } from '../../functions/commons/aws/step-handler.ts';
import { InputError } from '../../functions/commons/errors.ts';
import { createLocalDeps } from '../../functions/commons/local/deps.ts';
import { taskHandlers, taskStatesOf } from '../../functions/commons/local/runner.ts';
import type { WorkflowDeps } from '../../functions/commons/workflows/deps.ts';
import {
  STEPS,
  type StepName,
  stepsOf,
  WORKFLOWS,
  type WorkflowName,
} from '../../functions/commons/workflows/steps.ts';
import { PROJECT_ROOT } from '../../infra/house-function.ts';
import { functionArnPlaceholder } from '../../infra/regvault-stack.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { recordingDeps } from '../support/deps.ts';
import { clientFor, createBucket, listAll, locationOn } from '../support/s3.ts';

/** A queue no test here sends to. */
const noQueue = {
  send: async () => {
    throw new Error('no copy message is sent here');
  },
  sendBatch: async () => {
    throw new Error('no copy message is sent here');
  },
};

function tasksOf(workflow: WorkflowName): Array<{ state: string; resource: string }> {
  const file = join(PROJECT_ROOT, 'state-machines', `${workflow}.asl.json`);
  return taskStatesOf(JSON.parse(readFileSync(file, 'utf8')));
}

describe('the step table and the state machines', () => {
  it.each(WORKFLOWS)(
    '%s: every Task state is a step of the table invoking its function',
    (workflow) => {
      // Prepare
      const served = new Map(
        stepsOf(workflow).flatMap(({ name, states }) => states.map((state) => [state, name])),
      );

      // Act
      const unserved = tasksOf(workflow).filter(({ state, resource }) => {
        const name = served.get(state);
        return name === undefined || resource !== `\${${functionArnPlaceholder(name)}}`;
      });

      // Assess
      expect(unserved).toEqual([]);
    },
  );

  it.each(WORKFLOWS)('%s: every state a table entry names is a Task state of it', (workflow) => {
    // Prepare
    const tasks = new Set(tasksOf(workflow).map((task) => task.state));

    // Act
    const unused = stepsOf(workflow).flatMap(({ name, states }) =>
      states.filter((state) => !tasks.has(state)).map((state) => `${name}: ${state}`),
    );

    // Assess
    expect(stepsOf(workflow).length).toBeGreaterThan(0);
    expect(unused).toEqual([]);
  });

  it('gives every step to a workflow but end-dead-run (the rule on an execution calls it), and only the fan-out steps to both', () => {
    // Prepare
    const all = Object.keys(STEPS)
      .filter((name) => name !== 'end-dead-run')
      .sort();

    // Act
    const byWorkflow = WORKFLOWS.flatMap((workflow) => stepsOf(workflow).map((e) => e.name));
    const shared = byWorkflow.filter((name, index) => byWorkflow.indexOf(name) !== index);

    // Assess
    expect([...new Set(byWorkflow)].sort()).toEqual(all);
    expect(shared.sort()).toEqual(['count-shards', 'enqueue-shards']);
    expect(STEPS['end-dead-run'].in).toEqual({});
  });

  it.each(Object.keys(STEPS) as StepName[])(
    'functions/%s.ts exports the handler the local runner calls',
    async (name) => {
      // Act
      const entry: unknown = await import(`../../functions/${name}.ts`);

      // Assess
      expect(entry).toHaveProperty('handler', stepHandler(name));
    },
  );
});

describe('a local run calls the Lambda handler, which parses the event first', () => {
  let s3: S3ServerHandle;
  let client: S3Client;
  let deps: WorkflowDeps & { close(): void };
  /** What the steps asked of their dependencies: nothing, when the event is refused. */
  const asked: string[] = [];

  beforeAll(async () => {
    s3 = await startS3Server({ name: 's3-steps' });
    client = clientFor(s3);
    await createBucket(client, 'vault');
    deps = recordingDeps(
      createLocalDeps({
        vault: { location: locationOn(s3, 'vault', '', 'vault'), credentials: s3.credentials },
      }),
      asked,
    );
  }, 60_000);

  afterAll(async () => {
    deps?.close();
    client?.destroy();
    await s3?.stop();
  });

  it.each([
    {
      workflow: 'backup',
      state: 'PlanShards',
      event: { state: { runId: 7, snapshotId: 'snap', layout: 'registry' } },
      fields: ['state.runId', 'state.startedAt', 'state.source', 'state.clusterFiles'],
    },
    {
      workflow: 'backup',
      state: 'FinalizeSnapshot',
      event: { plan: { linkShardIds: 'all', dataShardIds: [], estimatedObjects: -1 } },
      fields: ['state', 'plan.linkShardIds', 'plan.estimatedObjects', 'plan.planRequests'],
    },
    {
      workflow: 'restore',
      state: 'CheckRollout',
      event: { switched: { changed: 'yes', podsBefore: [1] } },
      fields: ['switched.changed', 'switched.previous', 'switched.podsBefore.0'],
    },
    {
      workflow: 'restore',
      state: 'DescribeRestoreFailure',
      event: { state: null, switched: null, rollout: { verdict: 'maybe' }, verify: null },
      fields: ['rollout.verdict', 'rollout.ready'],
    },
  ] as const)(
    '$workflow $state: a malformed event is refused naming every bad field, before any side effect',
    async ({ workflow, state, event, fields }) => {
      // Prepare
      asked.length = 0;
      const handlers = taskHandlers(workflow, tasksOf(workflow), deps, noQueue);
      const handler = handlers[state]?.handle;
      if (handler === undefined) throw new Error(`no local handler for ${state}`);

      // Act
      const refusal = await handler(event).then(
        () => undefined,
        (err: unknown) => err,
      );

      // Assess
      expect(refusal).toBeInstanceOf(InputError);
      const issues = refusal instanceof InputError ? refusal.issues : [];
      for (const field of fields)
        expect(issues.some((issue) => issue.startsWith(`${field}: `))).toBe(true);
      expect(asked).toEqual([]);
      expect([...(await listAll(client, 'vault')).keys()]).toEqual([]);
    },
  );

  it('runs without X-Ray: a local invocation loads no tracer, so no async hooks track its promises', async () => {
    // Prepare
    const handlers = taskHandlers('backup', tasksOf('backup'), deps, noQueue);
    const handler = handlers['DiscoverRegistryStorage']?.handle;
    if (handler === undefined) throw new Error('no local handler for DiscoverRegistryStorage');

    // Act
    await handler({ source: { bucket: 'vault', region: s3.region, endpoint: s3.endpoint } }).catch(
      () => undefined,
    );

    // Assess: the X-Ray SDK's cls-hooked registers its namespaces on process when loaded.
    expect(Reflect.get(process, 'namespaces')).toBeUndefined();
  });

  it('runs the step on the local dependencies when the event is well formed', async () => {
    // Prepare
    asked.length = 0;
    const handlers = taskHandlers('restore', tasksOf('restore'), deps, noQueue);
    const handler = handlers['CheckRollout']?.handle;
    if (handler === undefined) throw new Error('no local handler for CheckRollout');
    const storage = {
      bucket: 'registry-a',
      regionEndpoint: '',
      region: 'us-east-1',
      secretName: 's',
      rootDirectory: '',
    };

    // Act: a well-formed event reaches the step, which asks for the cluster this run has not got.
    const refusal = await handler({
      switched: {
        changed: true,
        previous: storage,
        current: { ...storage, bucket: 'registry-b' },
        podsBefore: [],
        switchedAt: '2026-12-01T00:00:00.000Z',
        deadline: '2026-12-01T00:10:00.000Z',
      },
    }).then(
      () => undefined,
      (err: unknown) => err,
    );

    // Assess
    expect(asked).toEqual(['profile']);
    expect(refusal).toBeInstanceOf(InputError);
    expect(String(refusal)).toMatch(/no kubeconfig was given; pass --kubeconfig/);
  });
});
