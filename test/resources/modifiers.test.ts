import { describe, expect, it } from '@jest/globals';
import { applyJsonPatch, type JsonPatchOp } from '../../functions/commons/cluster/json-patch.ts';
import type { KubeObject } from '../../functions/commons/cluster/resources-api.ts';
import {
  applyMappings,
  mapImage,
  parseMappings,
} from '../../functions/commons/cluster/resources-mappings.ts';
import {
  applyModifiers,
  parseResourceModifiers,
} from '../../functions/commons/cluster/resources-modifiers.ts';
import { InputError } from '../../functions/commons/errors.ts';

const deployment: KubeObject = {
  apiVersion: 'apps/v1',
  kind: 'Deployment',
  metadata: { name: 'web', namespace: 'shop', labels: { app: 'web', tier: 'front' } },
  spec: {
    replicas: 2,
    template: {
      spec: {
        containers: [{ name: 'web', image: 'old.example.com/team/web:1' }],
        tolerations: [{ key: 'a' }],
      },
    },
  },
};
const subject = {
  groupResource: 'deployments.apps',
  namespace: 'shop',
  name: 'web',
  labels: { app: 'web', tier: 'front' },
};

/** The issues of the InputError `run` throws. */
function issuesOf(run: () => unknown): readonly string[] {
  try {
    run();
  } catch (err) {
    if (err instanceof InputError) return err.issues;
    throw err;
  }
  throw new Error('expected an InputError');
}

const rules = (patches: string, conditions = 'groupResource: deployments.apps') =>
  `version: v1\nresourceModifierRules:\n- conditions:\n    ${conditions}\n${patches}`;

describe('JSON Patch', () => {
  it.each<[string, JsonPatchOp[], unknown]>([
    [
      'add appends with -',
      [{ op: 'add', path: '/spec/template/spec/tolerations/-', value: { key: 'b' } }],
      [{ key: 'a' }, { key: 'b' }],
    ],
    ['remove takes an item out', [{ op: 'remove', path: '/spec/template/spec/tolerations/0' }], []],
    [
      'replace changes a value',
      [{ op: 'replace', path: '/spec/template/spec/tolerations/0/key', value: 'z' }],
      [{ key: 'z' }],
    ],
    [
      'copy duplicates',
      [
        {
          op: 'copy',
          from: '/spec/template/spec/tolerations/0',
          path: '/spec/template/spec/tolerations/1',
        },
      ],
      [{ key: 'a' }, { key: 'a' }],
    ],
    [
      'move relocates',
      [
        { op: 'add', path: '/spec/template/spec/tolerations/-', value: { key: 'b' } },
        {
          op: 'move',
          from: '/spec/template/spec/tolerations/1',
          path: '/spec/template/spec/tolerations/0',
        },
      ],
      [{ key: 'b' }, { key: 'a' }],
    ],
  ])('%s', (_case, ops, tolerations) => {
    // Act
    const patched = applyJsonPatch(deployment, ops);
    // Assess
    expect(
      (patched['spec'] as { template: { spec: { tolerations: unknown } } }).template.spec
        .tolerations,
    ).toEqual(tolerations);
    expect(deployment).toEqual(expect.objectContaining({ kind: 'Deployment' }));
  });
});

describe('resource modifiers', () => {
  it('applies a matching rule: a failed test skips its patches, merge patches merge', () => {
    // Prepare
    const parsed = parseResourceModifiers(
      `version: v1
resourceModifierRules:
- conditions:
    groupResource: deployments.apps
    labelSelector:
      matchExpressions: [{key: tier, operator: In, values: [front]}]
  patches:
  - operation: test
    path: /spec/replicas
    value: "2"
  - operation: replace
    path: /spec/replicas
    value: "1"
  mergePatches:
  - patchData: '{"metadata": {"labels": {"restored": "yes", "tier": null}}}'
- conditions:
    groupResource: deployments.apps
    resourceNameRegex: "^web$"
  patches:
  - operation: test
    path: /spec/replicas
    value: 5
  - operation: remove
    path: /spec/template
- conditions:
    groupResource: pods
  patches:
  - operation: remove
    path: /spec
`,
      'rules.yaml',
    );
    // Act
    const result = applyModifiers(parsed, deployment, subject);
    // Assess
    expect(result.applied).toEqual([0]);
    expect(result.skipped).toEqual([
      { rule: 1, why: 'test of "/spec/replicas" did not find 5 there' },
    ]);
    expect(result.object['spec']).toEqual(
      expect.objectContaining({ replicas: 1, template: expect.anything() }),
    );
    expect(result.object.metadata.labels).toEqual({ app: 'web', restored: 'yes' });
  });

  it.each([
    [
      'a rule with no conditions',
      'version: v1\nresourceModifierRules:\n- patches: []',
      [
        'resourceModifierRules[0].conditions: a mapping with at least groupResource (e.g. groupResource: statefulsets.apps)',
      ],
    ],
    [
      'an unknown condition',
      rules('  patches: [{operation: remove, path: /spec}]', 'groupResource: pods\n    name: web'),
      [
        'resourceModifierRules[0].conditions: unknown field "name"; conditions are groupResource, resourceNameRegex, namespaces and labelSelector',
      ],
    ],
    [
      'a path that is not a pointer',
      rules('  patches: [{operation: remove, path: spec/replicas}]'),
      [
        'resourceModifierRules[0].patches[0].path: "spec/replicas" is not a JSON pointer: it must start with "/"',
      ],
    ],
    [
      'a value on remove and none on add',
      rules('  patches: [{operation: remove, path: /a, value: 1}, {operation: add, path: /b}]'),
      [
        'resourceModifierRules[0].patches[0].value: remove takes no value; remove it',
        'resourceModifierRules[0].patches[1].value: add needs a value',
      ],
    ],
    [
      'an In without values',
      rules(
        '  patches: [{operation: remove, path: /a}]',
        'groupResource: pods\n    labelSelector: {matchExpressions: [{key: a, operator: In}]}',
      ),
      [
        'resourceModifierRules[0].conditions.labelSelector.matchExpressions[0].values: In needs a non-empty list of values',
      ],
    ],
    [
      'a merge patch that is a list',
      rules("  mergePatches: [{patchData: '[1]'}]"),
      ['resourceModifierRules[0].mergePatches[0].patchData: must be an object'],
    ],
    [
      'text that is not YAML',
      'version: v1\nresourceModifierRules: [\n',
      ['rules.yaml, line 3: not YAML'],
    ],
  ])('rejects %s, naming the rule and field', (_case, text, said) => {
    // Act
    const issues = issuesOf(() => parseResourceModifiers(text, 'rules.yaml'));
    // Assess
    for (const line of said) expect(issues.join('\n')).toContain(line);
  });

  it("never repeats what a failed test found: it may be a Secret's value", () => {
    // Prepare
    const secret: KubeObject = {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'db' },
      data: { password: 'c2VjcmV0LXZhbHVl' },
    };
    const parsed = parseResourceModifiers(
      rules(
        '  patches: [{operation: test, path: /data/password, value: x}, {operation: remove, path: /data}]',
        'groupResource: secrets',
      ),
      'rules.yaml',
    );
    // Act
    const result = applyModifiers(parsed, secret, {
      groupResource: 'secrets',
      namespace: undefined,
      name: 'db',
      labels: {},
    });
    // Assess
    expect(result.skipped).toEqual([
      { rule: 0, why: 'test of "/data/password" did not find "x" there' },
    ]);
    expect(JSON.stringify(result.skipped)).not.toContain('c2VjcmV0LXZhbHVl');
  });

  it('names the rule, patch and object when a patch does not fit an object', () => {
    // Prepare
    const parsed = parseResourceModifiers(
      rules('  patches: [{operation: remove, path: /spec/affinity}]'),
      'rules.yaml',
    );
    // Act
    const issues = issuesOf(() => applyModifiers(parsed, deployment, subject));
    // Assess
    expect(issues).toEqual([
      'resourceModifierRules[0].patches[0] (remove /spec/affinity) on deployments.apps shop/web: "/spec/affinity" does not exist, so it cannot be removed; narrow the rule\'s conditions to objects that have it, or put a test operation first',
    ]);
  });
});

describe('restore mappings', () => {
  it('maps images at a path boundary, the longest prefix first', () => {
    // Prepare
    const mappings = parseMappings({
      namespaces: [],
      storageClasses: [],
      imageRegistries: [
        'old.example.com=new.example.com',
        'old.example.com/team=team.example.com/t',
      ],
    });
    // Act, Assess
    expect(mapImage('old.example.com/team/web:1', mappings)).toBe('team.example.com/t/web:1');
    expect(mapImage('old.example.com/other/web@sha256:ab', mappings)).toBe(
      'new.example.com/other/web@sha256:ab',
    );
    expect(mapImage('old.example.com:5000/web', mappings)).toBe('old.example.com:5000/web');
    expect(mapImage('old.example.community/web', mappings)).toBe('old.example.community/web');
  });

  it("maps a CronJob's job template and a Namespace's name label", () => {
    // Prepare
    const mappings = parseMappings({
      namespaces: ['shop=shop2'],
      storageClasses: [],
      imageRegistries: ['old.example.com=new.example.com'],
    });
    const cronJob: KubeObject = {
      apiVersion: 'batch/v1',
      kind: 'CronJob',
      metadata: { name: 'nightly', namespace: 'shop' },
      spec: {
        jobTemplate: {
          spec: {
            template: {
              spec: {
                initContainers: [{ name: 'i', image: 'old.example.com/i:1' }],
                containers: [],
              },
            },
          },
        },
      },
    };
    const namespace: KubeObject = {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'shop', labels: { 'kubernetes.io/metadata.name': 'shop' } },
    };
    // Act
    const mappedJob = applyMappings(cronJob, mappings);
    const mappedNamespace = applyMappings(namespace, mappings);
    // Assess
    expect(mappedJob.metadata.namespace).toBe('shop2');
    expect(JSON.stringify(mappedJob)).toContain('"image":"new.example.com/i:1"');
    expect(mappedNamespace.metadata).toEqual({
      name: 'shop2',
      labels: { 'kubernetes.io/metadata.name': 'shop2' },
    });
  });

  it('lists every bad pair at once, with its flag', () => {
    // Act
    const issues = issuesOf(() =>
      parseMappings({
        namespaces: ['Default=prod', 'a=b', 'a=c'],
        storageClasses: ['a=b=c'],
        imageRegistries: ['https://old.example.com=new.example.com'],
      }),
    );
    // Assess
    expect(issues).toEqual([
      '--namespace-mapping "Default=prod": "Default" is not namespace names (lower-case letters, digits and -, at most 63); e.g. default=default1',
      '--namespace-mapping "a=c": a is already mapped to b; map it once',
      '--storage-class-mapping "a=b=c": expected old=new, e.g. alicloud-disk-topology-alltype=gp3',
      '--image-registry-mapping "https://old.example.com=new.example.com": "https://old.example.com" is not image prefixes: a registry host[:port] and optional repository path, without scheme, tag or digest; e.g. old.example.com/team=registry.example.com/team',
    ]);
  });
});
