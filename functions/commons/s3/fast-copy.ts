/**
 * The copy engine's hot S3 calls without the SDK's request pipeline:
 * CopyObject, ListObjectsV2, GetObject (whole or a byte range, held in
 * memory: small objects and parts only) and PutObject / UploadPart. Written
 * by hand because measurement says so: on the sandbox, 4,000 CopyObject calls
 * at 32 in flight took 2.4 s and 2.5 s of client CPU through `S3Client.send`
 * and 0.65 s and 0.6 s of CPU this way (the SDK's middleware, schema and XML
 * layers cost about 0.6 ms of CPU per call, and a bulk copy is CPU-bound on
 * the client). Multipart create/complete, UploadPartCopy, deletes and every
 * other call still go through the SDK; `listObjectsPage` answers a listing
 * page through this path when the caller has one, else through the SDK.
 *
 * It signs with the SDK's own SigV4 signer and the client's own credentials
 * provider, addresses buckets path-style when the caller forces it or names
 * an endpoint and virtual-hosted on AWS's regional endpoint otherwise,
 * retries by the one policy of ./retry.ts, as the SDK's calls do (backoff
 * with full jitter on throttling, 5xx, timeouts, resets, a body cut short
 * and a 200 whose body is an error; never on other 4xx), and throws errors
 * shaped like the SDK's (`name`/`Code`, `$metadata`), so callers cannot tell
 * the two apart.
 */
import { createHash } from 'node:crypto';
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { SignatureV4 } from '@smithy/signature-v4';
import type { AwsCredentialIdentity } from '@smithy/types';
import { NodeSha256 } from '../sha256.ts';
import { virtualHostable } from './addressing.ts';
import { rewordFor } from './client.ts';
import { isRetryable, RETRY_POLICY, type RetrySink, withRetries } from './retry.ts';

/** An S3 error as the SDK shapes it. */
export class S3CallError extends Error {
  readonly Code: string;
  readonly $metadata: { httpStatusCode: number | undefined; attempts: number };
  readonly $retryable: boolean;

  constructor(
    code: string,
    message: string,
    status: number | undefined,
    attempts: number,
    retryable: boolean,
  ) {
    super(message);
    this.name = code;
    this.Code = code;
    this.$metadata = { httpStatusCode: status, attempts };
    this.$retryable = retryable;
  }
}

export interface FastCopyResult {
  readonly etag: string;
  readonly checksumSha256: string | undefined;
}

export interface FastListPage {
  readonly contents: Array<{ key: string; size: number; etag: string }>;
  /** With a delimiter: the rolled-up prefixes, in order. */
  readonly commonPrefixes: string[];
  readonly isTruncated: boolean;
  readonly nextContinuationToken: string | undefined;
}

export interface FastCopier {
  copyObject(input: {
    bucket: string;
    key: string;
    copySource: string;
    checksumSha256: boolean;
  }): Promise<FastCopyResult>;
  listObjectsV2(input: {
    bucket: string;
    prefix: string;
    delimiter?: string;
    maxKeys?: number;
    startAfter?: string;
    continuationToken?: string;
  }): Promise<FastListPage>;
  /** The whole object in memory: for small objects only (the caller budgets the bytes). */
  getObject(input: {
    bucket: string;
    key: string;
    range?: { start: number; end: number };
  }): Promise<{ body: Buffer; contentType: string | undefined }>;
  putObject(input: {
    bucket: string;
    key: string;
    body: Uint8Array;
    contentType?: string | undefined;
    /** With both, an UploadPart of that multipart upload. */
    uploadId?: string;
    partNumber?: number;
    /** Send Content-MD5 (buckets with Object Lock default retention need it). */
    contentMd5?: boolean;
  }): Promise<{ etag: string }>;
  /** The same copier (its connections), its retries also counted in `sink` (a shard run's tally). */
  withRetrySink(sink: RetrySink): FastCopier;
  destroy(): void;
}

/** The Content-MD5 header value of a body. */
export const md5Base64 = (body: Uint8Array): string =>
  createHash('md5').update(body).digest('base64');

/** RFC 3986 encoding, as S3's canonical requests want it. */
const encode = (text: string) =>
  encodeURIComponent(text).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );

const NAMED_ENTITIES: Readonly<Record<string, string>> = {
  quot: '"',
  apos: "'",
  lt: '<',
  gt: '>',
  amp: '&',
};

const QUOT = '&quot;';

/**
 * XML entities back to characters, in one pass (a listing page holds three
 * fields per object); text without `&` passes untouched, and so, but for its
 * quotes, does an ETag as S3 writes it (`&quot;<hex>&quot;`).
 */
const unescapeXml = (text: string) => {
  if (!text.includes('&')) return text;
  if (
    text.length >= 2 * QUOT.length &&
    text.startsWith(QUOT) &&
    text.indexOf('&', QUOT.length) === text.length - QUOT.length &&
    text.endsWith(QUOT)
  )
    return `"${text.slice(QUOT.length, -QUOT.length)}"`;
  return text.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|[a-z]+);/g, (whole, entity: string) => {
    if (entity.startsWith('#x')) return String.fromCodePoint(Number.parseInt(entity.slice(2), 16));
    if (entity.startsWith('#')) return String.fromCodePoint(Number(entity.slice(1)));
    return NAMED_ENTITIES[entity] ?? whole;
  });
};

/** An element's opening and closing tags, made once rather than for every entry of a page. */
const element = (name: string) => ({ open: `<${name}>`, close: `</${name}>` });
const KEY = element('Key');
const SIZE = element('Size');
const ETAG = element('ETag');
const PREFIX = element('Prefix');
const IS_TRUNCATED = element('IsTruncated');
const NEXT_TOKEN = element('NextContinuationToken');
const CHECKSUM_SHA256 = element('ChecksumSHA256');
const CODE = element('Code');
const MESSAGE = element('Message');

/** The text of the first `<name>` element in `xml` between `from` and `to`. */
const tag = (
  xml: string,
  { open, close }: { open: string; close: string },
  from = 0,
  to = xml.length,
): string | undefined => {
  const start = xml.indexOf(open, from);
  if (start === -1 || start >= to) return undefined;
  const end = xml.indexOf(close, start);
  return end === -1 || end > to ? undefined : unescapeXml(xml.slice(start + open.length, end));
};

interface Call {
  readonly operation: string;
  readonly method: 'GET' | 'PUT';
  readonly body?: Uint8Array;
  readonly bucket: string;
  readonly key: string;
  readonly query: Record<string, string>;
  readonly headers: Record<string, string>;
}

/** Builds a client for the hot calls that reaches the same endpoint, with the same credentials, as `client`. */
export function createFastCopier(
  client: S3Client,
  where: { endpoint?: string | undefined; region: string; forcePathStyle: boolean },
  options: { maxSockets: number; maxAttempts?: number; timeoutMs?: number } = { maxSockets: 64 },
): FastCopier {
  const base = new URL(where.endpoint ?? `https://s3.${where.region}.amazonaws.com`);
  const secure = base.protocol === 'https:';
  const agentOptions = {
    keepAlive: true,
    maxSockets: options.maxSockets,
    maxFreeSockets: options.maxSockets,
  };
  const agent = secure ? new HttpsAgent(agentOptions) : new HttpAgent(agentOptions);
  const send = secure ? httpsRequest : httpRequest;
  const policy =
    options.maxAttempts === undefined
      ? RETRY_POLICY
      : { ...RETRY_POLICY, maxAttempts: options.maxAttempts };
  const signer = new SignatureV4({
    credentials: async (): Promise<AwsCredentialIdentity> => client.config.credentials(),
    region: where.region,
    service: 's3',
    sha256: NodeSha256,
    uriEscapePath: false,
    applyChecksum: false,
  });
  // What is thrown after the retries says where and whose keys, as the SDK's calls do; its code stays.
  const reword = rewordFor(client);
  // As the SDK: a bucket that cannot be a host name label goes path style whatever was asked.
  const pathStyleOf = (bucket: string) =>
    where.forcePathStyle || !virtualHostable(bucket, base.protocol);
  const basePath = base.pathname.replace(/\/$/, '');

  const once = async (
    call: Call,
  ): Promise<{
    status: number;
    body: Buffer;
    etag: string | undefined;
    contentType: string | undefined;
  }> => {
    const encodedKey = call.key.split('/').map(encode).join('/');
    const pathStyle = pathStyleOf(call.bucket);
    const hostname = pathStyle ? base.hostname : `${call.bucket}.${base.hostname}`;
    const path = pathStyle
      ? `${basePath}/${call.bucket}${call.key === '' ? '' : `/${encodedKey}`}`
      : `${basePath}/${encodedKey}`;
    const host = base.port === '' ? hostname : `${hostname}:${base.port}`;
    const signed = await signer.sign({
      method: call.method,
      protocol: base.protocol,
      hostname,
      ...(base.port === '' ? {} : { port: Number(base.port) }),
      path,
      query: call.query,
      headers: { host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', ...call.headers },
    });
    const search = Object.entries(call.query)
      .map(([name, value]) => `${encode(name)}=${encode(value)}`)
      .join('&');
    return new Promise((resolve, reject) => {
      const req = send(
        {
          agent,
          hostname,
          port: base.port === '' ? undefined : base.port,
          method: call.method,
          path: search === '' ? path : `${path}?${search}`,
          headers: {
            ...signed.headers,
            ...(call.method === 'PUT'
              ? { 'content-length': String(call.body?.byteLength ?? 0) }
              : {}),
          },
        },
        (res: IncomingMessage) => {
          const chunks: Buffer[] = [];
          let received = 0;
          res.on('data', (chunk: Buffer) => {
            chunks.push(chunk);
            received += chunk.byteLength;
          });
          res.on('end', () => {
            const { etag, 'content-type': contentType, 'content-length': length } = res.headers;
            // A connection closed mid-body can end the stream early: short is a cut, not an answer.
            if (length !== undefined && Number(length) !== received) {
              reject(
                Object.assign(new Error(`the body ended after ${received} of ${length} bytes`), {
                  code: 'ECONNRESET',
                }),
              );
              return;
            }
            resolve({
              status: res.statusCode ?? 0,
              body: Buffer.concat(chunks),
              etag,
              contentType,
            });
          });
          res.on('aborted', () =>
            reject(Object.assign(new Error('the response was cut short'), { code: 'ECONNRESET' })),
          );
          res.on('error', reject);
        },
      );
      req.setTimeout(options.timeoutMs ?? 300_000, () =>
        req.destroy(Object.assign(new Error('the request timed out'), { code: 'ETIMEDOUT' })),
      );
      req.on('error', reject);
      req.end(call.body);
    });
  };

  /**
   * One attempt of a call: the 200 answer, or an S3CallError shaped like the
   * SDK's. `text` is the body as text, decoded once here, but for an object's bytes.
   */
  const attempt = async (
    spec: Call,
    n: number,
  ): Promise<{
    body: Buffer;
    text: string;
    etag: string | undefined;
    contentType: string | undefined;
  }> => {
    let answer: Awaited<ReturnType<typeof once>>;
    try {
      answer = await once(spec);
    } catch (err) {
      const code =
        typeof err === 'object' && err !== null && 'code' in err
          ? String(err.code)
          : 'NetworkError';
      const message = err instanceof Error ? err.message : String(err);
      throw new S3CallError(code, message, undefined, n, isRetryable({ code, message }));
    }
    const { status } = answer;
    // S3 can answer a copy with 200 and an error body: it failed after the headers went out.
    const text =
      spec.method === 'GET' && spec.key !== '' && (status === 200 || status === 206)
        ? ''
        : answer.body.toString('utf8');
    if ((status === 200 || status === 206) && !text.includes('<Error>')) return { ...answer, text };
    const code = tag(text, CODE) ?? (status === 404 ? 'NotFound' : `Http${status}`);
    throw new S3CallError(
      code,
      tag(text, MESSAGE) ?? `${spec.operation} answered HTTP ${status}`,
      status,
      n,
      status === 200 || isRetryable({ Code: code, $metadata: { httpStatusCode: status } }),
    );
  };

  /** One call retried by the one policy (./retry.ts), its retries counted in `sink`; returns the 200 answer. */
  const retried = (spec: Call, sink: RetrySink | undefined) =>
    withRetries(
      (n) => attempt(spec, n),
      (err) => err instanceof S3CallError && err.$retryable,
      policy,
      sink,
    );

  /** The copier's calls, their retries counted in `sink`; every view shares the agent. */
  const copier = (sink?: RetrySink): FastCopier => {
    /** A call as `retried` makes it, its last failure in words (where, whose keys, what to do). */
    const call = (spec: Call) =>
      retried(spec, sink).catch((err: unknown) => {
        throw reword(err, {
          operation: spec.operation,
          bucket: spec.bucket,
          ...(spec.key === '' ? {} : { key: spec.key }),
        });
      });
    return {
      async copyObject(input) {
        const { text: body } = await call({
          operation: 'CopyObject',
          method: 'PUT',
          bucket: input.bucket,
          key: input.key,
          query: {},
          headers: {
            'x-amz-copy-source': input.copySource,
            ...(input.checksumSha256 ? { 'x-amz-checksum-algorithm': 'SHA256' } : {}),
          },
        });
        return { etag: tag(body, ETAG) ?? '', checksumSha256: tag(body, CHECKSUM_SHA256) };
      },
      async getObject(input) {
        const { body, contentType } = await call({
          operation: 'GetObject',
          method: 'GET',
          bucket: input.bucket,
          key: input.key,
          query: {},
          headers:
            input.range === undefined
              ? {}
              : { range: `bytes=${input.range.start}-${input.range.end}` },
        });
        return { body, contentType };
      },
      async putObject(input) {
        const { etag } = await call({
          operation: input.uploadId === undefined ? 'PutObject' : 'UploadPart',
          method: 'PUT',
          bucket: input.bucket,
          key: input.key,
          query:
            input.uploadId === undefined || input.partNumber === undefined
              ? {}
              : { partNumber: String(input.partNumber), uploadId: input.uploadId },
          headers: {
            ...(input.contentType === undefined ? {} : { 'content-type': input.contentType }),
            ...(input.contentMd5 === true ? { 'content-md5': md5Base64(input.body) } : {}),
          },
          body: input.body,
        });
        return { etag: etag ?? '' };
      },
      async listObjectsV2(input) {
        const { text: body } = await call({
          operation: 'ListObjectsV2',
          method: 'GET',
          bucket: input.bucket,
          key: '',
          query: {
            'list-type': '2',
            prefix: input.prefix,
            ...(input.delimiter === undefined ? {} : { delimiter: input.delimiter }),
            'max-keys': String(input.maxKeys ?? 1000),
            ...(input.startAfter === undefined ? {} : { 'start-after': input.startAfter }),
            ...(input.continuationToken === undefined
              ? {}
              : { 'continuation-token': input.continuationToken }),
          },
          headers: {},
        });
        return parseListPage(body);
      },
      withRetrySink: (other) => copier(other),
      destroy() {
        agent.destroy();
      },
    };
  };
  return copier();
}

/** A ListObjectsV2 answer's entries, read in place from its XML. */
export function parseListPage(body: string): FastListPage {
  const contents: FastListPage['contents'] = [];
  // Entries are read in place, bounded by their closing tag, without a
  // copy of each entry (a page of 1,000 is ~300 KB of XML).
  let at = body.indexOf('<Contents>');
  while (at !== -1) {
    const end = body.indexOf('</Contents>', at);
    contents.push({
      key: tag(body, KEY, at, end) ?? '',
      size: Number(tag(body, SIZE, at, end) ?? 0),
      etag: tag(body, ETAG, at, end) ?? '',
    });
    at = body.indexOf('<Contents>', end);
  }
  const commonPrefixes: string[] = [];
  at = body.indexOf('<CommonPrefixes>');
  while (at !== -1) {
    const end = body.indexOf('</CommonPrefixes>', at);
    commonPrefixes.push(tag(body, PREFIX, at, end) ?? '');
    at = body.indexOf('<CommonPrefixes>', end);
  }
  return {
    contents,
    commonPrefixes,
    isTruncated: tag(body, IS_TRUNCATED) === 'true',
    nextContinuationToken: tag(body, NEXT_TOKEN),
  };
}

/**
 * One ListObjectsV2 page: through the lean path when the caller has one, else
 * through the SDK, answered in the lean path's shape either way.
 */
export async function listObjectsPage(
  client: S3Client,
  fast: Pick<FastCopier, 'listObjectsV2'> | undefined,
  input: Parameters<FastCopier['listObjectsV2']>[0],
): Promise<FastListPage> {
  if (fast !== undefined) return fast.listObjectsV2(input);
  const response = await client.send(
    new ListObjectsV2Command({
      Bucket: input.bucket,
      Prefix: input.prefix,
      ...(input.maxKeys === undefined ? {} : { MaxKeys: input.maxKeys }),
      ...(input.delimiter === undefined ? {} : { Delimiter: input.delimiter }),
      ...(input.startAfter === undefined ? {} : { StartAfter: input.startAfter }),
      ...(input.continuationToken === undefined
        ? {}
        : { ContinuationToken: input.continuationToken }),
    }),
  );
  return {
    contents: (response.Contents ?? []).map((c) => ({
      key: c.Key ?? '',
      size: c.Size ?? 0,
      etag: c.ETag ?? '',
    })),
    commonPrefixes: (response.CommonPrefixes ?? []).map((p) => p.Prefix ?? ''),
    isTruncated: response.IsTruncated === true,
    nextContinuationToken: response.NextContinuationToken,
  };
}
