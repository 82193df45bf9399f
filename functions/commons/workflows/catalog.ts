/**
 * What a backup's finalize learns from its records alone: the catalog
 * (repository -> tag -> manifest digest) and the reference check. Neither
 * re-reads what the workers just copied (docs/integrity.md).
 */
import PQueue from 'p-queue';
import type { InventoryRecord } from '../copy/model.ts';
import { REGISTRY_V2 } from '../registry/layout.ts';
import { catalogSchema, type SnapshotCatalog, vaultKeys } from '../vault/format.ts';
import { getBytes, getJson, rootOf } from '../vault/store.ts';
import type { BackupState } from './backup.ts';
import type { WorkflowDeps } from './deps.ts';

const TAG_LINK = /^repositories\/(.+)\/_manifests\/tags\/([^/]+)\/current\/link$/;
const TAG_INDEX =
  /^repositories\/(.+)\/_manifests\/tags\/([^/]+)\/index\/sha256\/([0-9a-f]{64})\/link$/;
const LAYER_LINK = /^repositories\/(.+)\/_layers\/sha256\/([0-9a-f]{64})\/link$/;
const REVISION_LINK = /^repositories\/(.+)\/_manifests\/revisions\/sha256\/([0-9a-f]{64})\/link$/;

/** Repository -> tag -> digest, read from the tag links the backup copied. */
/**
 * The catalog (repository -> tag -> manifest digest) without re-reading what
 * was just copied: a tag whose current link is unchanged since the previous
 * snapshot keeps that snapshot's digest; a tag with one index entry points
 * at it (the registry writes the index entry before the current link); only
 * a tag moved since (several index entries, a changed current link) has its
 * current link read, once.
 */
export async function buildCatalog(
  deps: WorkflowDeps,
  state: BackupState,
  records: readonly InventoryRecord[],
): Promise<{ catalog: SnapshotCatalog; reads: number }> {
  const base = `${state.source.prefix}${state.rootDirectory}${REGISTRY_V2}`;
  const previous =
    state.previousSnapshotId === undefined
      ? undefined
      : await getJson(
          deps.vault,
          vaultKeys.catalog(rootOf(deps.vault), state.previousSnapshotId),
          catalogSchema,
        );
  const before = new Map<string, string>();
  for (const repository of previous?.repositories ?? [])
    for (const [tag, digest] of Object.entries(repository.tags))
      before.set(`${repository.name}:${tag}`, digest);
  const indexes = new Map<string, string[]>();
  const currents: Array<{ repository: string; tag: string; record: InventoryRecord }> = [];
  for (const record of records) {
    const relative = record.key.slice(base.length);
    const index = TAG_INDEX.exec(relative);
    if (index?.[1] !== undefined && index[2] !== undefined && index[3] !== undefined) {
      const name = `${index[1]}:${index[2]}`;
      indexes.set(name, [...(indexes.get(name) ?? []), `sha256:${index[3]}`]);
      continue;
    }
    const current = TAG_LINK.exec(relative);
    if (current?.[1] !== undefined && current[2] !== undefined)
      currents.push({ repository: current[1], tag: current[2], record });
  }
  const repositories = new Map<string, Record<string, string>>();
  const reads = new PQueue({ concurrency: 32 });
  let read = 0;
  await Promise.all(
    currents.map(async ({ repository, tag, record }) => {
      const name = `${repository}:${tag}`;
      const index = indexes.get(name) ?? [];
      let digest = record.copied ? undefined : before.get(name);
      if (digest === undefined && index.length === 1) digest = index[0];
      if (digest === undefined) {
        read++;
        const body = await reads.add(() => getBytes(deps.vault, record.targetKey));
        digest = (body ?? Buffer.alloc(0)).toString('utf8').trim();
      }
      const tags = repositories.get(repository) ?? {};
      tags[tag] = digest;
      repositories.set(repository, tags);
    }),
  );
  return {
    reads: read,
    catalog: {
      repositories: [...repositories.entries()]
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([name, tags]) => ({
          name,
          tags: Object.fromEntries(Object.entries(tags).sort(([a], [b]) => a.localeCompare(b))),
        })),
    },
  };
}

/**
 * The reference check, from the inventory alone (no read): every tag's
 * manifest has a revision link and a blob in the snapshot, every revision
 * link and every layer link has its blob. Manifests are not parsed here (a
 * full backup would read one object in eleven again); the restore's proof and
 * `regvault fsck` read them.
 */
export function referenceCheck(
  state: BackupState,
  records: readonly InventoryRecord[],
  catalog: SnapshotCatalog,
): { ok: boolean; detail: string } {
  const base = `${state.source.prefix}${state.rootDirectory}${REGISTRY_V2}`;
  const keys = new Set(records.map((r) => r.key.slice(base.length)));
  const blobKey = (hex: string) => `blobs/sha256/${hex.slice(0, 2)}/${hex}/data`;
  const dangling: string[] = [];
  for (const repository of catalog.repositories) {
    for (const [tag, digest] of Object.entries(repository.tags)) {
      const hex = digest.replace(/^sha256:/, '');
      if (!keys.has(`repositories/${repository.name}/_manifests/revisions/sha256/${hex}/link`))
        dangling.push(`${repository.name}:${tag} (revision link)`);
      if (!keys.has(blobKey(hex)))
        dangling.push(`${repository.name}:${tag} (manifest blob ${digest})`);
    }
  }
  let layerLinks = 0;
  for (const key of keys) {
    const revision = REVISION_LINK.exec(key);
    if (revision?.[2] !== undefined && !keys.has(blobKey(revision[2])))
      dangling.push(`${revision[1]}@sha256:${revision[2]} (manifest blob)`);
    const layer = LAYER_LINK.exec(key);
    if (layer?.[2] === undefined) continue;
    layerLinks++;
    if (!keys.has(blobKey(layer[2]))) dangling.push(`${layer[1]} layer sha256:${layer[2]} (blob)`);
  }
  return dangling.length === 0
    ? {
        ok: true,
        detail: `${catalog.repositories.length} repositories: every tag leads to a revision link and a manifest blob, and all ${layerLinks} layer links to blobs, in the snapshot`,
      }
    : {
        ok: false,
        detail: `${dangling.length} dangling references, e.g. ${dangling.slice(0, 5).join(', ')}`,
      };
}
