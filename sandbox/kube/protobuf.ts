/**
 * kubectl's imperative commands (`create secret generic`, `create configmap`,
 * `create namespace`) send built-in objects as Kubernetes protobuf and do not
 * fall back to JSON on 415. This decodes the envelope and the few kinds those
 * commands create; the field numbers are those of k8s.io/api's generated.proto.
 */
import { KubeApiError, type KubeObject, type ObjectMeta } from './store.ts';

export const PROTOBUF_TYPE = 'application/vnd.kubernetes.protobuf';
const MAGIC = Buffer.from([0x6b, 0x38, 0x73, 0x00]); // "k8s\0"

interface Field {
  readonly number: number;
  readonly bytes?: Buffer;
  readonly varint?: bigint;
}

/** Splits one message into its fields (varint and length-delimited; fixed widths are skipped). */
function fields(buffer: Buffer): Field[] {
  const out: Field[] = [];
  let offset = 0;
  const varint = (): bigint => {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      const byte = buffer[offset++];
      if (byte === undefined) throw new KubeApiError('BadRequest', 'truncated protobuf body');
      result |= BigInt(byte & 0x7f) << shift;
      if (byte < 0x80) return result;
      shift += 7n;
    }
  };
  while (offset < buffer.length) {
    const key = varint();
    const number = Number(key >> 3n);
    const wire = Number(key & 7n);
    if (wire === 0) out.push({ number, varint: varint() });
    else if (wire === 2) {
      const length = Number(varint());
      out.push({ number, bytes: buffer.subarray(offset, offset + length) });
      offset += length;
    } else if (wire === 1) offset += 8;
    else if (wire === 5) offset += 4;
    else throw new KubeApiError('BadRequest', `unsupported protobuf wire type ${wire}`);
  }
  return out;
}

const text = (field: Field | undefined) => field?.bytes?.toString('utf8');
const first = (all: Field[], number: number) => all.find((field) => field.number === number);

/** A `map<string, string>` (or, with `base64`, `map<string, bytes>` as JSON shows it). */
function map(all: Field[], number: number, base64 = false): Record<string, string> | undefined {
  const entries = all.filter((field) => field.number === number && field.bytes !== undefined);
  if (entries.length === 0) return undefined;
  const result: Record<string, string> = {};
  for (const entry of entries) {
    const parts = fields(entry.bytes as Buffer);
    const value = first(parts, 2)?.bytes ?? Buffer.alloc(0);
    result[text(first(parts, 1)) ?? ''] = base64
      ? value.toString('base64')
      : value.toString('utf8');
  }
  return result;
}

function objectMeta(buffer: Buffer | undefined): ObjectMeta {
  const all = fields(buffer ?? Buffer.alloc(0));
  const name = text(first(all, 1)) ?? '';
  const generateName = text(first(all, 2));
  const namespace = text(first(all, 3));
  const labels = map(all, 11);
  const annotations = map(all, 12);
  return {
    name,
    ...(generateName === undefined || generateName === '' ? {} : { generateName }),
    ...(namespace === undefined || namespace === '' ? {} : { namespace }),
    ...(labels === undefined ? {} : { labels }),
    ...(annotations === undefined ? {} : { annotations }),
  };
}

/** Decodes a `k8s\0`-prefixed body into the JSON form of the object. */
export function decodeProtobuf(body: Buffer): KubeObject {
  if (!body.subarray(0, 4).equals(MAGIC)) {
    throw new KubeApiError(
      'BadRequest',
      'protobuf body does not start with the k8s envelope magic',
    );
  }
  const envelope = fields(body.subarray(4));
  const typeMeta = fields(first(envelope, 1)?.bytes ?? Buffer.alloc(0));
  const apiVersion = text(first(typeMeta, 1)) ?? '';
  const kind = text(first(typeMeta, 2)) ?? '';
  const raw = fields(first(envelope, 2)?.bytes ?? Buffer.alloc(0));
  const metadata = objectMeta(first(raw, 1)?.bytes);
  const optional = (key: string, value: unknown) => (value === undefined ? {} : { [key]: value });
  switch (`${apiVersion}/${kind}`) {
    case 'v1/Secret':
      return {
        apiVersion,
        kind,
        metadata,
        ...optional('data', map(raw, 2, true)),
        ...optional('type', text(first(raw, 3))),
        ...optional('stringData', map(raw, 4)),
      };
    case 'v1/ConfigMap':
      return {
        apiVersion,
        kind,
        metadata,
        ...optional('data', map(raw, 2)),
        ...optional('binaryData', map(raw, 3, true)),
      };
    case 'v1/Namespace':
      return { apiVersion, kind, metadata };
    default:
      throw new KubeApiError(
        'UnsupportedMediaType',
        `the fake apiserver decodes protobuf only for Secret, ConfigMap and Namespace, not ${apiVersion}/${kind}; send application/json (e.g. kubectl create -f with a manifest)`,
      );
  }
}
