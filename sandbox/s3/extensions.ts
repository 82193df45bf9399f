/**
 * What the sandbox adds around fauxqs: the two multipart listing calls Docker
 * Distribution needs to push, the `&#34;` decoding its CompleteMultipartUpload
 * bodies need, a per-operation request counter and fault injection.
 *
 * fauxqs exposes its store but not these calls; they are written here because
 * no other emulator that runs on this machine lists deep prefixes correctly
 * (see FACTS.md), and the additions are small.
 */
import { randomUUID } from 'node:crypto';

/** The parts of a fauxqs multipart upload this module reads (its store keeps them in a private map). */
interface UploadView {
  readonly uploadId: string;
  readonly bucket: string;
  readonly key: string;
  readonly initiated: Date;
  readonly parts: Map<
    number,
    { partNumber: number; body: Buffer; etag: string; lastModified: Date }
  >;
}

/** The minimal request/reply surface the hooks use, so this file does not depend on Fastify's types. */
export interface SandboxRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: Record<string, string | string[] | undefined>;
  body?: unknown;
}

export interface SandboxReply {
  status(code: number): SandboxReply;
  header(name: string, value: string): SandboxReply;
  send(payload?: string | Buffer): SandboxReply;
}

/** Operation names as AWS spells them, so counters read like CloudTrail. */
export function operationOf(request: SandboxRequest): string {
  const url = new URL(request.url, 'http://sandbox');
  const query = url.searchParams;
  const segments = url.pathname.split('/').filter((part) => part !== '');
  const hasKey = segments.length > 1;
  const copySource = request.headers['x-amz-copy-source'] !== undefined;
  const target = request.headers['x-amz-target'];
  if (typeof target === 'string') return target.split('.').pop() ?? target;
  if (url.pathname.startsWith('/_sandbox') || url.pathname === '/health') return 'Sandbox';
  switch (request.method) {
    case 'GET':
      if (segments.length === 0) return 'ListBuckets';
      if (!hasKey) {
        if (query.has('uploads')) return 'ListMultipartUploads';
        if (query.has('object-lock')) return 'GetObjectLockConfiguration';
        return query.get('list-type') === '2' ? 'ListObjectsV2' : 'ListObjects';
      }
      if (query.has('uploadId')) return 'ListParts';
      return query.has('attributes') ? 'GetObjectAttributes' : 'GetObject';
    case 'HEAD':
      return hasKey ? 'HeadObject' : 'HeadBucket';
    case 'PUT':
      if (!hasKey) return 'CreateBucket';
      if (query.has('partNumber')) return copySource ? 'UploadPartCopy' : 'UploadPart';
      return copySource ? 'CopyObject' : 'PutObject';
    case 'POST':
      if (!hasKey) return 'DeleteObjects';
      if (query.has('uploads')) return 'CreateMultipartUpload';
      if (query.has('uploadId')) return 'CompleteMultipartUpload';
      return 'PostObject';
    case 'DELETE':
      if (!hasKey) return 'DeleteBucket';
      return query.has('uploadId') ? 'AbortMultipartUpload' : 'DeleteObject';
    default:
      return request.method;
  }
}

/** Bucket and key of a path-style request. */
export function bucketAndKey(request: SandboxRequest): { bucket: string; key: string } {
  const { pathname } = new URL(request.url, 'http://sandbox');
  const rest = pathname.slice(1);
  const slash = rest.indexOf('/');
  if (slash === -1) return { bucket: decodeURIComponent(rest), key: '' };
  return {
    bucket: decodeURIComponent(rest.slice(0, slash)),
    key: decodeURIComponent(rest.slice(slash + 1)),
  };
}

/** The source key of a CopyObject / UploadPartCopy request, if it is one. */
export function copySourceKeyOf(request: SandboxRequest): string | undefined {
  const header = request.headers['x-amz-copy-source'];
  if (typeof header !== 'string') return undefined;
  const decoded = decodeURIComponent(header.split('?')[0] ?? '').replace(/^\//, '');
  const slash = decoded.indexOf('/');
  return slash === -1 ? undefined : decoded.slice(slash + 1);
}

/** A rule that makes the next `count` matching requests fail with an S3 error. */
export interface FaultRule {
  readonly operation: string;
  readonly status: number;
  readonly code: string;
  /** How many matching requests fail; afterwards the rule is spent. */
  readonly count: number;
  readonly bucket?: string;
  readonly keyPrefix?: string;
  /**
   * A listing matches only when it starts after a key at or past this one
   * (its `start-after` sorts at or after it): the listings of a shard that
   * begins there, not the planner's.
   */
  readonly listingFrom?: string;
  /**
   * A listing matches only when its `delimiter` is this one: a registry link
   * shard's passes roll up `/_layers/` or `/_manifests/`; the planner's
   * counting listings have no delimiter.
   */
  readonly listingDelimiter?: string;
  /** Close the connection without an answer instead of sending an error (a connection reset). */
  readonly reset?: boolean;
}

/** Per-operation request counts and fault rules, shared by the hooks. */
export class RequestLedger {
  readonly #counts = new Map<string, number>();
  #rules: Array<FaultRule & { remaining: number }> = [];

  count(operation: string): void {
    if (operation === 'Sandbox') return;
    this.#counts.set(operation, (this.#counts.get(operation) ?? 0) + 1);
  }

  counters(): Record<string, number> {
    return Object.fromEntries([...this.#counts].sort(([a], [b]) => a.localeCompare(b)));
  }

  resetCounters(): void {
    this.#counts.clear();
  }

  addFault(rule: FaultRule): void {
    this.#rules.push({ ...rule, remaining: rule.count });
  }

  clearFaults(): void {
    this.#rules = [];
  }

  /**
   * The rule a request trips, consuming one of its uses, if any. A copy matches
   * `keyPrefix` by its target key or by its source key (`copySourceKey`); a
   * listing matches `listingFrom` by its `start-after` and `listingDelimiter`
   * by its `delimiter`.
   */
  trip(
    operation: string,
    bucket: string,
    key: string,
    copySourceKey?: string,
    listing: { readonly startAfter?: string; readonly delimiter?: string } = {},
  ): FaultRule | undefined {
    const { startAfter, delimiter } = listing;
    const keyMatches = (prefix: string) =>
      key.startsWith(prefix) || (copySourceKey?.startsWith(prefix) ?? false);
    const rule = this.#rules.find(
      (candidate) =>
        candidate.remaining > 0 &&
        candidate.operation === operation &&
        (candidate.bucket === undefined || candidate.bucket === bucket) &&
        (candidate.keyPrefix === undefined || keyMatches(candidate.keyPrefix)) &&
        (candidate.listingFrom === undefined ||
          (startAfter !== undefined && startAfter >= candidate.listingFrom)) &&
        (candidate.listingDelimiter === undefined || candidate.listingDelimiter === delimiter),
    );
    if (rule !== undefined) rule.remaining -= 1;
    return rule;
  }
}

const xmlEscapes: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&apos;',
};
const XML_SPECIAL = /[&<>"']/;

/** Escapes the five XML special characters (most keys have none: no replace then). */
export const escapeXml = (text: string): string =>
  XML_SPECIAL.test(text) ? text.replace(/[&<>"']/g, (char) => xmlEscapes[char] ?? char) : text;

export function errorXml(code: string, message: string): string {
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<Error>',
    `  <Code>${escapeXml(code)}</Code>`,
    `  <Message>${escapeXml(message)}</Message>`,
    `  <RequestId>${randomUUID().replaceAll('-', '').slice(0, 16).toUpperCase()}</RequestId>`,
    '</Error>',
  ].join('\n');
}

function uploadsOf(store: object): Map<string, UploadView> {
  const uploads: unknown = Reflect.get(store, 'multipartUploads');
  if (!(uploads instanceof Map)) {
    throw new Error(
      'fauxqs S3Store no longer keeps multipartUploads in a Map: re-check sandbox/s3/extensions.ts against the pinned version',
    );
  }
  return uploads as Map<string, UploadView>;
}

/** ListMultipartUploads: the uploads in flight in a bucket, by key then initiation time. */
export function listMultipartUploads(
  store: object,
  bucket: string,
  query: URLSearchParams,
): string {
  const prefix = query.get('prefix') ?? '';
  const keyMarker = query.get('key-marker') ?? '';
  const maxUploads = Math.min(Number(query.get('max-uploads') ?? 1000), 1000);
  const matching = [...uploadsOf(store).values()]
    .filter(
      (upload) =>
        upload.bucket === bucket && upload.key.startsWith(prefix) && upload.key > keyMarker,
    )
    .sort((a, b) => a.key.localeCompare(b.key) || a.initiated.getTime() - b.initiated.getTime());
  const page = matching.slice(0, maxUploads);
  const truncated = matching.length > page.length;
  const last = page.at(-1);
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
    `  <Bucket>${escapeXml(bucket)}</Bucket>`,
    `  <KeyMarker>${escapeXml(keyMarker)}</KeyMarker>`,
    '  <UploadIdMarker></UploadIdMarker>',
    `  <NextKeyMarker>${truncated && last !== undefined ? escapeXml(last.key) : ''}</NextKeyMarker>`,
    `  <NextUploadIdMarker>${truncated && last !== undefined ? escapeXml(last.uploadId) : ''}</NextUploadIdMarker>`,
    `  <Prefix>${escapeXml(prefix)}</Prefix>`,
    `  <MaxUploads>${maxUploads}</MaxUploads>`,
    `  <IsTruncated>${truncated}</IsTruncated>`,
    ...page.map((upload) =>
      [
        '  <Upload>',
        `    <Key>${escapeXml(upload.key)}</Key>`,
        `    <UploadId>${escapeXml(upload.uploadId)}</UploadId>`,
        `    <Initiated>${upload.initiated.toISOString()}</Initiated>`,
        '    <StorageClass>STANDARD</StorageClass>',
        '  </Upload>',
      ].join('\n'),
    ),
    '</ListMultipartUploadsResult>',
  ].join('\n');
}

/** ListParts: the parts uploaded so far, or `undefined` when the upload does not exist. */
export function listParts(
  store: object,
  bucket: string,
  key: string,
  query: URLSearchParams,
): string | undefined {
  const uploadId = query.get('uploadId') ?? '';
  const upload = uploadsOf(store).get(uploadId);
  if (upload === undefined || upload.bucket !== bucket || upload.key !== key) return undefined;
  const marker = Number(query.get('part-number-marker') ?? 0);
  const maxParts = Math.min(Number(query.get('max-parts') ?? 1000), 1000);
  const parts = [...upload.parts.values()]
    .filter((part) => part.partNumber > marker)
    .sort((a, b) => a.partNumber - b.partNumber);
  const page = parts.slice(0, maxParts);
  const truncated = parts.length > page.length;
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
    `  <Bucket>${escapeXml(bucket)}</Bucket>`,
    `  <Key>${escapeXml(key)}</Key>`,
    `  <UploadId>${escapeXml(uploadId)}</UploadId>`,
    `  <PartNumberMarker>${marker}</PartNumberMarker>`,
    `  <NextPartNumberMarker>${page.at(-1)?.partNumber ?? marker}</NextPartNumberMarker>`,
    `  <MaxParts>${maxParts}</MaxParts>`,
    `  <IsTruncated>${truncated}</IsTruncated>`,
    '  <StorageClass>STANDARD</StorageClass>',
    ...page.map((part) =>
      [
        '  <Part>',
        `    <PartNumber>${part.partNumber}</PartNumber>`,
        `    <LastModified>${part.lastModified.toISOString()}</LastModified>`,
        `    <ETag>${escapeXml(part.etag)}</ETag>`,
        `    <Size>${part.body.length}</Size>`,
        '  </Part>',
      ].join('\n'),
    ),
    '</ListPartsResult>',
  ].join('\n');
}

/**
 * Go's XML encoder writes the quotes around part ETags as `&#34;`, which fauxqs
 * does not decode; turning them back into quotes makes its part lookup match.
 */
export function decodeNumericQuotes(body: unknown): unknown {
  if (!Buffer.isBuffer(body)) return body;
  const text = body.toString('utf8');
  return text.includes('&#34;') ? Buffer.from(text.replaceAll('&#34;', '"'), 'utf8') : body;
}

/** The access key id a request is signed with (header or presigned query), or undefined. */
export function accessKeyOf(request: SandboxRequest): string | undefined {
  const header = request.headers['authorization'];
  const fromHeader = typeof header === 'string' ? /Credential=([^/,\s]+)\//.exec(header) : null;
  if (fromHeader?.[1] !== undefined) return fromHeader[1];
  const credential = new URL(request.url, 'http://sandbox').searchParams.get('X-Amz-Credential');
  return credential === null ? undefined : credential.split('/')[0];
}

/**
 * Why an S3 request is refused under `keyBuckets` (access key id -> the
 * buckets it may use), as AWS refuses it, or undefined when it may go on:
 * a key not in the table is unknown, a bucket (or a copy's source bucket)
 * not in its list is denied. Only the key id is checked, not the signature:
 * this tells two key pairs apart, it is no authentication.
 */
export function keyRefusal(
  request: SandboxRequest,
  bucket: string,
  keyBuckets: ReadonlyMap<string, ReadonlySet<string>>,
): { code: string; message: string } | undefined {
  if (keyBuckets.size === 0 || request.headers['x-amz-target'] !== undefined) return undefined;
  const key = accessKeyOf(request);
  const buckets = key === undefined ? undefined : keyBuckets.get(key);
  if (buckets === undefined)
    return {
      code: 'InvalidAccessKeyId',
      message: 'The AWS Access Key Id you provided does not exist in our records.',
    };
  const copySource = request.headers['x-amz-copy-source'];
  const sourceBucket =
    typeof copySource === 'string'
      ? decodeURIComponent(copySource).replace(/^\//, '').split('/')[0]
      : undefined;
  for (const used of [bucket, sourceBucket]) {
    if (used !== undefined && used !== '' && !buckets.has(used))
      return { code: 'AccessDenied', message: `Access Denied to bucket ${used} for ${key}` };
  }
  return undefined;
}
