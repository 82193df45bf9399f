/**
 * The part of Quay's database a backup must keep consistent with the blobs:
 * repositories, the blobs (`imagestorage`, by content checksum), manifests,
 * which blobs each manifest needs (`manifestblob`) and tags. The table and
 * column names follow Quay's; what Quay keeps beside them (users, teams,
 * logs, ...) is left out. A restore that loses a row, or a blob a row names,
 * is caught by comparing `quayRows` and the blob digests it lists.
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

/** One small image, for tests that need rows but not many. */
export const ONE_IMAGE: QuayImage = {
  namespace: 'team',
  repository: 'web',
  tag: 'v1',
  manifestDigest: `sha256:${'a'.repeat(64)}`,
  blobs: [{ digest: `sha256:${'b'.repeat(64)}`, size: 10 }],
};

const SCHEMA = `
CREATE TABLE repository (id serial PRIMARY KEY, namespace text NOT NULL, name text NOT NULL, UNIQUE (namespace, name));
CREATE TABLE imagestorage (id serial PRIMARY KEY, content_checksum text NOT NULL UNIQUE, image_size bigint NOT NULL, uploading boolean NOT NULL DEFAULT false);
CREATE TABLE manifest (id serial PRIMARY KEY, repository_id integer NOT NULL REFERENCES repository, digest text NOT NULL, media_type text NOT NULL, UNIQUE (repository_id, digest));
CREATE TABLE manifestblob (id serial PRIMARY KEY, repository_id integer NOT NULL REFERENCES repository, manifest_id integer NOT NULL REFERENCES manifest, blob_id integer NOT NULL REFERENCES imagestorage, UNIQUE (manifest_id, blob_id));
CREATE TABLE tag (id serial PRIMARY KEY, name text NOT NULL, repository_id integer NOT NULL REFERENCES repository, manifest_id integer NOT NULL REFERENCES manifest, lifetime_end_ms bigint);
`;

/** A SQL string literal (the values here are names and digests, quoted anyway). */
const literal = (text: string) => `'${text.replaceAll("'", "''")}'`;

/** Makes database `database` with Quay's tables holding `images`. */
export async function seedQuayDatabase(
  postgres: PostgresHandle,
  database: string,
  images: readonly QuayImage[],
): Promise<void> {
  await postgres.sql('postgres', `CREATE DATABASE "${database}";`);
  const rows: string[] = [SCHEMA, 'BEGIN;'];
  for (const image of images) {
    const repository = `(SELECT id FROM repository WHERE namespace = ${literal(image.namespace)} AND name = ${literal(image.repository)})`;
    rows.push(
      `INSERT INTO repository (namespace, name) VALUES (${literal(image.namespace)}, ${literal(image.repository)}) ON CONFLICT DO NOTHING;`,
      `INSERT INTO manifest (repository_id, digest, media_type) VALUES (${repository}, ${literal(image.manifestDigest)}, 'application/vnd.oci.image.manifest.v1+json') ON CONFLICT DO NOTHING;`,
    );
    const manifest = `(SELECT id FROM manifest WHERE repository_id = ${repository} AND digest = ${literal(image.manifestDigest)})`;
    for (const blob of image.blobs)
      rows.push(
        `INSERT INTO imagestorage (content_checksum, image_size) VALUES (${literal(blob.digest)}, ${blob.size}) ON CONFLICT DO NOTHING;`,
        `INSERT INTO manifestblob (repository_id, manifest_id, blob_id) VALUES (${repository}, ${manifest}, (SELECT id FROM imagestorage WHERE content_checksum = ${literal(blob.digest)})) ON CONFLICT DO NOTHING;`,
      );
    rows.push(
      `INSERT INTO tag (name, repository_id, manifest_id) VALUES (${literal(image.tag)}, ${repository}, ${manifest});`,
    );
  }
  rows.push('COMMIT;');
  await postgres.sql(database, rows.join('\n'));
}

/** Every live tag with its manifest and the blob digests it needs, one line each, sorted. */
export async function quayRows(postgres: PostgresHandle, database: string): Promise<string[]> {
  const out = await postgres.sql(
    database,
    `SELECT r.namespace || '/' || r.name || ':' || t.name || ' ' || m.digest || ' ' ||
            string_agg(s.content_checksum || '=' || s.image_size, ',' ORDER BY s.content_checksum)
       FROM tag t JOIN repository r ON r.id = t.repository_id
       JOIN manifest m ON m.id = t.manifest_id
       JOIN manifestblob mb ON mb.manifest_id = m.id
       JOIN imagestorage s ON s.id = mb.blob_id
      WHERE t.lifetime_end_ms IS NULL
      GROUP BY r.namespace, r.name, t.name, m.digest
      ORDER BY 1;`,
  );
  return out.split('\n').filter((line) => line !== '');
}
