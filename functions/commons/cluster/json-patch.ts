/**
 * JSON Patch (RFC 6902, applied by fast-json-patch) and JSON Merge Patch (RFC
 * 7386) over plain JSON values, for resource modifiers. A patch that cannot
 * be applied says which operation failed and why in a rule author's words,
 * never with the document's values (a Secret's may be among them).
 */
// The package is CommonJS whose exports Node's ESM loader cannot name: its default export.
import jsonPatch, { type Operation } from 'fast-json-patch';

const { applyPatch, JsonPatchError: LibraryPatchError } = jsonPatch;

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

/** Says what went wrong with operation `op` in a rule author's words; never the document's values. */
function explain(name: string, op: JsonPatchOp): string {
  switch (name) {
    case 'OPERATION_PATH_UNRESOLVABLE':
      return `"${op.path}" does not exist${op.op === 'remove' ? ', so it cannot be removed' : ''}`;
    case 'OPERATION_FROM_UNRESOLVABLE':
      return `"${op.from ?? ''}" does not exist`;
    case 'OPERATION_PATH_CANNOT_ADD':
      return `"${op.path}" does not exist: its parent is missing`;
    case 'OPERATION_PATH_ILLEGAL_ARRAY_INDEX':
    case 'OPERATION_VALUE_OUT_OF_BOUNDS':
      return `"${op.path}" names an item past the end of its list, or not a number`;
    case 'OPERATION_PATH_INVALID':
      return `"${op.path}" is not a JSON pointer`;
    case 'TEST_OPERATION_FAILED':
      // What was found is not repeated: it may be a Secret's value, and messages are printed.
      return `test of "${op.path}" did not find ${JSON.stringify(op.value ?? null)} there`;
    default:
      return `the ${op.op} of "${op.path}" cannot be applied (${name})`;
  }
}

/**
 * `doc` after every operation, in order (fast-json-patch, validating each
 * operation against the document); the input is not changed.
 */
export function applyJsonPatch<T>(doc: T, ops: readonly JsonPatchOp[]): T {
  for (const [index, op] of ops.entries()) {
    if (op.op === 'move' && op.path.startsWith(`${op.from ?? ''}/`))
      throw new JsonPatchError(index, `cannot move "${op.from ?? ''}" into itself ("${op.path}")`);
    if (op.path === '' && op.op !== 'test')
      throw new JsonPatchError(index, 'the path "" is the whole object; name a field in it');
  }
  try {
    return applyPatch(structuredClone(doc), ops as Operation[], true, true).newDocument;
  } catch (err) {
    if (!(err instanceof LibraryPatchError)) throw err;
    const index = err.index ?? 0;
    const op = ops[index] ?? { op: 'add', path: '' };
    throw new JsonPatchError(index, explain(err.name, op), err.name === 'TEST_OPERATION_FAILED');
  }
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
