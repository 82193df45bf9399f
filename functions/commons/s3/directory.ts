/**
 * A local directory behind S3's protocol, in this process: an S3 client whose
 * request handler answers from a DirectoryStore (./directory-store.ts)
 * instead of sending requests anywhere. A location whose endpoint is a
 * `file://` URL is such a directory, so a registry on a filesystem or a PVC is
 * backed up and restored by the one copy path (the engine, its target state,
 * fsck and the workflows), with the calls the copy makes of any bucket:
 * ListObjectsV2, Get/Head/Put/CopyObject, multipart uploads and deletes.
 */
import { Readable } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { S3Client } from '@aws-sdk/client-s3';
import type { HttpRequest, HttpResponse } from '@smithy/types';
import { DirectoryStore, DirectoryStoreError, type StoredObject } from './directory-store.ts';

/** The bucket name a directory location carries (the locations' schema wants one). */
export const DIRECTORY_BUCKET = 'local-directory';

/** Whether an endpoint names a local directory (`file:///path`). */
export function isDirectoryEndpoint(endpoint: string | undefined): endpoint is string {
  return endpoint?.startsWith('file:') === true;
}

/** The `file://` endpoint of a directory given by its absolute path. */
export function directoryEndpoint(absolutePath: string): string {
  return pathToFileURL(absolutePath).href;
}

/** The absolute path a `file://` endpoint names. */
export function directoryOf(endpoint: string): string {
  return fileURLToPath(endpoint);
}

const XML_ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&apos;',
};
const xml = (text: string) => text.replace(/[&<>"']/g, (c) => XML_ESCAPES[c] ?? c);
const unxml = (text: string) =>
  text
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&#(\d+);/g, (_, n: string) => String.fromCodePoint(Number(n)))
    .replace(/&#x([0-9a-f]+);/gi, (_, n: string) => String.fromCodePoint(Number.parseInt(n, 16)))
    .replace(/&amp;/g, '&');

const XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>';
const S3_NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"';

function respond(
  statusCode: number,
  body: string | NodeJS.ReadableStream | undefined,
  headers: Record<string, string> = {},
): HttpResponse {
  const stream =
    body === undefined
      ? Readable.from([])
      : typeof body === 'string'
        ? Readable.from([Buffer.from(body)])
        : body;
  return {
    statusCode,
    headers: {
      ...(typeof body === 'string'
        ? { 'content-type': 'application/xml', 'content-length': String(Buffer.byteLength(body)) }
        : {}),
      ...headers,
    },
    body: stream,
  };
}

function objectHeaders(object: StoredObject): Record<string, string> {
  return {
    etag: `"${object.etag}"`,
    'last-modified': object.lastModified.toUTCString(),
    'content-type': 'application/octet-stream',
    'accept-ranges': 'bytes',
  };
}

async function bodyBytes(body: unknown): Promise<Buffer> {
  if (body === undefined || body === null) return Buffer.alloc(0);
  if (typeof body === 'string') return Buffer.from(body);
  if (body instanceof Uint8Array) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  const chunks: Buffer[] = [];
  for await (const chunk of body as AsyncIterable<Uint8Array | string>)
    chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk));
  return Buffer.concat(chunks);
}

type Query = NonNullable<HttpRequest['query']>;

const queryValue = (query: Query, name: string): string | undefined => {
  const value = query[name];
  if (value === undefined) return undefined;
  if (Array.isArray(value)) return value[0] ?? '';
  return value ?? '';
};

function listXml(store: DirectoryStore, query: Query): Promise<string> {
  const prefix = queryValue(query, 'prefix') ?? '';
  const delimiter = queryValue(query, 'delimiter') ?? '';
  const token = queryValue(query, 'continuation-token');
  const startAfter = queryValue(query, 'start-after') ?? '';
  const maxKeys = Math.min(Number(queryValue(query, 'max-keys') ?? 1000) || 1000, 1000);
  const urlEncoded = queryValue(query, 'encoding-type') === 'url';
  const text = (s: string) => xml(urlEncoded ? encodeURIComponent(s).replace(/%2F/g, '/') : s);
  const after = token === undefined ? startAfter : Buffer.from(token, 'base64url').toString('utf8');
  return store.list({ prefix, delimiter, after, maxKeys }).then((page) => {
    const parts = [
      `${XML_HEAD}<ListBucketResult ${S3_NS}><Name>${DIRECTORY_BUCKET}</Name>`,
      `<Prefix>${text(prefix)}</Prefix><KeyCount>${page.contents.length + page.commonPrefixes.length}</KeyCount>`,
      `<MaxKeys>${maxKeys}</MaxKeys>${delimiter === '' ? '' : `<Delimiter>${delimiter}</Delimiter>`}`,
      urlEncoded ? '<EncodingType>url</EncodingType>' : '',
      `<IsTruncated>${page.next !== undefined}</IsTruncated>`,
      ...page.contents.map(
        (o) =>
          `<Contents><Key>${text(o.key)}</Key><LastModified>${o.lastModified.toISOString()}</LastModified><ETag>&quot;${o.etag}&quot;</ETag><Size>${o.size}</Size><StorageClass>STANDARD</StorageClass></Contents>`,
      ),
      ...page.commonPrefixes.map(
        (p) => `<CommonPrefixes><Prefix>${text(p)}</Prefix></CommonPrefixes>`,
      ),
      token === undefined ? '' : `<ContinuationToken>${xml(token)}</ContinuationToken>`,
      page.next === undefined
        ? ''
        : `<NextContinuationToken>${Buffer.from(page.next).toString('base64url')}</NextContinuationToken>`,
      startAfter === '' ? '' : `<StartAfter>${text(startAfter)}</StartAfter>`,
      '</ListBucketResult>',
    ];
    return parts.join('');
  });
}

/** Answers one S3 request from the store. */
async function answer(store: DirectoryStore, request: HttpRequest): Promise<HttpResponse> {
  const segments = request.path.replace(/^\//, '').split('/');
  const bucket = decodeURIComponent(segments[0] ?? '');
  const key = segments.slice(1).map(decodeURIComponent).join('/');
  const { method, headers } = request;
  const query = request.query ?? {};
  const header = (name: string) =>
    Object.entries(headers).find(([h]) => h.toLowerCase() === name)?.[1];
  if (bucket !== DIRECTORY_BUCKET || !(await store.exists()))
    throw new DirectoryStoreError(
      'NoSuchBucket',
      404,
      `the directory ${store.root} does not exist (or bucket ${bucket} is not ${DIRECTORY_BUCKET})`,
    );
  if (key === '') {
    if (method === 'HEAD') return respond(200, undefined);
    if (method === 'GET' && queryValue(query, 'object-lock') !== undefined)
      throw new DirectoryStoreError(
        'ObjectLockConfigurationNotFoundError',
        404,
        'a directory has no Object Lock configuration',
      );
    if (method === 'GET') return respond(200, await listXml(store, query));
    if (method === 'POST' && queryValue(query, 'delete') !== undefined) {
      const body = (await bodyBytes(request.body)).toString('utf8');
      const keys = [...body.matchAll(/<Key>([\s\S]*?)<\/Key>/g)].map((m) => unxml(m[1] ?? ''));
      for (const k of keys) await store.delete(k);
      return respond(
        200,
        `${XML_HEAD}<DeleteResult ${S3_NS}>${keys.map((k) => `<Deleted><Key>${xml(k)}</Key></Deleted>`).join('')}</DeleteResult>`,
      );
    }
  } else {
    const uploadId = queryValue(query, 'uploadId');
    if (method === 'HEAD') {
      const object = await store.head(key);
      return respond(200, undefined, {
        ...objectHeaders(object),
        'content-length': String(object.size),
      });
    }
    if (method === 'GET') {
      const object = await store.head(key);
      const range = /^bytes=(\d+)-(\d*)$/.exec(header('range') ?? '');
      if (range === null)
        return respond(200, store.read(key), {
          ...objectHeaders(object),
          'content-length': String(object.size),
        });
      const start = Number(range[1]);
      const end = Math.min(range[2] === '' ? object.size - 1 : Number(range[2]), object.size - 1);
      if (start > end)
        throw new DirectoryStoreError(
          'InvalidRange',
          416,
          `range ${range[0]} of a ${object.size}-byte file`,
        );
      return respond(206, store.read(key, { start, end }), {
        ...objectHeaders(object),
        'content-length': String(end - start + 1),
        'content-range': `bytes ${start}-${end}/${object.size}`,
      });
    }
    if (method === 'PUT' && uploadId !== undefined) {
      const etag = await store.writePart(
        uploadId,
        Number(queryValue(query, 'partNumber')),
        await bodyBytes(request.body),
      );
      return respond(200, undefined, { etag: `"${etag}"` });
    }
    const copySource = header('x-amz-copy-source');
    if (method === 'PUT' && copySource !== undefined) {
      const [fromBucket, ...rest] = copySource.replace(/^\//, '').split('?')[0]?.split('/') ?? [];
      if (decodeURIComponent(fromBucket ?? '') !== DIRECTORY_BUCKET)
        throw new DirectoryStoreError('AccessDenied', 403, 'a directory copies only within itself');
      const sha256 = header('x-amz-checksum-algorithm')?.toUpperCase() === 'SHA256';
      const copied = await store.copy(rest.map(decodeURIComponent).join('/'), key, sha256);
      return respond(
        200,
        `${XML_HEAD}<CopyObjectResult ${S3_NS}><LastModified>${copied.lastModified.toISOString()}</LastModified><ETag>&quot;${copied.etag}&quot;</ETag>${copied.sha256 === undefined ? '' : `<ChecksumSHA256>${copied.sha256}</ChecksumSHA256>`}</CopyObjectResult>`,
      );
    }
    if (method === 'PUT') {
      const written = await store.write(key, await bodyBytes(request.body));
      return respond(200, undefined, { etag: `"${written.etag}"` });
    }
    if (method === 'POST' && queryValue(query, 'uploads') !== undefined) {
      const id = await store.createUpload(key);
      return respond(
        200,
        `${XML_HEAD}<InitiateMultipartUploadResult ${S3_NS}><Bucket>${DIRECTORY_BUCKET}</Bucket><Key>${xml(key)}</Key><UploadId>${id}</UploadId></InitiateMultipartUploadResult>`,
      );
    }
    if (method === 'POST' && uploadId !== undefined) {
      const body = (await bodyBytes(request.body)).toString('utf8');
      const parts = [...body.matchAll(/<PartNumber>(\d+)<\/PartNumber>/g)].map((m) => Number(m[1]));
      const written = await store.completeUpload(key, uploadId, parts);
      return respond(
        200,
        `${XML_HEAD}<CompleteMultipartUploadResult ${S3_NS}><Bucket>${DIRECTORY_BUCKET}</Bucket><Key>${xml(key)}</Key><ETag>&quot;${written.etag}&quot;</ETag></CompleteMultipartUploadResult>`,
      );
    }
    if (method === 'DELETE' && uploadId !== undefined) {
      await store.abortUpload(uploadId);
      return respond(204, undefined);
    }
    if (method === 'DELETE') {
      await store.delete(key);
      return respond(204, undefined);
    }
  }
  throw new DirectoryStoreError(
    'NotImplemented',
    501,
    `a directory does not answer ${method} ${request.path}?${Object.keys(query).join('&')}`,
  );
}

/** The request handler of a directory's S3 client: every request answered from the store. */
class DirectoryHandler {
  readonly #store: DirectoryStore;

  constructor(store: DirectoryStore) {
    this.#store = store;
  }

  async handle(request: HttpRequest): Promise<{ response: HttpResponse }> {
    try {
      return { response: await answer(this.#store, request) };
    } catch (err) {
      const failure =
        err instanceof DirectoryStoreError
          ? err
          : new DirectoryStoreError(
              (err as NodeJS.ErrnoException).code === 'EACCES' ? 'AccessDenied' : 'InternalError',
              (err as NodeJS.ErrnoException).code === 'EACCES' ? 403 : 500,
              err instanceof Error ? err.message : String(err),
            );
      const body =
        request.method === 'HEAD'
          ? undefined
          : `${XML_HEAD}<Error><Code>${failure.Code}</Code><Message>${xml(failure.message)}</Message></Error>`;
      return { response: respond(failure.status, body) };
    }
  }

  updateHttpClientConfig(): void {}

  httpHandlerConfigs(): Record<string, never> {
    return {};
  }

  destroy(): void {}
}

/**
 * An S3 client over the directory a `file://` endpoint names. Requests never
 * leave the process; the keys are placeholders the SDK signs with and nobody
 * checks.
 */
export function createDirectoryClient(endpoint: string): S3Client {
  return new S3Client({
    region: 'us-east-1',
    endpoint: 'http://directory.regvault.invalid',
    forcePathStyle: true,
    credentials: { accessKeyId: 'local-directory', secretAccessKey: 'local-directory' },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 1,
    requestHandler: new DirectoryHandler(new DirectoryStore(directoryOf(endpoint))),
  });
}
