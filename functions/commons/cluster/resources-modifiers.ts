/**
 * Resource modifiers in the format Velero and the ACK backup center read
 * (docs/resources.md): `version: v1` and `resourceModifierRules`, each with
 * `conditions` (groupResource, resourceNameRegex, namespaces, labelSelector)
 * and `patches` (JSON Patch: add, remove, replace, copy, move, test) and/or
 * `mergePatches` (JSON Merge Patch). Parsed and checked whole before a
 * restore writes anything; every problem names its rule, its field and what
 * to write instead.
 */
import { parse } from 'yaml';
import { z } from 'zod';
import { InputError } from '../errors.ts';
import {
  applyJsonPatch,
  applyMergePatch,
  type Json,
  JsonPatchError,
  type JsonPatchOp,
  PATCH_OPERATIONS,
  pointerTokens,
} from './json-patch.ts';
import type { KubeObject } from './resources-api.ts';

const labelSelectorSchema = z.strictObject({
  matchLabels: z.record(z.string(), z.string()).optional(),
  matchExpressions: z
    .array(
      z.strictObject({
        key: z.string().min(1),
        operator: z.enum(['In', 'NotIn', 'Exists', 'DoesNotExist']),
        values: z.array(z.string()).optional(),
      }),
    )
    .optional(),
});
export type LabelSelector = z.infer<typeof labelSelectorSchema>;

const patchSchema = z.strictObject({
  operation: z.enum(PATCH_OPERATIONS, {
    message: `an operation: one of ${PATCH_OPERATIONS.join(', ')}`,
  }),
  path: z.string({ message: 'a JSON pointer such as /spec/replicas' }),
  from: z.string().optional(),
  /** Any YAML value; a string holding JSON (`"3"`, `"{...}"`) is that JSON, as Velero reads it. */
  value: z.unknown().optional(),
});

const ruleSchema = z.strictObject({
  conditions: z.strictObject(
    {
      groupResource: z
        .string({ message: 'the type the rule applies to, e.g. statefulsets.apps or pods' })
        .min(1),
      resourceNameRegex: z.string().optional(),
      namespaces: z.array(z.string()).optional(),
      labelSelector: labelSelectorSchema.optional(),
    },
    { message: 'a mapping with at least groupResource (e.g. groupResource: statefulsets.apps)' },
  ),
  patches: z.array(patchSchema).optional(),
  mergePatches: z.array(z.strictObject({ patchData: z.string() })).optional(),
});

/** The document around the rules; each rule is checked on its own, so every rule's problems are listed. */
const modifiersSchema = z.strictObject({
  version: z.literal('v1', { message: 'must be v1 (the only version of this format)' }),
  resourceModifierRules: z.array(z.unknown()).min(1, 'needs at least one rule'),
});

/** One checked rule, ready to match and apply. */
export interface ModifierRule {
  readonly index: number;
  readonly groupResource: string;
  readonly nameRegex: RegExp | undefined;
  readonly namespaces: readonly string[];
  readonly labelSelector: LabelSelector | undefined;
  readonly patches: readonly JsonPatchOp[];
  readonly mergePatches: readonly Json[];
}

const field = (value: unknown, name: string): unknown =>
  typeof value === 'object' && value !== null ? Reflect.get(value, name) : undefined;

/** Where each field lives, for the advice on a field in the wrong place. */
const FIELDS_AT: Readonly<Record<string, string>> = {
  rule: 'a rule has conditions, patches and mergePatches; a patch (operation, path, from, value) is a list item under patches, its fields indented together under its "- operation:"',
  conditions: 'conditions are groupResource, resourceNameRegex, namespaces and labelSelector',
  patch: 'a patch has operation, path, from (copy and move) and value (add, replace, test)',
  root: 'the document has version and resourceModifierRules',
  other: 'see docs/resources.md for the format',
};

/** `resourceModifierRules[1].patches[0].path` from a zod path. */
function fieldName(path: readonly PropertyKey[]): string {
  return path
    .map((key, i) => (typeof key === 'number' ? `[${key}]` : `${i === 0 ? '' : '.'}${String(key)}`))
    .join('');
}

function levelOf(path: readonly PropertyKey[]): keyof typeof FIELDS_AT {
  if (path.length === 0) return 'root';
  if (path.length === 2 && path[0] === 'resourceModifierRules') return 'rule';
  if (path[2] === 'conditions' && path.length === 3) return 'conditions';
  if (path[2] === 'patches' && path.length === 4) return 'patch';
  return 'other';
}

/** Values as Velero reads them: a string that is JSON (number, boolean, null, object, list) is that value. */
function patchValue(raw: unknown): Json {
  if (typeof raw !== 'string') return (raw ?? null) as Json;
  const text = raw.trim();
  if (/^(null|true|false|-?\d+(\.\d+)?([eE][-+]?\d+)?|\{.*\}|\[.*\])$/s.test(text)) {
    try {
      return JSON.parse(text) as Json;
    } catch {
      return raw;
    }
  }
  return raw;
}

/** Problems zod does not see: regexes, pointers, the fields each operation needs. */
function ruleProblems(rule: z.infer<typeof ruleSchema>, at: string): string[] {
  const problems: string[] = [];
  const { resourceNameRegex, labelSelector } = rule.conditions;
  if (resourceNameRegex !== undefined) {
    try {
      new RegExp(resourceNameRegex);
    } catch (err) {
      problems.push(
        `${at}.conditions.resourceNameRegex: "${resourceNameRegex}" is not a regular expression (${(err as Error).message}); write one such as ^web.*$`,
      );
    }
  }
  for (const [i, expression] of (labelSelector?.matchExpressions ?? []).entries()) {
    const needsValues = expression.operator === 'In' || expression.operator === 'NotIn';
    if (needsValues !== (expression.values !== undefined && expression.values.length > 0))
      problems.push(
        `${at}.conditions.labelSelector.matchExpressions[${i}].values: ${needsValues ? `${expression.operator} needs a non-empty list of values` : `${expression.operator} takes no values; remove them`}`,
      );
  }
  if ((rule.patches ?? []).length + (rule.mergePatches ?? []).length === 0)
    problems.push(`${at}: has no patches and no mergePatches; give the changes the rule makes`);
  for (const [i, patch] of (rule.patches ?? []).entries()) {
    const where = `${at}.patches[${i}]`;
    const pointers: Array<[string, string | undefined]> = [
      ['path', patch.path],
      ['from', patch.from],
    ];
    for (const [name, pointer] of pointers) {
      const tokens = pointer === undefined ? [] : pointerTokens(pointer);
      if (typeof tokens === 'string') problems.push(`${where}.${name}: ${tokens}`);
    }
    const needsFrom = patch.operation === 'copy' || patch.operation === 'move';
    if (needsFrom && patch.from === undefined)
      problems.push(
        `${where}.from: ${patch.operation} needs from, the pointer it takes the value from`,
      );
    if (!needsFrom && patch.from !== undefined)
      problems.push(`${where}.from: only copy and move take from; remove it`);
    const needsValue = ['add', 'replace', 'test'].includes(patch.operation);
    if (needsValue && patch.value === undefined)
      problems.push(`${where}.value: ${patch.operation} needs a value`);
    if (!needsValue && patch.value !== undefined)
      problems.push(`${where}.value: ${patch.operation} takes no value; remove it`);
  }
  for (const [i, merge] of (rule.mergePatches ?? []).entries()) {
    let data: unknown;
    try {
      data = parse(merge.patchData);
    } catch (err) {
      problems.push(
        `${at}.mergePatches[${i}].patchData: not YAML or JSON (${(err as Error).message.split('\n')[0]})`,
      );
      continue;
    }
    if (typeof data !== 'object' || data === null || Array.isArray(data))
      problems.push(
        `${at}.mergePatches[${i}].patchData: must be an object such as {"spec": {"replicas": 1}}`,
      );
  }
  return problems;
}

/**
 * Parses and checks resource modifiers from YAML text (a file, or the one
 * data key of a ConfigMap): every rule checked, every problem listed at once
 * with its field, before anything is written. `source` names where the text came from.
 */
export function parseResourceModifiers(text: string, source: string): ModifierRule[] {
  const what = `the resource modifiers in ${source} are not valid`;
  let document: unknown;
  try {
    document = parse(text);
  } catch (err) {
    const line = (err as { linePos?: Array<{ line: number }> }).linePos?.[0]?.line;
    throw new InputError(what, [
      `${source}${line === undefined ? '' : `, line ${line}`}: not YAML (${(err as Error).message.split('\n')[0]}); fix the indentation or quoting there`,
    ]);
  }
  const describe = (issues: readonly z.core.$ZodIssue[], prefix: PropertyKey[]) =>
    issues.map((issue) => {
      const path = [...prefix, ...issue.path];
      const field = fieldName(path) || '(document)';
      if (issue.code === 'unrecognized_keys')
        return `${field}: unknown field${issue.keys.length === 1 ? '' : 's'} ${issue.keys.map((k) => `"${k}"`).join(', ')}; ${FIELDS_AT[levelOf(path)]}`;
      return `${field}: ${issue.message}`;
    });
  const parsed = modifiersSchema.safeParse(document ?? {});
  const problems = parsed.success ? [] : describe(parsed.error.issues, []);
  const rules: Array<z.infer<typeof ruleSchema>> = [];
  const raw = parsed.success
    ? parsed.data.resourceModifierRules
    : field(document, 'resourceModifierRules');
  for (const [i, candidate] of (Array.isArray(raw) ? raw : []).entries()) {
    const rule = ruleSchema.safeParse(candidate);
    if (!rule.success) problems.push(...describe(rule.error.issues, ['resourceModifierRules', i]));
    else {
      problems.push(...ruleProblems(rule.data, `resourceModifierRules[${i}]`));
      rules.push(rule.data);
    }
  }
  if (problems.length > 0) throw new InputError(what, problems);
  return rules.map((rule, index) => ({
    index,
    groupResource: rule.conditions.groupResource,
    nameRegex:
      rule.conditions.resourceNameRegex === undefined
        ? undefined
        : new RegExp(rule.conditions.resourceNameRegex),
    namespaces: rule.conditions.namespaces ?? [],
    labelSelector: rule.conditions.labelSelector,
    patches: (rule.patches ?? []).map((p) => ({
      op: p.operation,
      path: p.path,
      ...(p.from === undefined ? {} : { from: p.from }),
      ...(p.value === undefined ? {} : { value: patchValue(p.value) }),
    })),
    mergePatches: (rule.mergePatches ?? []).map((m) => parse(m.patchData) as Json),
  }));
}

/** True when `labels` satisfy a Kubernetes label selector. */
export function selectorMatches(selector: LabelSelector, labels: Record<string, string>): boolean {
  const exact = Object.entries(selector.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
  return (
    exact &&
    (selector.matchExpressions ?? []).every(({ key, operator, values }) => {
      const has = Object.hasOwn(labels, key);
      if (operator === 'Exists') return has;
      if (operator === 'DoesNotExist') return !has;
      const inValues = has && (values ?? []).includes(labels[key] as string);
      return operator === 'In' ? inValues : !inValues;
    })
  );
}

/** The object a rule is judged on: its type, and its namespace in the snapshot (before any mapping). */
export interface ModifierSubject {
  readonly groupResource: string;
  readonly namespace: string | undefined;
  readonly name: string;
  readonly labels: Record<string, string>;
}

export function ruleMatches(rule: ModifierRule, subject: ModifierSubject): boolean {
  return (
    (rule.groupResource === '*' || rule.groupResource === subject.groupResource) &&
    (rule.namespaces.length === 0 ||
      (subject.namespace !== undefined && rule.namespaces.includes(subject.namespace))) &&
    (rule.nameRegex === undefined || rule.nameRegex.test(subject.name)) &&
    (rule.labelSelector === undefined || selectorMatches(rule.labelSelector, subject.labels))
  );
}

/** What the rules did to one object. */
export interface Modified {
  readonly object: KubeObject;
  /** Indexes of the rules whose patches were applied. */
  readonly applied: readonly number[];
  /** Rules whose `test` operation found another value: their patches were skipped, as Velero does. */
  readonly skipped: ReadonlyArray<{ readonly rule: number; readonly why: string }>;
}

/**
 * Applies every matching rule in order. A patch that cannot be applied (a
 * path the object lacks) is bad input naming the rule, the patch, the object
 * and the fix; a failed `test` skips its rule's patches.
 */
export function applyModifiers(
  rules: readonly ModifierRule[],
  object: KubeObject,
  subject: ModifierSubject,
): Modified {
  let current = object;
  const applied: number[] = [];
  const skipped: Array<{ rule: number; why: string }> = [];
  for (const rule of rules) {
    if (!ruleMatches(rule, subject)) continue;
    try {
      current = applyJsonPatch(current, rule.patches);
    } catch (err) {
      if (!(err instanceof JsonPatchError)) throw err;
      if (err.testFailed) {
        skipped.push({ rule: rule.index, why: err.message });
        continue;
      }
      const patch = rule.patches[err.index];
      throw new InputError('a resource modifier cannot be applied', [
        `resourceModifierRules[${rule.index}].patches[${err.index}] (${patch?.op} ${patch?.path}) on ${subject.groupResource} ${subject.namespace === undefined ? '' : `${subject.namespace}/`}${subject.name}: ${err.message}; narrow the rule's conditions to objects that have it, or put a test operation first`,
      ]);
    }
    for (const merge of rule.mergePatches) current = applyMergePatch(current, merge);
    applied.push(rule.index);
  }
  return { object: current, applied, skipped };
}
