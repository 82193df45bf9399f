/**
 * JSON Patch (RFC 6902) and JSON Merge Patch (RFC 7386) over plain JSON
 * values, for resource modifiers. Written here rather than taken from npm
 * (fast-json-patch, rfc6902): this checkout shares its node_modules with
 * others, and a modifier's failure must name the operation that failed and
 * why in words a rule's author can act on, which the six operations make
 * short to do.
 */

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

export const PATCH_OPERATIONS = ['add', 'remove', 'replace', 'copy', 'move', 'test'] as const;
export type PatchOperation = (typeof PATCH_OPERATIONS)[number];

export interface JsonPatchOp {
  readonly op: PatchOperation;
  readonly path: string;
  readonly from?: string;
  readonly value?: Json;
}

/** A patch that cannot be applied: `index` is the operation's place in its list. */
export class JsonPatchError extends Error {
  override readonly name = 'JsonPatchError';
  readonly index: number;
  /** A `test` operation found another value: by the rules, the patch is skipped, not an error. */
  readonly testFailed: boolean;

  constructor(index: number, message: string, testFailed = false) {
    super(message);
    this.index = index;
    this.testFailed = testFailed;
  }
}

const isObject = (value: unknown): value is JsonObject =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** A JSON pointer's reference tokens, or why it is not one. */
export function pointerTokens(pointer: string): string[] | string {
  if (pointer === '') return [];
  if (!pointer.startsWith('/')) return `"${pointer}" is not a JSON pointer: it must start with "/"`;
  const tokens = pointer.slice(1).split('/');
  if (tokens.some((t) => /~[^01]|~$/.test(t)))
    return `"${pointer}" has a "~" not followed by 0 or 1 (write ~0 for "~" and ~1 for "/")`;
  return tokens.map((t) => t.replaceAll('~1', '/').replaceAll('~0', '~'));
}

interface Slot {
  /** The object or array holding the target. */
  readonly parent: JsonObject | Json[];
  readonly key: string;
}

/** Where `pointer` points in `doc`: its parent and the last token; throws naming what is missing. */
function slotOf(doc: Json, pointer: string, index: number): Slot {
  const tokens = pointerTokens(pointer);
  if (typeof tokens === 'string') throw new JsonPatchError(index, tokens);
  if (tokens.length === 0)
    throw new JsonPatchError(index, 'the path "" is the whole object; name a field in it');
  let node: Json = doc;
  for (const [depth, token] of tokens.slice(0, -1).entries()) {
    const next: Json | undefined = Array.isArray(node)
      ? node[Number(token)]
      : isObject(node)
        ? node[token]
        : undefined;
    if (next === undefined || (Array.isArray(node) && !/^(0|[1-9]\d*)$/.test(token)))
      throw new JsonPatchError(
        index,
        `"${pointer}" does not exist: the object has no "/${tokens.slice(0, depth + 1).join('/')}"`,
      );
    node = next;
  }
  if (!Array.isArray(node) && !isObject(node))
    throw new JsonPatchError(
      index,
      `"${pointer}" goes through a value that is not an object or a list`,
    );
  return { parent: node, key: tokens[tokens.length - 1] as string };
}

function listIndex(
  slot: Slot & { parent: Json[] },
  pointer: string,
  index: number,
  adding: boolean,
): number {
  if (adding && slot.key === '-') return slot.parent.length;
  const at = /^(0|[1-9]\d*)$/.test(slot.key) ? Number(slot.key) : Number.NaN;
  const limit = adding ? slot.parent.length : slot.parent.length - 1;
  if (Number.isNaN(at) || at > limit)
    throw new JsonPatchError(
      index,
      `"${pointer}" names item ${slot.key} of a list of ${slot.parent.length}`,
    );
  return at;
}

function read(doc: Json, pointer: string, index: number): Json {
  if (pointer === '') return doc;
  const slot = slotOf(doc, pointer, index);
  if (Array.isArray(slot.parent))
    return slot.parent[listIndex({ ...slot, parent: slot.parent }, pointer, index, false)] as Json;
  if (!(slot.key in slot.parent)) throw new JsonPatchError(index, `"${pointer}" does not exist`);
  return slot.parent[slot.key] as Json;
}

function add(doc: Json, pointer: string, value: Json, index: number): void {
  const slot = slotOf(doc, pointer, index);
  if (Array.isArray(slot.parent))
    slot.parent.splice(listIndex({ ...slot, parent: slot.parent }, pointer, index, true), 0, value);
  else slot.parent[slot.key] = value;
}

function remove(doc: Json, pointer: string, index: number): void {
  const slot = slotOf(doc, pointer, index);
  if (Array.isArray(slot.parent))
    slot.parent.splice(listIndex({ ...slot, parent: slot.parent }, pointer, index, false), 1);
  else if (slot.key in slot.parent) delete slot.parent[slot.key];
  else throw new JsonPatchError(index, `"${pointer}" does not exist, so it cannot be removed`);
}

const same = (a: Json, b: Json): boolean => JSON.stringify(sorted(a)) === JSON.stringify(sorted(b));
const sorted = (value: Json): Json =>
  Array.isArray(value)
    ? value.map(sorted)
    : isObject(value)
      ? Object.fromEntries(
          Object.keys(value)
            .sort()
            .map((k) => [k, sorted(value[k] as Json)]),
        )
      : value;

/** `doc` after every operation, in order; the input is not changed. */
export function applyJsonPatch<T>(doc: T, ops: readonly JsonPatchOp[]): T {
  const result = structuredClone(doc) as Json;
  for (const [index, op] of ops.entries()) {
    const value = structuredClone(op.value ?? null);
    switch (op.op) {
      case 'add':
        add(result, op.path, value, index);
        break;
      case 'remove':
        remove(result, op.path, index);
        break;
      case 'replace':
        read(result, op.path, index);
        remove(result, op.path, index);
        add(result, op.path, value, index);
        break;
      case 'copy':
        add(result, op.path, structuredClone(read(result, op.from ?? '', index)), index);
        break;
      case 'move': {
        const from = op.from ?? '';
        if (op.path.startsWith(`${from}/`))
          throw new JsonPatchError(index, `cannot move "${from}" into itself ("${op.path}")`);
        const moved = read(result, from, index);
        remove(result, from, index);
        add(result, op.path, moved, index);
        break;
      }
      case 'test': {
        const found = read(result, op.path, index);
        if (!same(found, value))
          throw new JsonPatchError(
            index,
            // What was found is not repeated: it may be a Secret's value, and messages are printed.
            `test of "${op.path}" did not find ${JSON.stringify(value)} there`,
            true,
          );
        break;
      }
    }
  }
  return result as T;
}

/** RFC 7386: maps merge key by key, `null` removes, anything else replaces. */
export function applyMergePatch<T>(doc: T, patch: Json): T {
  const merge = (target: Json | undefined, change: Json): Json => {
    if (!isObject(change)) return structuredClone(change);
    const out: JsonObject = isObject(target) ? { ...target } : {};
    for (const [key, value] of Object.entries(change)) {
      if (value === null) delete out[key];
      else out[key] = merge(out[key], value);
    }
    return out;
  };
  return merge(doc as Json, patch) as T;
}
