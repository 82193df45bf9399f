/**
 * The three patch flavours kubectl and client-node send: JSON merge patch
 * (RFC 7386), JSON patch (RFC 6902) and a strategic merge patch close enough
 * for the built-in types the sandbox stores.
 */
import { KubeApiError } from './store.ts';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

const isObject = (value: unknown): value is JsonObject =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** RFC 7386: objects merge recursively, `null` deletes, everything else replaces. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return patch;
  const result: JsonObject = isObject(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else result[key] = mergePatch(result[key], value) as Json;
  }
  return result;
}

const namedItems = (value: unknown): value is JsonObject[] =>
  Array.isArray(value) && value.every((item) => isObject(item) && typeof item['name'] === 'string');

/**
 * Strategic merge patch without the OpenAPI patch metadata: `$`-directives are
 * dropped and lists whose items all carry a `name` (containers, env, ports,
 * volumes) merge by that name; any other list is replaced, like a merge patch.
 */
export function strategicMergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return patch;
  const result: JsonObject = isObject(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (key.startsWith('$')) continue;
    const current = result[key];
    if (value === null) delete result[key];
    else if (namedItems(value) && namedItems(current)) result[key] = mergeNamed(current, value);
    else result[key] = strategicMergePatch(current, value) as Json;
  }
  return result;
}

function mergeNamed(current: JsonObject[], patch: JsonObject[]): JsonObject[] {
  const merged = [...current];
  for (const item of patch) {
    const index = merged.findIndex((existing) => existing['name'] === item['name']);
    if (item['$patch'] === 'delete') {
      if (index >= 0) merged.splice(index, 1);
    } else if (index >= 0) {
      merged[index] = strategicMergePatch(merged[index], item) as JsonObject;
    } else {
      merged.push(strategicMergePatch({}, item) as JsonObject);
    }
  }
  return merged;
}

export interface JsonPatchOperation {
  op: 'add' | 'remove' | 'replace' | 'test' | 'move' | 'copy';
  path: string;
  value?: unknown;
  from?: string;
}

const invalid = (message: string): KubeApiError => new KubeApiError('Invalid', message);
const badRequest = (message: string): KubeApiError => new KubeApiError('BadRequest', message);

/** Splits a JSON pointer into unescaped tokens (`~1` is `/`, `~0` is `~`). */
export function parsePointer(pointer: string): string[] {
  if (pointer === '') return [];
  if (!pointer.startsWith('/'))
    throw badRequest(`json patch path "${pointer}" must start with "/"`);
  return pointer
    .slice(1)
    .split('/')
    .map((token) => token.replaceAll('~1', '/').replaceAll('~0', '~'));
}

function arrayIndex(token: string, length: number, forInsert: boolean): number {
  if (forInsert && token === '-') return length;
  if (!/^(0|[1-9]\d*)$/.test(token)) throw invalid(`json patch: "${token}" is not an array index`);
  const index = Number(token);
  if (index > length || (!forInsert && index === length)) {
    throw invalid(`json patch: array index ${index} out of bounds`);
  }
  return index;
}

/** The container the last token of `tokens` lives in, or an error naming the missing step. */
function parentOf(document: Json, tokens: string[], pointer: string): Json {
  let node = document;
  for (const token of tokens.slice(0, -1)) {
    if (Array.isArray(node)) node = node[arrayIndex(token, node.length, false)] as Json;
    else if (isObject(node) && token in node) node = node[token] as Json;
    else throw invalid(`json patch: path "${pointer}" does not exist`);
  }
  return node;
}

function read(document: Json, pointer: string): Json {
  const tokens = parsePointer(pointer);
  if (tokens.length === 0) return document;
  const parent = parentOf(document, tokens, pointer);
  const last = tokens[tokens.length - 1] as string;
  if (Array.isArray(parent)) return parent[arrayIndex(last, parent.length, false)] as Json;
  if (isObject(parent) && last in parent) return parent[last] as Json;
  throw invalid(`json patch: path "${pointer}" does not exist`);
}

function write(
  document: Json,
  pointer: string,
  value: Json,
  mode: 'add' | 'replace' | 'remove',
): Json {
  const tokens = parsePointer(pointer);
  if (tokens.length === 0) {
    if (mode === 'remove') throw invalid('json patch: cannot remove the whole document');
    return value;
  }
  const parent = parentOf(document, tokens, pointer);
  const last = tokens[tokens.length - 1] as string;
  if (Array.isArray(parent)) {
    const index = arrayIndex(last, parent.length, mode === 'add');
    if (mode === 'add') parent.splice(index, 0, value);
    else if (mode === 'replace') parent[index] = value;
    else parent.splice(index, 1);
  } else if (isObject(parent)) {
    if (mode !== 'add' && !(last in parent))
      throw invalid(`json patch: path "${pointer}" does not exist`);
    if (mode === 'remove') delete parent[last];
    else parent[last] = value;
  } else {
    throw invalid(`json patch: path "${pointer}" does not point into an object or array`);
  }
  return document;
}

/** Applies RFC 6902 operations to a copy of `document`. */
export function jsonPatch(document: unknown, operations: unknown): unknown {
  if (!Array.isArray(operations))
    throw badRequest('json patch body must be a JSON array of operations');
  let result = structuredClone(document) as Json;
  for (const raw of operations as unknown[]) {
    if (!isObject(raw) || typeof raw['op'] !== 'string' || typeof raw['path'] !== 'string') {
      throw badRequest(`json patch operation ${JSON.stringify(raw)} needs "op" and "path"`);
    }
    const { op, path } = raw;
    const value = structuredClone(raw['value'] ?? null);
    const from = typeof raw['from'] === 'string' ? raw['from'] : undefined;
    switch (op) {
      case 'add':
      case 'replace':
        if (!('value' in raw)) throw badRequest(`json patch "${op}" of "${path}" needs a value`);
        result = write(result, path, value, op);
        break;
      case 'remove':
        result = write(result, path, null, 'remove');
        break;
      case 'test':
        if (JSON.stringify(read(result, path)) !== JSON.stringify(raw['value'])) {
          throw invalid(`json patch: test operation on "${path}" failed`);
        }
        break;
      case 'move':
      case 'copy': {
        if (from === undefined) throw badRequest(`json patch "${op}" needs "from"`);
        const moved = structuredClone(read(result, from));
        if (op === 'move') result = write(result, from, null, 'remove');
        result = write(result, path, moved, 'add');
        break;
      }
      default:
        throw badRequest(`json patch: unknown operation "${op}"`);
    }
  }
  return result;
}
