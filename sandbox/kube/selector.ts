/** Label and field selectors as the apiserver parses them from list queries. */
import { KubeApiError, type KubeObject } from './store.ts';

export type Matcher = (object: KubeObject) => boolean;

/** Splits on commas outside parentheses: `a in (x,y),b` is two requirements. */
function requirements(selector: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let current = '';
  for (const char of selector) {
    if (char === '(') depth++;
    if (char === ')') depth--;
    if (char === ',' && depth === 0) {
      parts.push(current.trim());
      current = '';
    } else {
      current += char;
    }
  }
  parts.push(current.trim());
  return parts.filter((part) => part !== '');
}

const LABEL_KEY = /^([a-z0-9.-]+\/)?[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/;

function checkKey(key: string, selector: string): string {
  if (!LABEL_KEY.test(key)) {
    throw new KubeApiError(
      'BadRequest',
      `unable to parse requirement: invalid label key "${key}" in "${selector}"`,
    );
  }
  return key;
}

/** `a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x,y)`, comma-joined (all must hold). */
export function labelSelector(selector: string | null): Matcher {
  if (selector === null || selector.trim() === '') return () => true;
  const tests = requirements(selector).map(
    (requirement): ((labels: Record<string, string>) => boolean) => {
      const set = /^(\S+)\s+(in|notin)\s+\((.*)\)$/.exec(requirement);
      if (set !== null) {
        const key = checkKey(set[1] as string, selector);
        const values = (set[3] as string).split(',').map((value) => value.trim());
        return set[2] === 'in'
          ? (labels) => labels[key] !== undefined && values.includes(labels[key])
          : (labels) => labels[key] === undefined || !values.includes(labels[key]);
      }
      const equality = /^([^!=\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(requirement);
      if (equality !== null) {
        const key = checkKey(equality[1] as string, selector);
        const value = equality[3] as string;
        return equality[2] === '!='
          ? (labels) => labels[key] !== value
          : (labels) => labels[key] === value;
      }
      if (requirement.startsWith('!')) {
        const key = checkKey(requirement.slice(1).trim(), selector);
        return (labels) => !(key in labels);
      }
      const key = checkKey(requirement, selector);
      return (labels) => key in labels;
    },
  );
  return (object) => tests.every((test) => test(object.metadata.labels ?? {}));
}

function fieldValue(object: KubeObject, path: string): string | undefined {
  let node: unknown = object;
  for (const step of path.split('.')) {
    if (typeof node !== 'object' || node === null) return undefined;
    node = (node as Record<string, unknown>)[step];
  }
  return node === undefined || node === null ? undefined : String(node);
}

/** `metadata.name=x`, `metadata.namespace!=y`, `status.phase=Running`: dotted paths, equality only. */
export function fieldSelector(selector: string | null): Matcher {
  if (selector === null || selector.trim() === '') return () => true;
  const tests = requirements(selector).map((requirement): Matcher => {
    const match = /^([A-Za-z0-9.]+)\s*(==|=|!=)\s*(.*)$/.exec(requirement);
    if (match === null) {
      throw new KubeApiError(
        'BadRequest',
        `invalid field selector "${selector}": expected field=value`,
      );
    }
    const [, path, operator, value] = match as unknown as [string, string, string, string];
    return operator === '!='
      ? (object) => (fieldValue(object, path) ?? '') !== value
      : (object) => (fieldValue(object, path) ?? '') === value;
  });
  return (object) => tests.every((test) => test(object));
}
