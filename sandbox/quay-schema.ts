/**
 * The part of Quay's database the sandbox's quay-app (quay-app.ts) keeps and
 * a backup must keep consistent with the blobs, with Quay's table and column
 * names (data/database.py, as peewee names them: a foreign key `x` is the
 * column `x_id`): namespaces (`"user"`), repositories, blobs
 * (`imagestorage`, by content checksum), manifests (their bytes, the media
 * type by `mediatype`), which blobs each manifest needs (`manifestblob`), an
 * index's manifests (`manifestchild`), tags (live while `lifetime_end_ms` is
 * null and not `hidden`), and uploads. What Quay keeps beside them (teams,
 * permissions, logs, security scans, ...) and the columns the sandbox does not
 * use are left out. A restore that loses a row, or a blob a row names, is
 * caught by comparing `quayRows` and the blob digests it lists.
 */
import type { PostgresHandle } from './postgres.ts';

/** One image as Quay records it: a tag on a manifest that needs these blobs. */
export interface QuayImage {
  readonly namespace: string;
  readonly repository: string;
  readonly tag: string;
  readonly manifestDigest: string;
  readonly blobs: ReadonlyArray<{ readonly digest: string; readonly size: number }>;
}

/** One small image, for tests that need rows but not many (its blob is in no bucket). */
export const ONE_IMAGE: QuayImage = {
  namespace: 'team',
  repository: 'web',
  tag: 'v1',
  manifestDigest: `sha256:${'a'.repeat(64)}`,
  blobs: [{ digest: `sha256:${'b'.repeat(64)}`, size: 10 }],
};

/** The media types Quay registers (a subset: those the sandbox's pushes use). */
export const QUAY_MEDIA_TYPES = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
] as const;

/** Quay's tables, as its migrations leave them (only what the sandbox uses); safe to run again. */
const SCHEMA = `
CREATE TABLE IF NOT EXISTS "user" (id serial PRIMARY KEY, username varchar(255) NOT NULL UNIQUE, organization boolean NOT NULL DEFAULT false);
CREATE TABLE IF NOT EXISTS repository (id serial PRIMARY KEY, namespace_user_id integer NOT NULL REFERENCES "user", name varchar(255) NOT NULL, UNIQUE (namespace_user_id, name));
CREATE TABLE IF NOT EXISTS imagestorage (id serial PRIMARY KEY, uuid varchar(255) NOT NULL UNIQUE DEFAULT md5(random()::text || clock_timestamp()::text), image_size bigint, uncompressed_size bigint, uploading boolean DEFAULT true, cas_path boolean NOT NULL DEFAULT true, content_checksum varchar(255));
CREATE INDEX IF NOT EXISTS imagestorage_content_checksum ON imagestorage (content_checksum);
CREATE TABLE IF NOT EXISTS mediatype (id serial PRIMARY KEY, name varchar(255) NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS manifest (id serial PRIMARY KEY, repository_id integer NOT NULL REFERENCES repository, digest varchar(255) NOT NULL, media_type_id integer NOT NULL REFERENCES mediatype, manifest_bytes text NOT NULL, config_media_type varchar(255), layers_compressed_size bigint, UNIQUE (repository_id, digest));
CREATE TABLE IF NOT EXISTS manifestblob (id serial PRIMARY KEY, repository_id integer NOT NULL REFERENCES repository, manifest_id integer NOT NULL REFERENCES manifest, blob_id integer NOT NULL REFERENCES imagestorage, UNIQUE (manifest_id, blob_id));
CREATE TABLE IF NOT EXISTS manifestchild (id serial PRIMARY KEY, repository_id integer NOT NULL REFERENCES repository, manifest_id integer NOT NULL REFERENCES manifest, child_manifest_id integer NOT NULL REFERENCES manifest, UNIQUE (manifest_id, child_manifest_id));
CREATE TABLE IF NOT EXISTS tag (id serial PRIMARY KEY, name varchar(255) NOT NULL, repository_id integer NOT NULL REFERENCES repository, manifest_id integer REFERENCES manifest, lifetime_start_ms bigint NOT NULL, lifetime_end_ms bigint, hidden boolean NOT NULL DEFAULT false, reversion boolean NOT NULL DEFAULT false, UNIQUE (repository_id, name, lifetime_end_ms));
CREATE TABLE IF NOT EXISTS uploadedblob (id serial PRIMARY KEY, repository_id integer NOT NULL REFERENCES repository, blob_id integer NOT NULL REFERENCES imagestorage, uploaded_at timestamp NOT NULL DEFAULT now(), expires_at timestamp NOT NULL);
CREATE TABLE IF NOT EXISTS blobupload (id serial PRIMARY KEY, repository_id integer NOT NULL REFERENCES repository, uuid varchar(255) NOT NULL UNIQUE, byte_count bigint NOT NULL DEFAULT 0, chunk_count integer NOT NULL DEFAULT 0, created timestamp NOT NULL DEFAULT now());
INSERT INTO mediatype (name) VALUES ${QUAY_MEDIA_TYPES.map((t) => `('${t}')`).join(', ')} ON CONFLICT DO NOTHING;
`;

/** A SQL string literal. */
export const literal = (text: string) => `'${text.replaceAll("'", "''")}'`;

/** Makes database `database` if it is missing and gives it Quay's tables (as Quay's migrations do at start). */
export async function ensureQuaySchema(postgres: PostgresHandle, database: string): Promise<void> {
  const exists = await postgres.sql(
    'postgres',
    `SELECT 1 FROM pg_database WHERE datname = ${literal(database)};`,
  );
  if (exists.trim() === '')
    await postgres.sql('postgres', `CREATE DATABASE "${database.replaceAll('"', '""')}";`);
  await postgres.sql(database, SCHEMA);
}

/** SQL that gives `namespace/repository` its rows (namespace and repository) unless it has them. */
export function ensureRepositorySql(namespace: string, repository: string): string {
  return `INSERT INTO "user" (username) VALUES (${literal(namespace)}) ON CONFLICT DO NOTHING;
INSERT INTO repository (namespace_user_id, name)
  VALUES ((SELECT id FROM "user" WHERE username = ${literal(namespace)}), ${literal(repository)}) ON CONFLICT DO NOTHING;`;
}

/** The id of `namespace/repository`, as a subquery. */
export function repositoryIdSql(namespace: string, repository: string): string {
  return `(SELECT r.id FROM repository r JOIN "user" u ON u.id = r.namespace_user_id WHERE u.username = ${literal(namespace)} AND r.name = ${literal(repository)})`;
}

/**
 * Adds `images` to database `database` as rows only (no bucket): Quay's rows
 * for blobs the bucket may not hold, for tests of what a backup does then.
 */
export async function seedQuayDatabase(
  postgres: PostgresHandle,
  database: string,
  images: readonly QuayImage[],
): Promise<void> {
  await ensureQuaySchema(postgres, database);
  const rows: string[] = ['BEGIN;'];
  for (const image of images) {
    const repository = repositoryIdSql(image.namespace, image.repository);
    rows.push(
      ensureRepositorySql(image.namespace, image.repository),
      `INSERT INTO manifest (repository_id, digest, media_type_id, manifest_bytes)
         VALUES (${repository}, ${literal(image.manifestDigest)},
                 (SELECT id FROM mediatype WHERE name = ${literal(QUAY_MEDIA_TYPES[0])}), '{}') ON CONFLICT DO NOTHING;`,
    );
    const manifest = `(SELECT id FROM manifest WHERE repository_id = ${repository} AND digest = ${literal(image.manifestDigest)})`;
    for (const blob of image.blobs)
      rows.push(
        `INSERT INTO imagestorage (content_checksum, image_size, uploading)
           SELECT ${literal(blob.digest)}, ${blob.size}, false
            WHERE NOT EXISTS (SELECT 1 FROM imagestorage WHERE content_checksum = ${literal(blob.digest)});`,
        `INSERT INTO manifestblob (repository_id, manifest_id, blob_id)
           VALUES (${repository}, ${manifest}, (SELECT min(id) FROM imagestorage WHERE content_checksum = ${literal(blob.digest)})) ON CONFLICT DO NOTHING;`,
      );
    rows.push(
      `UPDATE tag SET lifetime_end_ms = (extract(epoch FROM clock_timestamp()) * 1000)::bigint
         WHERE repository_id = ${repository} AND name = ${literal(image.tag)} AND lifetime_end_ms IS NULL;`,
      `INSERT INTO tag (name, repository_id, manifest_id, lifetime_start_ms) VALUES (${literal(image.tag)}, ${repository}, ${manifest}, (extract(epoch FROM clock_timestamp()) * 1000)::bigint + 1);`,
    );
  }
  rows.push('COMMIT;');
  await postgres.sql(database, rows.join('\n'));
}

/** Every live tag with its manifest and the blob digests it needs, one line each, sorted. */
export async function quayRows(postgres: PostgresHandle, database: string): Promise<string[]> {
  const out = await postgres.sql(
    database,
    `SELECT u.username || '/' || r.name || ':' || t.name || ' ' || m.digest || ' ' ||
            string_agg(s.content_checksum || '=' || s.image_size, ',' ORDER BY s.content_checksum)
       FROM tag t JOIN repository r ON r.id = t.repository_id
       JOIN "user" u ON u.id = r.namespace_user_id
       JOIN manifest m ON m.id = t.manifest_id
       JOIN manifestblob mb ON mb.manifest_id = m.id
       JOIN imagestorage s ON s.id = mb.blob_id
      WHERE t.lifetime_end_ms IS NULL AND NOT t.hidden
      GROUP BY u.username, r.name, t.name, m.digest
      ORDER BY 1;`,
  );
  return out.split('\n').filter((line) => line !== '');
}
