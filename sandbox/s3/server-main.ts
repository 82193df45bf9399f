/**
 * Entry of the sandbox S3 + SQS server child process: fauxqs on 127.0.0.1 with
 * the additions in `extensions.ts`. Prints one JSON line `{"ready":true,"port":N}`
 * when listening, and exits when its parent process is gone so a crashed test
 * run leaves nothing behind.
 *
 * Environment: REGVAULT_S3_PORT (0 for any free port), REGVAULT_S3_REGION.
 *
 * Conditional writes: fauxqs 2.4.1 ignores `If-None-Match` and `If-Match` on
 * PutObject (it honours them on GetObject only). AWS S3 evaluates both on
 * PutObject (412 PreconditionFailed; 409 ConditionalRequestConflict while
 * another conditional write of the key is in flight), and regvault's run
 * lock relies on them, so this server evaluates them here, against the store.
 */

import { createHash } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { buildApp } from 'fauxqs';
import {
  bucketAndKey,
  copySourceKeyOf,
  decodeNumericQuotes,
  errorXml,
  type FaultRule,
  keyRefusal,
  listMultipartUploads,
  listParts,
  operationOf,
  RequestLedger,
  type SandboxReply,
  type SandboxRequest,
} from './extensions.ts';
import { installSortedListing, isListingQuery, listObjectsXml } from './listing.ts';
import { fillRegistry } from './registry-fill.ts';

const port = Number(process.env['REGVAULT_S3_PORT'] ?? '0');
const region = process.env['REGVAULT_S3_REGION'] ?? 'us-east-1';
/** Compute SHA-256 for copies that ask for it, as AWS S3 does (fauxqs alone does not). */
const computeChecksums = process.env['REGVAULT_S3_CHECKSUMS'] === '1';
/** Buckets that refuse uploads without Content-MD5, as AWS does with Object Lock default retention. */
const objectLockBuckets = new Set(
  (process.env['REGVAULT_S3_OBJECT_LOCK_BUCKETS'] ?? '').split(',').filter((name) => name !== ''),
);
/** Their default retention, `MODE:days`, as GetObjectLockConfiguration reports it. */
const [lockMode, lockDays] = (
  process.env['REGVAULT_S3_OBJECT_LOCK_RETENTION'] ?? 'GOVERNANCE:1'
).split(':');

/** Access key id -> the buckets it may use; empty: any key may use any bucket (fauxqs's way). */
const keyBuckets = new Map(
  Object.entries(
    JSON.parse(process.env['REGVAULT_S3_KEY_BUCKETS'] ?? '{}') as Record<string, string[]>,
  ).map(([key, buckets]) => [key, new Set(buckets)]),
);

// fauxqs exports only `buildApp`; its store classes are loaded from the same
// package directory so this process can read multipart uploads in flight.
const fauxqsEntry = import.meta.resolve('fauxqs');
const storeModule = async (path: string): Promise<Record<string, unknown>> =>
  (await import(new URL(path, fauxqsEntry).href)) as Record<string, unknown>;
type StoreClass = new () => object;
const [{ S3Store }, { SqsStore }, { SnsStore }] = await Promise.all([
  storeModule('./s3/s3Store.js'),
  storeModule('./sqs/sqsStore.js'),
  storeModule('./sns/snsStore.js'),
]);
const s3Store = new (S3Store as StoreClass)();
// Range copies of sources under 5 MiB are refused by fauxqs alone (AWS accepts
// them as the last part); tests use small multipart thresholds.
Reflect.set(s3Store, 'relaxedRules', { disableMinCopySourceSize: true });
installSortedListing(s3Store);
const stores = {
  s3Store,
  sqsStore: new (SqsStore as StoreClass)(),
  snsStore: new (SnsStore as StoreClass)(),
};

/** Why an upload into an Object Lock bucket is refused, or undefined when it may go on. */
function objectLockRefusal(
  header: string | string[] | undefined,
  body: unknown,
): { code: string; message: string } | undefined {
  if (typeof header !== 'string' || header === '') {
    return {
      code: 'InvalidRequest',
      message:
        'Content-MD5 HTTP header is required for Put Object requests with Object Lock parameters',
    };
  }
  const bytes = Buffer.isBuffer(body) ? body : Buffer.alloc(0);
  return createHash('md5').update(bytes).digest('base64') === header
    ? undefined
    : {
        code: 'BadDigest',
        message: 'The Content-MD5 you specified did not match what we received.',
      };
}

const ledger = new RequestLedger();
const app = buildApp({
  logger: false,
  host: '127.0.0.1',
  defaultRegion: region,
  stores: stores as unknown as NonNullable<NonNullable<Parameters<typeof buildApp>[0]>['stores']>,
});

// fauxqs caps every body at 11 MiB (its Fastify bodyLimit); S3 takes a single
// PUT of up to 5 GiB, and a backup's inventory file passes 11 MiB at about
// 300,000 objects, where the 413 (a JSON body) failed finalize with an XML
// parse error. The same pass-through parser, with S3's limit.
const S3_SINGLE_PUT_LIMIT = 5 * 1024 ** 3;
app.removeContentTypeParser('*');
app.addContentTypeParser(
  '*',
  { parseAs: 'buffer', bodyLimit: S3_SINGLE_PUT_LIMIT },
  (_request, body, done) => {
    done(null, body);
  },
);

const operations = new WeakMap<object, string>();

/**
 * `bucket/key` of conditional PutObjects in flight (when each began), released
 * when it is answered; one whose connection died is forgotten after a while.
 */
const conditionalWrites = new Map<string, number>();
const CONDITIONAL_WRITE_MAX_MS = 30_000;
const conditionalWriteOf = new WeakMap<object, string>();

/** The ETag of an object in the store, or undefined when it does not exist. */
function storedEtag(bucket: string, key: string): string | undefined {
  try {
    return (s3Store as { getObject(b: string, k: string): { etag: string } }).getObject(bucket, key)
      .etag;
  } catch {
    return undefined;
  }
}

/**
 * Why a conditional PutObject is refused, as AWS refuses it, or undefined
 * when it may go on (it then holds the key until it is answered).
 */
function conditionalPutRefusal(
  request: SandboxRequest,
  bucket: string,
  key: string,
): { status: number; code: string; message: string } | undefined {
  const ifNoneMatch = request.headers['if-none-match'];
  const ifMatch = request.headers['if-match'];
  if (typeof ifNoneMatch !== 'string' && typeof ifMatch !== 'string') return undefined;
  const id = `${bucket}/${key}`;
  const began = conditionalWrites.get(id);
  if (began !== undefined && Date.now() - began < CONDITIONAL_WRITE_MAX_MS)
    return {
      status: 409,
      code: 'ConditionalRequestConflict',
      message: 'A conditional request to this object is in progress; retry it.',
    };
  const etag = storedEtag(bucket, key);
  const failed = {
    status: 412,
    code: 'PreconditionFailed',
    message: 'At least one of the pre-conditions you specified did not hold',
  };
  if (typeof ifNoneMatch === 'string' && ifNoneMatch.trim() === '*' && etag !== undefined)
    return failed;
  if (typeof ifMatch === 'string') {
    if (etag === undefined)
      return { status: 404, code: 'NoSuchKey', message: 'The specified key does not exist.' };
    const wanted = ifMatch.trim();
    if (wanted !== '*' && wanted.replaceAll('"', '') !== etag.replaceAll('"', '')) return failed;
  }
  conditionalWrites.set(id, Date.now());
  conditionalWriteOf.set(request, id);
  return undefined;
}

/** REGVAULT_S3_LOG: a file each request is appended to (milliseconds since the epoch, operation, method, URL), to see where and when a run's requests go. */
const requestLog = process.env['REGVAULT_S3_LOG'];

app.addHook('onRequest', async (request) => {
  const operation = operationOf(request as SandboxRequest);
  operations.set(request, operation);
  ledger.count(operation);
  if (requestLog !== undefined && operation !== 'Sandbox')
    appendFileSync(requestLog, `${Date.now()} ${operation} ${request.method} ${request.url}\n`);
});

/** The listing parameters a fault rule can match. */
function listingParams(url: string): { startAfter?: string; delimiter?: string } {
  const params = new URL(url, 'http://sandbox').searchParams;
  const startAfter = params.get('start-after');
  const delimiter = params.get('delimiter');
  return {
    ...(startAfter === null ? {} : { startAfter }),
    ...(delimiter === null ? {} : { delimiter }),
  };
}

app.addHook('preHandler', async (request, reply) => {
  const operation = operations.get(request) ?? operationOf(request as SandboxRequest);
  const { bucket, key } = bucketAndKey(request as SandboxRequest);
  const fault = ledger.trip(
    operation,
    bucket,
    key,
    copySourceKeyOf(request as SandboxRequest),
    listingParams(request.url),
  );
  if (fault !== undefined) {
    if (fault.reset === true) {
      request.raw.socket.destroy();
      return reply;
    }
    return reply
      .status(fault.status)
      .header('content-type', 'application/xml')
      .send(errorXml(fault.code, `injected by the sandbox for ${operation} ${bucket}/${key}`));
  }
  const query = new URL(request.url, 'http://sandbox').searchParams;
  const send = reply as unknown as SandboxReply;
  /** Answers with the S3 error `error`. */
  const refuse = (status: number, error: { code: string; message: string }) => {
    send
      .status(status)
      .header('content-type', 'application/xml')
      .send(errorXml(error.code, error.message));
    return reply;
  };
  const refused =
    operation === 'Sandbox' ? undefined : keyRefusal(request as SandboxRequest, bucket, keyBuckets);
  if (refused !== undefined) return refuse(403, refused);
  /**
   * Answers with `xml`, or with the S3 error `missing` when the handler found
   * nothing. Sent as bytes: a string of a listing page's size (300 KB) cost
   * the server's one thread about 4 ms to write to the socket.
   */
  const answer = (xml: string | Buffer | undefined, missing: { code: string; message: string }) => {
    const text = xml ?? errorXml(missing.code, missing.message);
    send
      .status(xml === undefined ? 404 : 200)
      .header('content-type', 'application/xml')
      .send(typeof text === 'string' ? Buffer.from(text) : text);
    return reply;
  };
  if (operation === 'ListMultipartUploads') {
    return answer(listMultipartUploads(s3Store, bucket, query), {
      code: 'NoSuchBucket',
      message: 'The specified bucket does not exist.',
    });
  }
  if (operation === 'GetObjectLockConfiguration') {
    // The configuration only: this server keeps no object versions, so nothing is retained.
    return answer(
      objectLockBuckets.has(bucket)
        ? `<?xml version="1.0" encoding="UTF-8"?><ObjectLockConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>${lockMode}</Mode><Days>${lockDays}</Days></DefaultRetention></Rule></ObjectLockConfiguration>`
        : undefined,
      {
        code: 'ObjectLockConfigurationNotFoundError',
        message: 'Object Lock configuration does not exist for this bucket',
      },
    );
  }
  if (operation === 'ListParts') {
    return answer(listParts(s3Store, bucket, key, query), {
      code: 'NoSuchUpload',
      message: 'The specified upload does not exist.',
    });
  }
  if ((operation === 'ListObjectsV2' || operation === 'ListObjects') && isListingQuery(query)) {
    return answer(listObjectsXml(s3Store, bucket, query), {
      code: 'NoSuchBucket',
      message: 'The specified bucket does not exist.',
    });
  }
  if ((operation === 'PutObject' || operation === 'UploadPart') && objectLockBuckets.has(bucket)) {
    const refusal = objectLockRefusal(request.headers['content-md5'], request.body);
    if (refusal !== undefined) return refuse(400, refusal);
  }
  if (operation === 'PutObject') {
    const refusal = conditionalPutRefusal(request as SandboxRequest, bucket, key);
    if (refusal !== undefined) return refuse(refusal.status, refusal);
  }
  if (operation === 'CompleteMultipartUpload') {
    (request as SandboxRequest).body = decodeNumericQuotes(request.body);
  }
  return undefined;
});

app.addHook('onResponse', async (request) => {
  const id = conditionalWriteOf.get(request);
  if (id !== undefined) conditionalWrites.delete(id);
});

if (computeChecksums) {
  app.addHook('onSend', async (request, reply, payload) => {
    const algorithm = request.headers['x-amz-checksum-algorithm'];
    if (
      operations.get(request) !== 'CopyObject' ||
      reply.statusCode !== 200 ||
      String(algorithm).toUpperCase() !== 'SHA256'
    )
      return payload;
    const { bucket, key } = bucketAndKey(request as SandboxRequest);
    const object = (s3Store as { getObject(b: string, k: string): { body: Buffer } }).getObject(
      bucket,
      key,
    );
    const checksum = createHash('sha256').update(object.body).digest('base64');
    return String(payload).replace(
      '</CopyObjectResult>',
      `<ChecksumSHA256>${checksum}</ChecksumSHA256></CopyObjectResult>`,
    );
  });
}

app.get('/_sandbox/counters', async () => ledger.counters());
app.post('/_sandbox/counters/reset', async () => {
  ledger.resetCounters();
  return {};
});
app.post('/_sandbox/faults', async (request) => {
  const raw: unknown = request.body;
  const text = Buffer.isBuffer(raw) ? raw.toString('utf8') : String(raw);
  ledger.addFault(JSON.parse(text) as FaultRule);
  return {};
});
app.delete('/_sandbox/faults', async () => {
  ledger.clearFaults();
  return {};
});
// Fills a bucket with a registry's objects without HTTP per object (registry-fill.ts).
app.post('/_sandbox/fill-registry', async (request) => {
  const raw: unknown = request.body;
  const text = Buffer.isBuffer(raw) ? raw.toString('utf8') : String(raw);
  const { bucket, objects, seed } = JSON.parse(text) as {
    bucket: string;
    objects: number;
    seed?: number;
  };
  return fillRegistry(s3Store, bucket, { objects, ...(seed === undefined ? {} : { seed }) });
});

await app.listen({ host: '127.0.0.1', port });
const address = app.server.address();
const boundPort = typeof address === 'object' && address !== null ? address.port : port;
process.stdout.write(`${JSON.stringify({ ready: true, port: boundPort })}\n`);

// Exit when the parent is gone (its pid changes to 1 or the signal fails).
const parent = process.ppid;
setInterval(() => {
  let alive = process.ppid === parent;
  try {
    process.kill(parent, 0);
  } catch {
    alive = false;
  }
  if (!alive) process.exit(0);
}, 1_000).unref();

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    void app.close().finally(() => process.exit(0));
  });
}
