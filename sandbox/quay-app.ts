/**
 * The sandbox's quay-app: the registry API v2 that Red Hat Quay serves,
 * kept as Quay keeps it, so that regvault's quay profile meets Quay's real
 * layout. Manifests, tags, repositories and which blobs each manifest needs
 * are rows of the real PostgreSQL (Quay's tables: quay-schema.ts); blobs are
 * objects of the real S3 server at Quay's keys, `<storage_path>/sha256/<2
 * hex>/<64 hex>`, and an upload in progress at `<storage_path>/uploads/<uuid>`
 * (Quay's digest_tools.content_path and upload path). No
 * `docker/registry/v2/` anywhere.
 *
 * It serves the database's state: a tag, manifest or blob row that is
 * missing, or a blob the bucket lost, is a 404, as it would be on Quay, so a
 * restore that loses either cannot pass its verification.
 *
 * Implemented: `GET /v2/`, `/v2/_catalog` (paginated with `n`/`last`), tags
 * list, `GET`/`HEAD` manifests by tag or digest, `GET`/`HEAD` blobs, and push
 * (`POST`/`PATCH`/`PUT` uploads, cross-repository mount, `PUT` manifests,
 * moving a tag ends its old row). Left out: authentication (Quay's tokens,
 * robot accounts), organizations' permissions, the UI and its API, garbage
 * collection, security scanning, mirroring, redirects to signed S3 URLs
 * (blobs are streamed), schema 1 manifests, and chunked uploads' resumable
 * hash state (an upload is held in memory and in the bucket).
 */
import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pipeline, type Readable } from 'node:stream';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import type { RegistryInstance } from './kube/controller.ts';
import type { PostgresHandle } from './postgres.ts';
import { LOOPBACK } from './process.ts';
import {
  ensureQuaySchema,
  ensureRepositorySql,
  literal,
  QUAY_MEDIA_TYPES,
  repositoryIdSql,
} from './quay-schema.ts';

/** Where a quay-app keeps its blobs (the S3 storage of `DISTRIBUTED_STORAGE_CONFIG`). */
export interface QuayAppStorage {
  readonly bucket: string;
  readonly endpoint: string;
  readonly region: string;
  readonly accessKey: string;
  readonly secretKey: string;
  /** `storage_path`, its leading slash stripped ('' for the bucket's top). */
  readonly storagePath: string;
}

export interface QuayAppOptions {
  readonly storage: QuayAppStorage;
  /** The postgres pod's server and the database `DB_URI` names. */
  readonly postgres: PostgresHandle;
  readonly database: string;
}

/** Starts a quay-app; it has made its database's tables (as Quay's migrations do) when this resolves. */
export type QuayAppStarter = (options: QuayAppOptions) => Promise<RegistryInstance>;

const NAME = /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)+$/;
const DIGEST = /^sha256:[0-9a-f]{64}$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const ROUTE =
  /^\/v2\/(.+?)\/(tags\/list|manifests\/([^/]+)|blobs\/uploads\/([^/]*)|blobs\/([^/]+))$/;

class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const sha256 = (bytes: Buffer) => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

async function bodyOf(request: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Rows of psql's unaligned output (`|` between fields). */
const rowsOf = (text: string) =>
  text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => line.split('|'));

/** Starts the quay-app on a free port of 127.0.0.1. */
export const startQuayApp: QuayAppStarter = async (options) => {
  const { storage, postgres, database } = options;
  await ensureQuaySchema(postgres, database);
  const s3 = new S3Client({
    endpoint: storage.endpoint,
    region: storage.region,
    credentials: { accessKeyId: storage.accessKey, secretAccessKey: storage.secretKey },
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  const base = storage.storagePath === '' ? '' : `${storage.storagePath.replace(/\/+$/, '')}/`;
  const blobKey = (digest: string) => {
    const hex = digest.slice('sha256:'.length);
    return `${base}sha256/${hex.slice(0, 2)}/${hex}`;
  };
  const uploadKey = (uuid: string) => `${base}uploads/${uuid}`;
  const uploads = new Map<string, { namespace: string; repository: string; chunks: Buffer[] }>();
  const logs: string[] = [];
  const sql = (text: string) => postgres.sql(database, text);

  const splitName = (name: string) => {
    if (!NAME.test(name))
      throw new ApiError(400, 'NAME_INVALID', `invalid repository name ${name}`);
    const at = name.indexOf('/');
    return { namespace: name.slice(0, at), repository: name.slice(at + 1) };
  };

  /** The blob row of `digest` visible in a repository (a manifest of it needs it, or it was uploaded to it). */
  async function blobIn(namespace: string, repository: string, digest: string) {
    const repo = repositoryIdSql(namespace, repository);
    const [row] = rowsOf(
      await sql(`SELECT s.id, s.image_size FROM imagestorage s
         WHERE s.content_checksum = ${literal(digest)} AND NOT s.uploading
           AND (EXISTS (SELECT 1 FROM manifestblob mb WHERE mb.blob_id = s.id AND mb.repository_id = ${repo})
             OR EXISTS (SELECT 1 FROM uploadedblob ub WHERE ub.blob_id = s.id AND ub.repository_id = ${repo}))
         ORDER BY s.id LIMIT 1;`),
    );
    return row === undefined ? undefined : { id: row[0] ?? '', size: Number(row[1] ?? 0) };
  }

  async function manifestOf(namespace: string, repository: string, reference: string) {
    const repo = repositoryIdSql(namespace, repository);
    const where = DIGEST.test(reference)
      ? `m.repository_id = ${repo} AND m.digest = ${literal(reference)}`
      : `m.id = (SELECT t.manifest_id FROM tag t WHERE t.repository_id = ${repo} AND t.name = ${literal(reference)}
                   AND t.lifetime_end_ms IS NULL AND NOT t.hidden)`;
    const [row] = rowsOf(
      await sql(`SELECT m.digest, mt.name, replace(encode(convert_to(m.manifest_bytes, 'UTF8'), 'base64'), E'\\n', '')
                   FROM manifest m JOIN mediatype mt ON mt.id = m.media_type_id WHERE ${where};`),
    );
    if (row === undefined)
      throw new ApiError(
        404,
        'MANIFEST_UNKNOWN',
        `manifest unknown: ${namespace}/${repository}:${reference}`,
      );
    return {
      digest: row[0] ?? '',
      mediaType: row[1] ?? '',
      bytes: Buffer.from((row[2] ?? '').replace(/\s+/g, ''), 'base64'),
    };
  }

  async function putManifest(
    namespace: string,
    repository: string,
    reference: string,
    body: Buffer,
    contentType: string,
  ) {
    const digest = sha256(body);
    if (DIGEST.test(reference) && reference !== digest)
      throw new ApiError(400, 'DIGEST_INVALID', `manifest digest ${digest} is not ${reference}`);
    if (!DIGEST.test(reference) && !TAG.test(reference))
      throw new ApiError(400, 'TAG_INVALID', `invalid tag ${reference}`);
    const parsed = JSON.parse(body.toString('utf8')) as {
      mediaType?: string;
      config?: { digest?: string; mediaType?: string };
      layers?: Array<{ digest?: string; size?: number }>;
      manifests?: Array<{ digest?: string }>;
    };
    const mediaType = parsed.mediaType ?? contentType;
    if (!(QUAY_MEDIA_TYPES as readonly string[]).includes(mediaType))
      throw new ApiError(
        415,
        'MANIFEST_INVALID',
        `manifest media type ${mediaType} is not one Quay stores here`,
      );
    const repo = repositoryIdSql(namespace, repository);
    const statements = [
      'BEGIN;',
      ensureRepositorySql(namespace, repository),
      `INSERT INTO manifest (repository_id, digest, media_type_id, manifest_bytes, config_media_type, layers_compressed_size)
         VALUES (${repo}, ${literal(digest)}, (SELECT id FROM mediatype WHERE name = ${literal(mediaType)}),
                 ${literal(body.toString('utf8'))}, ${parsed.config?.mediaType === undefined ? 'NULL' : literal(parsed.config.mediaType)},
                 ${(parsed.layers ?? []).reduce((n, l) => n + (l.size ?? 0), 0)})
         ON CONFLICT DO NOTHING;`,
    ];
    const manifestId = `(SELECT id FROM manifest WHERE repository_id = ${repo} AND digest = ${literal(digest)})`;
    if (parsed.manifests !== undefined) {
      for (const child of parsed.manifests) {
        const childDigest = child.digest ?? '';
        if (!DIGEST.test(childDigest))
          throw new ApiError(400, 'MANIFEST_INVALID', `index names manifest ${childDigest}`);
        await manifestOf(namespace, repository, childDigest);
        statements.push(`INSERT INTO manifestchild (repository_id, manifest_id, child_manifest_id)
          VALUES (${repo}, ${manifestId}, (SELECT id FROM manifest WHERE repository_id = ${repo} AND digest = ${literal(childDigest)}))
          ON CONFLICT DO NOTHING;`);
      }
    } else {
      const needed = [parsed.config?.digest, ...(parsed.layers ?? []).map((l) => l.digest)];
      for (const blob of new Set(needed)) {
        const found = blob === undefined ? undefined : await blobIn(namespace, repository, blob);
        if (found === undefined || blob === undefined)
          throw new ApiError(
            400,
            'MANIFEST_BLOB_UNKNOWN',
            `blob unknown to registry: ${blob ?? '(none)'}`,
          );
        statements.push(`INSERT INTO manifestblob (repository_id, manifest_id, blob_id)
          VALUES (${repo}, ${manifestId}, ${found.id}) ON CONFLICT DO NOTHING;`);
      }
    }
    if (!DIGEST.test(reference)) {
      // Moving a tag ends its live row and starts another, as Quay keeps tag history.
      statements.push(
        `UPDATE tag SET lifetime_end_ms = (extract(epoch FROM clock_timestamp()) * 1000)::bigint
           WHERE repository_id = ${repo} AND name = ${literal(reference)} AND lifetime_end_ms IS NULL;`,
        `INSERT INTO tag (name, repository_id, manifest_id, lifetime_start_ms)
           VALUES (${literal(reference)}, ${repo}, ${manifestId}, (extract(epoch FROM clock_timestamp()) * 1000)::bigint + 1);`,
      );
    }
    statements.push('COMMIT;');
    await sql(statements.join('\n'));
    return digest;
  }

  async function finishUpload(uuid: string, digest: string, last: Buffer): Promise<void> {
    const upload = uploads.get(uuid);
    if (upload === undefined)
      throw new ApiError(404, 'BLOB_UPLOAD_UNKNOWN', `upload ${uuid} unknown`);
    const bytes = Buffer.concat([...upload.chunks, last]);
    if (!DIGEST.test(digest) || sha256(bytes) !== digest)
      throw new ApiError(400, 'DIGEST_INVALID', `upload does not hash to ${digest}`);
    await s3.send(
      new PutObjectCommand({ Bucket: storage.bucket, Key: blobKey(digest), Body: bytes }),
    );
    const repo = repositoryIdSql(upload.namespace, upload.repository);
    await sql(`BEGIN;
      INSERT INTO imagestorage (content_checksum, image_size, uncompressed_size, uploading, cas_path)
        SELECT ${literal(digest)}, ${bytes.length}, NULL, false, true
         WHERE NOT EXISTS (SELECT 1 FROM imagestorage WHERE content_checksum = ${literal(digest)} AND NOT uploading);
      INSERT INTO uploadedblob (repository_id, blob_id, expires_at)
        VALUES (${repo}, (SELECT min(id) FROM imagestorage WHERE content_checksum = ${literal(digest)} AND NOT uploading), now() + interval '1 day');
      DELETE FROM blobupload WHERE uuid = ${literal(uuid)};
      COMMIT;`);
    uploads.delete(uuid);
    await s3.send(new DeleteObjectCommand({ Bucket: storage.bucket, Key: uploadKey(uuid) }));
  }

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://quay');
    const method = request.method ?? 'GET';
    response.setHeader('Docker-Distribution-API-Version', 'registry/2.0');
    const json = (status: number, value: unknown, headers: Record<string, string> = {}) => {
      response.writeHead(status, { 'Content-Type': 'application/json', ...headers });
      response.end(JSON.stringify(value));
    };
    if (url.pathname === '/v2/' || url.pathname === '/v2') return json(200, {});
    if (url.pathname === '/v2/_catalog') {
      const n = Math.min(Number(url.searchParams.get('n') ?? 100) || 100, 1000);
      const last = url.searchParams.get('last') ?? '';
      const names = rowsOf(
        await sql(`SELECT u.username || '/' || r.name COLLATE "C" AS repo_name FROM repository r JOIN "user" u ON u.id = r.namespace_user_id
                    WHERE u.username || '/' || r.name COLLATE "C" > ${literal(last)} ORDER BY repo_name LIMIT ${n + 1};`),
      ).map((row) => row[0] ?? '');
      const page = names.slice(0, n);
      const more =
        names.length > n
          ? {
              Link: `</v2/_catalog?n=${n}&last=${encodeURIComponent(page.at(-1) ?? '')}>; rel="next"`,
            }
          : {};
      return json(200, { repositories: page }, more);
    }
    const route = ROUTE.exec(url.pathname);
    if (route === null) throw new ApiError(404, 'NOT_FOUND', `no route for ${url.pathname}`);
    const name = route[1] ?? '';
    const { namespace, repository } = splitName(name);
    const repo = repositoryIdSql(namespace, repository);
    const [, , what = '', reference, uploadId, blobDigest] = route;
    if (what === 'tags/list') {
      const known = rowsOf(await sql(`SELECT ${repo};`))[0]?.[0];
      if (known === undefined || known === '')
        throw new ApiError(404, 'NAME_UNKNOWN', `repository ${name} not found`);
      const tags = rowsOf(
        await sql(
          `SELECT name FROM tag WHERE repository_id = ${repo} AND lifetime_end_ms IS NULL AND NOT hidden ORDER BY name;`,
        ),
      ).map((row) => row[0] ?? '');
      return json(200, { name, tags });
    }
    if (reference !== undefined) {
      if (method === 'PUT') {
        const digest = await putManifest(
          namespace,
          repository,
          reference,
          await bodyOf(request),
          request.headers['content-type'] ?? '',
        );
        response.writeHead(201, {
          Location: `/v2/${name}/manifests/${digest}`,
          'Docker-Content-Digest': digest,
        });
        return void response.end();
      }
      const manifest = await manifestOf(namespace, repository, reference);
      response.writeHead(200, {
        'Content-Type': manifest.mediaType,
        'Content-Length': String(manifest.bytes.length),
        'Docker-Content-Digest': manifest.digest,
      });
      return void response.end(method === 'HEAD' ? undefined : manifest.bytes);
    }
    if (uploadId !== undefined) {
      if (method === 'POST' && uploadId === '') {
        await sql(ensureRepositorySql(namespace, repository));
        const mount = url.searchParams.get('mount');
        if (mount !== null && DIGEST.test(mount)) {
          const from = url.searchParams.get('from') ?? '';
          const source = NAME.test(from) ? splitName(from) : undefined;
          const found =
            source === undefined
              ? undefined
              : await blobIn(source.namespace, source.repository, mount);
          if (found !== undefined) {
            await sql(
              `INSERT INTO uploadedblob (repository_id, blob_id, expires_at) VALUES (${repo}, ${found.id}, now() + interval '1 day');`,
            );
            response.writeHead(201, {
              Location: `/v2/${name}/blobs/${mount}`,
              'Docker-Content-Digest': mount,
            });
            return void response.end();
          }
        }
        const uuid = randomUUID();
        uploads.set(uuid, { namespace, repository, chunks: [] });
        await sql(
          `INSERT INTO blobupload (repository_id, uuid) VALUES (${repo}, ${literal(uuid)});`,
        );
        const digest = url.searchParams.get('digest');
        if (digest !== null) {
          await finishUpload(uuid, digest, await bodyOf(request));
          response.writeHead(201, {
            Location: `/v2/${name}/blobs/${digest}`,
            'Docker-Content-Digest': digest,
          });
          return void response.end();
        }
        response.writeHead(202, {
          Location: `/v2/${name}/blobs/uploads/${uuid}`,
          'Docker-Upload-UUID': uuid,
          Range: '0-0',
        });
        return void response.end();
      }
      const upload = uploads.get(uploadId);
      if (upload === undefined)
        throw new ApiError(404, 'BLOB_UPLOAD_UNKNOWN', `upload ${uploadId} unknown`);
      if (method === 'PATCH') {
        upload.chunks.push(await bodyOf(request));
        const bytes = Buffer.concat(upload.chunks);
        // Where Quay keeps an upload in progress (an abandoned one stays there).
        await s3.send(
          new PutObjectCommand({ Bucket: storage.bucket, Key: uploadKey(uploadId), Body: bytes }),
        );
        await sql(
          `UPDATE blobupload SET byte_count = ${bytes.length}, chunk_count = chunk_count + 1 WHERE uuid = ${literal(uploadId)};`,
        );
        response.writeHead(202, {
          Location: `/v2/${name}/blobs/uploads/${uploadId}`,
          'Docker-Upload-UUID': uploadId,
          Range: `0-${Math.max(0, bytes.length - 1)}`,
        });
        return void response.end();
      }
      if (method === 'PUT') {
        const digest = url.searchParams.get('digest') ?? '';
        await finishUpload(uploadId, digest, await bodyOf(request));
        response.writeHead(201, {
          Location: `/v2/${name}/blobs/${digest}`,
          'Docker-Content-Digest': digest,
        });
        return void response.end();
      }
      throw new ApiError(405, 'UNSUPPORTED', `${method} on an upload`);
    }
    const digest = blobDigest ?? '';
    if (!DIGEST.test(digest)) throw new ApiError(400, 'DIGEST_INVALID', `invalid digest ${digest}`);
    const blob = await blobIn(namespace, repository, digest);
    if (blob === undefined)
      throw new ApiError(404, 'BLOB_UNKNOWN', `blob unknown to registry: ${digest}`);
    const key = blobKey(digest);
    try {
      if (method === 'HEAD') {
        const head = await s3.send(new HeadObjectCommand({ Bucket: storage.bucket, Key: key }));
        response.writeHead(200, {
          'Content-Length': String(head.ContentLength ?? blob.size),
          'Content-Type': 'application/octet-stream',
          'Docker-Content-Digest': digest,
        });
        return void response.end();
      }
      const object = await s3.send(new GetObjectCommand({ Bucket: storage.bucket, Key: key }));
      response.writeHead(200, {
        'Content-Length': String(object.ContentLength ?? blob.size),
        'Content-Type': 'application/octet-stream',
        'Docker-Content-Digest': digest,
      });
      // A body cut mid-way (the S3 server gone) cuts the client's connection too.
      pipeline(object.Body as Readable, response, () => undefined);
    } catch (err) {
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status === 404)
        throw new ApiError(
          404,
          'BLOB_UNKNOWN',
          `blob ${digest} is in the database but not in the bucket (${key})`,
        );
      throw err;
    }
  }

  const server = createServer((request, response) => {
    handle(request, response).catch((err: unknown) => {
      const api =
        err instanceof ApiError
          ? err
          : new ApiError(500, 'UNKNOWN', err instanceof Error ? err.message : String(err));
      logs.push(`${request.method} ${request.url} ${api.status} ${api.message}`);
      if (response.headersSent) return void response.destroy();
      response.writeHead(api.status, { 'Content-Type': 'application/json' });
      response.end(JSON.stringify({ errors: [{ code: api.code, message: api.message }] }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, LOOPBACK, resolve));
  let running = true;
  return {
    url: `http://${LOOPBACK}:${(server.address() as AddressInfo).port}`,
    logs: () => [...logs],
    running: () => running,
    async stop() {
      if (!running) return;
      running = false;
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      s3.destroy();
    },
  };
};
