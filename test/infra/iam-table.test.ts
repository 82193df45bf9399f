/**
 * The IAM table of docs/deploy.md ("What each function may do") is what the
 * stack grants: every statement of every function role is sorted into one of
 * the table's columns (or a kind every role has, named below), and each cell
 * must equal what the template holds. A grant the table does not describe
 * fails the test, so the table cannot fall behind the stack.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from '@jest/globals';
import { FUNCTIONS } from '../../infra/function-specs.ts';
import { PROJECT_ROOT } from '../../infra/house-function.ts';
import {
  actionsOf,
  buildStack,
  FULL_CONTEXT,
  type FunctionName,
  functionStatements,
  logicalIdOf,
  PATCH_KUBECONFIG,
  resourceList,
} from './support.ts';

// Every kind of grant at once: the stack's vault and key, both cluster identities, a role and a registry bucket.
const built = buildStack({
  ...FULL_CONTEXT,
  patchKubeconfigSecretArn: PATCH_KUBECONFIG,
  roleBucketNames: 'acme-plain-source',
  registryBucketNames: 'acme-registry',
});

const FOLDERS = ['blobs', 'snapshots', 'runs', 'locks'] as const;
const COLUMNS = [
  'vault bucket',
  ...FOLDERS.map((folder) => `${folder}/`),
  'vault key',
  'role buckets',
  'registry buckets',
  'secrets',
  'queues',
];
type Column = string;

/** What a queue grant lets a role do, by the actions CDK's grants give. */
const QUEUE_USES = {
  send: ['sqs:GetQueueAttributes', 'sqs:GetQueueUrl', 'sqs:SendMessage'],
  receive: [
    'sqs:ChangeMessageVisibility',
    'sqs:DeleteMessage',
    'sqs:GetQueueAttributes',
    'sqs:GetQueueUrl',
    'sqs:ReceiveMessage',
  ],
} as const;

const ref = (construct: { node: { defaultChild?: unknown } }, attribute?: string) =>
  JSON.stringify(
    attribute === undefined
      ? { Ref: logicalIdOf(built, construct) }
      : { 'Fn::GetAtt': [logicalIdOf(built, construct), attribute] },
  );

/** The table's cells for one function, from its role's statements in the template. */
function grantsOf(name: FunctionName): Record<Column, string> {
  const { stack } = built;
  const vault = ref(stack.vaultBucket as never, 'Arn');
  const key = ref(stack.vaultKey as never, 'Arn');
  const queues = {
    copy: ref(stack.copyQueue, 'Arn'),
    'dead letters': ref(stack.deadLetterQueue, 'Arn'),
  };
  const secrets = {
    'read-kubeconfig': FULL_CONTEXT.kubeconfigSecretArn,
    'patch-kubeconfig': PATCH_KUBECONFIG,
    'registry-login': FULL_CONTEXT.registryCredentialsSecretArn,
  };
  const logGroup = ref(stack.functions[name].logGroup, 'Arn');
  const cells = new Map<Column, Set<string>>(COLUMNS.map((column) => [column, new Set()]));
  const add = (column: Column, words: readonly string[]) => {
    for (const word of words) cells.get(column)?.add(word);
  };
  const queueActions = new Map<string, Set<string>>();
  // One resource at a time: CDK merges statements with the same actions (vault and role bucket objects).
  const grants = functionStatements(built, name).flatMap((statement) =>
    resourceList(statement).map((resource) => ({ ...statement, Resource: resource })),
  );
  for (const statement of grants) {
    const resource = JSON.stringify(statement.Resource);
    const actions = actionsOf(statement);
    const bare = actions.map((action) => action.replace(/^[a-z0-9]+:/, ''));
    if (resource === '"*"' && actions.every((action) => action.startsWith('xray:'))) continue;
    if (resource.includes(logGroup)) continue;
    // Listing goes with every vault and role-bucket access (the prefix only); stack.test.ts checks it.
    if (actions.length === 1 && actions[0] === 's3:ListBucket') continue;
    const folder = FOLDERS.find((name) => resource.includes(`/regvault/${name}/*`));
    if (resource === vault) add('vault bucket', bare);
    else if (resource.includes(vault) && folder !== undefined) add(`${folder}/`, bare);
    else if (resource === key) add('vault key', bare);
    else if (resource.includes('acme-plain-source/*')) add('role buckets', bare);
    else if (resource.includes('acme-registry/*')) add('registry buckets', bare);
    else if (actions.includes('secretsmanager:GetSecretValue')) {
      for (const [what, arn] of Object.entries(secrets))
        if (resource.includes(arn)) add('secrets', [what]);
    } else {
      const queue = Object.entries(queues).find(([, arn]) => resource === arn)?.[0];
      if (queue === undefined)
        throw new Error(
          `${name}: a grant the table has no column for: ${JSON.stringify(statement)}`,
        );
      const seen = queueActions.get(queue) ?? new Set<string>();
      for (const action of actions) seen.add(action);
      queueActions.set(queue, seen);
    }
  }
  for (const [queue, actions] of queueActions) {
    const uses = [
      ...(actions.has('sqs:SendMessage') ? (['send'] as const) : []),
      ...(actions.has('sqs:ReceiveMessage') ? (['receive'] as const) : []),
    ];
    // The uses must explain every action granted, and nothing more.
    expect([...actions].sort()).toEqual(
      [...new Set(uses.flatMap((use) => QUEUE_USES[use]))].sort(),
    );
    add(
      'queues',
      uses.map((use) => `${use}:${queue.replace(' ', '-')}`),
    );
  }
  return Object.fromEntries(
    COLUMNS.map((column) => {
      const words = [...(cells.get(column) ?? [])].sort();
      return [column, words.length === 0 ? 'none' : words.join(' ')];
    }),
  ) as Record<Column, string>;
}

/** The rows of the IAM table in docs/deploy.md, cells without their backticks. */
function documentedTable(): Map<string, Record<Column, string>> {
  const doc = readFileSync(join(PROJECT_ROOT, 'docs', 'deploy.md'), 'utf8');
  const start = doc.indexOf('## What each function may do');
  const section = doc.slice(start, doc.indexOf('\n## ', start + 1));
  const lines = section.split('\n').filter((line) => line.startsWith('| `'));
  return new Map(
    lines.map((line) => {
      const [name, ...cells] = line
        .split('|')
        .slice(1, -1)
        .map((cell) => cell.trim().replaceAll('`', '').replace(/\s+/g, ' '));
      const row = Object.fromEntries(
        COLUMNS.map((column, index) => [column, (cells[index] ?? '').split(' ').sort().join(' ')]),
      ) as Record<Column, string>;
      return [name ?? '', row];
    }),
  );
}

describe('the IAM table in docs/deploy.md', () => {
  const table = documentedTable();

  it('has one row per function, in the columns the test reads', () => {
    // Assess
    expect([...table.keys()].sort()).toEqual(Object.keys(FUNCTIONS).sort());
  });

  it.each(Object.keys(FUNCTIONS) as FunctionName[])('says what the template grants %s', (name) => {
    // Act
    const granted = grantsOf(name);

    // Assess
    expect(table.get(name)).toEqual(granted);
  });
});
