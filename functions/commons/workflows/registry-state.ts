/**
 * A registry that keeps state beside its bucket (Quay's database), inside
 * the existing steps: discover quiesces the registry (its undo record in the
 * run's files first) and streams the database dump into the snapshot;
 * finalize, and every failure path, resumes exactly what was stopped; the
 * restore's switch gives the profile the snapshot's files and dump.
 */
import { z } from 'zod';
import { messageOf } from '../errors.ts';
import type {
  CapturedFile,
  DatabaseDump,
  DatabaseLoad,
  DatabaseTag,
  QuiesceRecord,
} from '../registry/profile.ts';
import { type DatabaseDumpRecord, type SnapshotManifest, vaultKeys } from '../vault/format.ts';
import { databaseBeforeKeys, databaseTagsKey, quiesceKey } from '../vault/runs.ts';
import { getBytes, getJson, putJson, rootOf } from '../vault/store.ts';
import { downloadStream, uploadStream } from '../vault/stream-upload.ts';
import type { WorkflowDeps } from './deps.ts';

const quiesceFileSchema = z.object({
  summary: z.string(),
  undo: z.unknown(),
  resumed: z.boolean(),
});

const digest = z.string().regex(/^sha256:[0-9a-f]{64}$/);
const databaseTagsSchema = z.object({
  tags: z.array(
    z.object({
      repository: z.string().min(1),
      tag: z.string().min(1),
      manifest: digest,
      blobs: z.array(digest),
    }),
  ),
});

/** The live tags the run read from the registry's database; undefined when it read none. */
export async function databaseTagsOf(
  runId: string,
  deps: WorkflowDeps,
): Promise<DatabaseTag[] | undefined> {
  return (await getJson(deps.vault, databaseTagsKey(deps.vault, runId), databaseTagsSchema))?.tags;
}

/**
 * Stops the registry's writers as `plan` says (recorded before anything
 * changes) and streams its database into the snapshot; the dump's record.
 */
export async function quiesceAndDump(
  run: { readonly runId: string; readonly snapshotId: string },
  plan: QuiesceRecord,
  deps: WorkflowDeps,
): Promise<DatabaseDumpRecord | undefined> {
  await putJson(deps.vault, quiesceKey(deps.vault, run.runId), { ...plan, resumed: false });
  const profile = deps.profile();
  await profile.quiesce?.(plan);
  deps.log.info('registry quiesced', { runId: run.runId, what: plan.summary });
  const dump = await profile.dumpDatabase?.();
  if (dump === undefined) return undefined;
  const key = vaultKeys.database(rootOf(deps.vault), run.snapshotId, dump.database);
  const written = await uploadStream(deps.vault, key, 'application/sql', dump.stream);
  await dump.finished;
  deps.log.info('database dumped into the snapshot', {
    runId: run.runId,
    database: dump.database,
    bytes: written.bytes,
  });
  // Read while still quiesced: the tags and the dump say the same.
  const tags = profile.bucketLayout === 'quay' ? await profile.databaseTags?.() : undefined;
  if (tags !== undefined) {
    await putJson(deps.vault, databaseTagsKey(deps.vault, run.runId), { tags });
    deps.log.info('live tags read from the database', { runId: run.runId, tags: tags.length });
  }
  return { name: dump.database, bytes: written.bytes, sha256: written.sha256 };
}

/**
 * Undoes the run's quiesce, if it made one that is not undone yet: a check
 * for the manifest (undefined when the run stopped nothing). Safe to call
 * from every path, any number of times.
 */
export async function resumeRegistry(
  runId: string,
  deps: WorkflowDeps,
): Promise<{ ok: boolean; detail: string } | undefined> {
  const key = quiesceKey(deps.vault, runId);
  const recorded = await getJson(deps.vault, key, quiesceFileSchema);
  if (recorded === undefined) return undefined;
  if (recorded.resumed) return { ok: true, detail: `${recorded.summary}; resumed` };
  try {
    const said = await deps
      .profile()
      .unquiesce?.({ summary: recorded.summary, undo: recorded.undo });
    await putJson(deps.vault, key, { ...recorded, resumed: true });
    deps.log.info('registry resumed', { runId, what: recorded.summary });
    return { ok: true, detail: `${recorded.summary}; ${said ?? 'resumed'}` };
  } catch (err) {
    deps.log.warn('the registry could not be resumed', { runId, error: messageOf(err) });
    return {
      ok: false,
      detail: `the registry was quiesced (${recorded.summary}) and could NOT be resumed: ${messageOf(err)}; undo it by hand (the record is ${key})`,
    };
  }
}

/** The snapshot's captured files (cluster/), for a profile that restores the registry itself. */
export async function snapshotFiles(
  manifest: SnapshotManifest,
  deps: WorkflowDeps,
): Promise<CapturedFile[]> {
  const root = rootOf(deps.vault);
  const files: CapturedFile[] = [];
  for (const name of manifest.clusterFiles) {
    const bytes = await getBytes(deps.vault, vaultKeys.cluster(root, manifest.id, name));
    if (bytes !== undefined) files.push({ name, yaml: bytes.toString('utf8') });
  }
  return files;
}

/** The snapshot's database dump as a stream, its SHA-256 checked at its end. */
export function openDump(manifest: SnapshotManifest, deps: WorkflowDeps, dump: DatabaseDumpRecord) {
  return async () =>
    downloadStream(
      deps.vault,
      vaultKeys.database(rootOf(deps.vault), manifest.id, dump.name),
      dump.sha256,
    );
}

const databaseBeforeSchema = z.object({
  name: z.string(),
  bytes: z.number(),
  sha256: z.string(),
  restored: z.boolean(),
});

/**
 * Streams the target's database, as it is before the restore loads the
 * snapshot's, into the run's files (no local file, as the backup's dump);
 * a run that kept one already keeps it, since a retried step would now
 * dump what the first attempt loaded.
 */
export async function saveDatabaseBefore(
  runId: string,
  database: string,
  dump: () => DatabaseDump,
  deps: WorkflowDeps,
): Promise<void> {
  const keys = databaseBeforeKeys(deps.vault, runId);
  if ((await getJson(deps.vault, keys.record, databaseBeforeSchema)) !== undefined) return;
  const started = dump();
  const written = await uploadStream(deps.vault, keys.dump, 'application/sql', started.stream);
  await started.finished;
  await putJson(deps.vault, keys.record, {
    name: database,
    bytes: written.bytes,
    sha256: written.sha256,
    restored: false,
  });
  deps.log.info('database kept before the restore replaces it', {
    runId,
    database,
    bytes: written.bytes,
  });
}

/**
 * On a failed restore: loads back the database the run kept before it
 * replaced it (its SHA-256 checked as it streams), once, with `load` (by
 * default the profile's, which quiesces the registry around it). Says what
 * it did, or undefined when the run kept none (nothing was replaced, or
 * nothing was there).
 */
export async function loadDatabaseBefore(
  runId: string,
  deps: WorkflowDeps,
  load?: DatabaseLoad,
): Promise<{ ok: boolean; detail: string } | undefined> {
  const keys = databaseBeforeKeys(deps.vault, runId);
  const record = await getJson(deps.vault, keys.record, databaseBeforeSchema);
  if (record === undefined) return undefined;
  const done = `database ${record.name} put back as it was before the restore (${record.bytes} bytes)`;
  // Put back by the failed step itself (still quiesced), or by an earlier attempt of this path.
  if (record.restored) return { ok: true, detail: done };
  try {
    const open = async () => downloadStream(deps.vault, keys.dump, record.sha256);
    if (load !== undefined) await load(record.name, open);
    else await deps.profile().loadDatabase?.(record.name, open);
  } catch (err) {
    deps.log.warn('the database could not be put back', { runId, error: messageOf(err) });
    return {
      ok: false,
      detail: `database ${record.name} could NOT be put back: ${messageOf(err)}; load ${keys.dump} with psql by hand`,
    };
  }
  await putJson(deps.vault, keys.record, { ...record, restored: true });
  deps.log.warn('database put back as it was before the restore', { runId, database: record.name });
  return { ok: true, detail: done };
}
