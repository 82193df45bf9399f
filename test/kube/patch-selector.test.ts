import { describe, expect, it } from '@jest/globals';
import { jsonPatch, mergePatch, strategicMergePatch } from '../../sandbox/kube/patch.ts';
import { fieldSelector, labelSelector } from '../../sandbox/kube/selector.ts';
import { KubeApiError, type KubeObject, ObjectStore } from '../../sandbox/kube/store.ts';

const object = (
  labels: Record<string, string>,
  extra: Record<string, unknown> = {},
): KubeObject => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name: 'p', namespace: 'ns', labels },
  ...extra,
});

describe('label selectors', () => {
  const pod = object({ app: 'image-registry', tier: 'backend' });
  it.each([
    ['app=image-registry', true],
    ['app==image-registry', true],
    ['app=other', false],
    ['app!=other', true],
    ['app=image-registry,tier!=backend', false],
    ['tier', true],
    ['!tier', false],
    ['!missing', true],
    ['app in (image-registry, other)', true],
    ['app notin (image-registry)', false],
    ['missing notin (x)', true],
    ['app in (a,b),tier', false],
    ['', true],
  ])('%j matches: %s', (selector, expected) => {
    // Act
    const matches = labelSelector(selector)(pod);
    // Assess
    expect(matches).toBe(expected);
  });

  it('rejects an invalid label key as BadRequest', () => {
    // Act
    const parse = () => labelSelector('bad key=x');
    // Assess
    expect(parse).toThrow(KubeApiError);
  });
});

describe('field selectors', () => {
  it.each([
    ['metadata.name=p', true],
    ['metadata.name!=p', false],
    ['metadata.namespace=ns,status.phase=Running', true],
    ['status.phase=Failed', false],
  ])('%j matches: %s', (selector, expected) => {
    // Act
    const matches = fieldSelector(selector)(object({}, { status: { phase: 'Running' } }));
    // Assess
    expect(matches).toBe(expected);
  });
});

describe('patches', () => {
  const doc = {
    metadata: { name: 'x', annotations: { 'a/b': '1' } },
    spec: { list: [1, 2, 3], keep: true },
  };

  it('merge patch merges objects, replaces lists and deletes nulls', () => {
    // Act
    const result = mergePatch(doc, {
      metadata: { annotations: null },
      spec: { list: [9], extra: 'y' },
    });
    // Assess
    expect(result).toEqual({
      metadata: { name: 'x' },
      spec: { list: [9], keep: true, extra: 'y' },
    });
  });

  it('strategic merge patch merges named lists and drops $ directives', () => {
    // Prepare
    const pod = {
      spec: {
        containers: [
          { name: 'a', image: 'old' },
          { name: 'b', image: 'b' },
        ],
      },
    };
    // Act
    const result = strategicMergePatch(pod, {
      spec: {
        $setElementOrder: [],
        containers: [
          { name: 'a', image: 'new' },
          { name: 'b', $patch: 'delete' },
        ],
      },
    });
    // Assess
    expect(result).toEqual({ spec: { containers: [{ name: 'a', image: 'new' }] } });
  });

  it.each([
    [
      'add to an escaped key',
      [{ op: 'add', path: '/metadata/annotations/c~1d', value: '2' }],
      ['metadata', 'annotations', 'c/d'],
      '2',
    ],
    [
      'replace in an escaped key',
      [{ op: 'replace', path: '/metadata/annotations/a~1b', value: '3' }],
      ['metadata', 'annotations', 'a/b'],
      '3',
    ],
    [
      'append with -',
      [{ op: 'add', path: '/spec/list/-', value: 4 }],
      ['spec', 'list'],
      [1, 2, 3, 4],
    ],
    [
      'insert at an index',
      [{ op: 'add', path: '/spec/list/0', value: 0 }],
      ['spec', 'list'],
      [0, 1, 2, 3],
    ],
    ['remove an index', [{ op: 'remove', path: '/spec/list/1' }], ['spec', 'list'], [1, 3]],
    [
      'move a value',
      [{ op: 'move', from: '/spec/keep', path: '/spec/kept' }],
      ['spec', 'kept'],
      true,
    ],
    [
      'copy a value',
      [{ op: 'copy', from: '/metadata/name', path: '/spec/name' }],
      ['spec', 'name'],
      'x',
    ],
    ['pass a test', [{ op: 'test', path: '/spec/keep', value: true }], ['spec', 'keep'], true],
  ])('json patch can %s', (_what, operations, path, expected) => {
    // Act
    const result = jsonPatch(doc, operations);
    // Assess
    const value = path.reduce<unknown>(
      (node, key) => (node as Record<string, unknown>)[key],
      result,
    );
    expect(value).toEqual(expected);
    expect(doc.spec.list).toEqual([1, 2, 3]);
  });

  it.each([
    ['a failed test', [{ op: 'test', path: '/spec/keep', value: false }], 'Invalid'],
    ['replacing a missing key', [{ op: 'replace', path: '/spec/nope', value: 1 }], 'Invalid'],
    ['removing past the end', [{ op: 'remove', path: '/spec/list/3' }], 'Invalid'],
    ['a body that is not a list', { op: 'add' }, 'BadRequest'],
    ['an unknown op', [{ op: 'frobnicate', path: '/spec' }], 'BadRequest'],
  ])('json patch rejects %s', (_what, operations, reason) => {
    // Act
    let caught: unknown;
    try {
      jsonPatch(doc, operations);
    } catch (err) {
      caught = err;
    }
    // Assess
    expect(caught).toBeInstanceOf(KubeApiError);
    expect((caught as KubeApiError).reason).toBe(reason);
  });
});

describe('the object store', () => {
  const ref = { group: 'cluster.alauda.io', version: 'v1alpha1', resource: 'moduleinfos' };
  const mi = (spec: unknown, resourceVersion?: string): KubeObject => ({
    apiVersion: 'cluster.alauda.io/v1alpha1',
    kind: 'ModuleInfo',
    metadata: { name: 'm', ...(resourceVersion === undefined ? {} : { resourceVersion }) },
    spec,
  });

  it('bumps generation on spec changes only and resourceVersion on every write', () => {
    // Prepare
    const store = new ObjectStore();
    const created = store.create(ref, mi({ a: 1 }));
    // Act
    const sameSpec = store.replace(ref, {
      ...mi({ a: 1 }),
      metadata: { ...created.metadata, labels: { x: 'y' } },
    });
    const newSpec = store.replace(ref, mi({ a: 2 }));
    // Assess
    expect([
      created.metadata.generation,
      sameSpec.metadata.generation,
      newSpec.metadata.generation,
    ]).toEqual([1, 1, 2]);
    expect([created, sameSpec, newSpec].map((o) => Number(o.metadata.resourceVersion))).toEqual([
      1, 2, 3,
    ]);
    expect(newSpec.metadata.uid).toBe(created.metadata.uid);
  });

  it('refuses a stale resourceVersion with Conflict and a duplicate create with AlreadyExists', () => {
    // Prepare
    const store = new ObjectStore();
    const created = store.create(ref, mi({}));
    store.replace(ref, mi({ b: 1 }));
    // Act
    const stale = () => store.replace(ref, mi({ c: 1 }, created.metadata.resourceVersion));
    const duplicate = () => store.create(ref, mi({}));
    // Assess
    expect(stale).toThrow(
      'Operation cannot be fulfilled on moduleinfos.cluster.alauda.io "m": the object has been modified',
    );
    expect(duplicate).toThrow('moduleinfos.cluster.alauda.io "m" already exists');
  });
});
