/**
 * What Quay's database says the registry serves: its live tags, the
 * manifest each points at and the blobs that manifest needs, read with psql
 * through pods/exec in the postgres pod (as the dump is). Table and column
 * names are Quay's (data/database.py): `tag` (lifetime_end_ms, hidden),
 * `repository` (namespace_user_id -> "user".username), `manifest` (digest),
 * `manifestblob` and `manifestchild` (an index's manifests), `imagestorage`
 * (content_checksum).
 */
import type { KubeConfig } from '@kubernetes/client-node';
import { type PodTarget, podText } from '../cluster/exec.ts';
import { ClusterError } from '../errors.ts';
import type { DatabaseTag } from './profile.ts';

/**
 * One row per live tag and blob its manifest needs (directly, or through the
 * manifests an index lists): `namespace/name|tag|manifest digest|blob digest`
 * (the blob empty for a manifest that needs none).
 */
export const LIVE_TAGS_SQL = `
SELECT u.username || '/' || r.name, t.name, m.digest, COALESCE(s.content_checksum, '')
  FROM tag t
  JOIN repository r ON r.id = t.repository_id
  JOIN "user" u ON u.id = r.namespace_user_id
  JOIN manifest m ON m.id = t.manifest_id
  LEFT JOIN (
        SELECT manifest_id AS top, blob_id FROM manifestblob
        UNION
        SELECT mc.manifest_id, mb.blob_id
          FROM manifestchild mc JOIN manifestblob mb ON mb.manifest_id = mc.child_manifest_id
       ) needs ON needs.top = m.id
  LEFT JOIN imagestorage s ON s.id = needs.blob_id
 WHERE NOT t.hidden
   AND (t.lifetime_end_ms IS NULL OR t.lifetime_end_ms > (extract(epoch FROM now()) * 1000)::bigint)
 ORDER BY 1, 2, 4;`;

/** The tags of psql's unaligned rows (`-A -t`, fields split by `|`). */
export function parseLiveTags(text: string): DatabaseTag[] {
  const tags = new Map<
    string,
    { repository: string; tag: string; manifest: string; blobs: string[] }
  >();
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const [repository = '', tag = '', manifest = '', blob = ''] = line.split('|');
    const key = `${repository}:${tag}`;
    const known = tags.get(key) ?? { repository, tag, manifest, blobs: [] };
    if (blob !== '') known.blobs.push(blob);
    tags.set(key, known);
  }
  return [...tags.values()];
}

/** The live tags of `database`, read in `pod` (Quay quiesced, so they stay so). */
export async function readLiveTags(
  kc: KubeConfig,
  pod: PodTarget,
  database: string,
): Promise<DatabaseTag[]> {
  try {
    const text = await podText(kc, pod, [
      'psql',
      '-d',
      database,
      '-X',
      '-A',
      '-t',
      '-v',
      'ON_ERROR_STOP=1',
      '-c',
      LIVE_TAGS_SQL,
    ]);
    return parseLiveTags(text);
  } catch (err) {
    throw new ClusterError(
      `could not read Quay's live tags from database ${database} in pod ${pod.namespace}/${pod.pod}: ${err instanceof Error ? err.message : String(err)}`,
      { cause: err },
    );
  }
}
