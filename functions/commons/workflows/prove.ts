/**
 * The restore's proof, before the registry is switched: every snapshot object
 * is in the target at its size; every tag of the target leads to manifests
 * and blobs the target holds; every blob holds the bytes its digest names
 * (checked by the copy itself where the server returned its SHA-256 or the
 * copy streamed, hashed here otherwise). A problem is traced back to the
 * vault, so the message says whether the vault's copy or the target's is bad.
 */
import { createHash } from 'node:crypto';
import PQueue from 'p-queue';
import { type Failure, type InventoryRecord, PAGE_SIZE } from '../copy/model.ts';
import { ListedTarget } from '../copy/target-state.ts';
import { messageOf, ObjectsFailedError, VaultError } from '../errors.ts';
import { blobLayoutOf, DISTRIBUTION_LAYOUT, layoutBase } from '../registry/blob-layout.ts';
import { type FsckReport, fsckRegistry } from '../registry/fsck.ts';
import { DigestSet } from '../registry/fsck-layout.ts';
import { bucketSource, objectReader } from '../registry/fsck-sources.ts';
import { selectionText } from '../registry/selection.ts';
import type { SnapshotManifest } from '../vault/format.ts';
import { findRecords } from '../vault/inventory-lookup.ts';
import { listRunRecordFiles, readShardRecords, saveProof } from '../vault/runs.ts';
import { snapshotSource, unbackedInSnapshot, unheldRecords } from '../vault/snapshot-source.ts';
import { readInventoryPart, resolveSnapshot, type Vault } from '../vault/store.ts';
import type { WorkflowDeps } from './deps.ts';
import { BlobHasher } from './prove-hash.ts';
import type { RestoreState } from './restore.ts';

export interface ProveOutput {
  readonly ok: true;
  /** False when blob hashing was skipped on request: the restore is then not proven. */
  readonly proven: boolean;
  readonly expected: number;
  readonly found: number;
  readonly blobs: {
    readonly total: number;
    /** Checked against their digest by the copy (the server's SHA-256, or hashed while streaming). */
    readonly checkedByCopy: number;
    /** Read back from the target and hashed here. */
    readonly hashed: number;
    readonly hashedBytes: number;
  };
  readonly tags: number;
  readonly message: string;
}

/** Lines of a refusal before the rest is counted. */
const SHOWN = 10;

/** What to do about a snapshot whose vault copy is damaged. */
const nextForDamaged = (snapshotId: string) =>
  `Next: run \`regvault fsck --deep --snapshot ${snapshotId}\` to see every damaged object of the snapshot, or restore an older snapshot (\`regvault snapshots list\`).`;

/**
 * Before a restore writes anything: the snapshot's objects are all in the
 * vault at their sizes and, for a registry, every tag leads to manifests and
 * blobs the snapshot holds (fsck's plain check, which reads tag links and
 * manifests, never a layer). Throws a VaultError naming each problem.
 */
export async function proveSnapshotHeld(vault: Vault, manifest: SnapshotManifest): Promise<string> {
  let problems: string[];
  let objects: number;
  if (manifest.layout === 'registry') {
    const report = await fsckRegistry(snapshotSource(vault, manifest));
    problems = report.ok ? [] : report.problems;
    objects = report.counts.objects;
  } else {
    const unbacked = await unbackedInSnapshot(vault, manifest, '');
    problems = unbacked.map((u) =>
      u.actualSize === undefined
        ? `missing in the vault: ${u.key}`
        : `corrupt in the vault: ${u.key} is ${u.actualSize} bytes where ${u.expectedSize} were recorded`,
    );
    objects = manifest.counts.objects;
  }
  if (problems.length > 0)
    throw new VaultError(
      [
        `snapshot ${manifest.id} fails fsck's plain check, so nothing was written (the target and the vault's runs/ are as they were):`,
        ...problems.slice(0, SHOWN).map((line) => `  - ${line}`),
        ...(problems.length > SHOWN ? [`  - ... and ${problems.length - SHOWN} more`] : []),
        nextForDamaged(manifest.id),
      ].join('\n'),
    );
  const partial =
    manifest.selection === undefined
      ? ''
      : `; PARTIAL: it holds only the repositories ${selectionText(manifest.selection)}, and the restored registry will hold no other`;
  return `snapshot held in the vault, its references resolving (${objects} objects)${partial}`;
}

/** What a problem in the target comes from, found by looking at the vault object it was copied from. */
type Blame = 'missing in the vault' | 'corrupt in the vault' | 'in the target';

/**
 * Step: prove the target before the switch; otherwise throws, naming every
 * problem, an ObjectsFailedError when the copy failed on objects, else a VaultError.
 */
export async function proveRestore(state: RestoreState, deps: WorkflowDeps): Promise<ProveOutput> {
  const manifest = await resolveSnapshot(deps.vault, state.snapshotId);
  const client = await deps.s3(state.target);
  const targetKeyOf = (record: InventoryRecord) =>
    `${state.target.prefix}${record.key.slice(manifest.source.prefix.length)}`;
  const sourceKeyOf = (targetKey: string) =>
    `${manifest.source.prefix}${targetKey.slice(state.target.prefix.length)}`;

  const layout = blobLayoutOf(state.layout) ?? DISTRIBUTION_LAYOUT;
  const registryBase = `${state.target.prefix}${layoutBase(layout, state.rootDirectory)}`;
  const digestOf = (targetKey: string) =>
    targetKey.startsWith(registryBase)
      ? layout.digestOf(targetKey.slice(registryBase.length))
      : undefined;
  const run = await restoreRunFacts(deps.vault, state.runId, digestOf);
  const checkedByCopy = run.verifiedDigests;
  let hashedBytes = 0;

  // 1. Every object at its size: a part of the inventory at a time, each page
  // of its records against a listing of the page's key range in the target.
  // Quay's blobs the copy did not check against their digest are hashed here
  // (its references are in its database, which the verification reads).
  const suspects = new Map<string, string>();
  const listed = new ListedTarget(client, state.target.bucket);
  const quay =
    state.layout === 'quay' && !state.skipBlobHashing
      ? new BlobHasher(client, state.target.bucket, Math.min(32, state.concurrency))
      : undefined;
  const objects = await eachInventoryPage(deps.vault, manifest, async (records) => {
    const unheld = await unheldRecords(listed, records, targetKeyOf);
    for (const { record, targetKey, size } of unheld)
      suspects.set(
        targetKey,
        size === undefined
          ? 'missing in the target'
          : `${size} bytes in the target where ${record.size} were recorded`,
      );
    if (quay === undefined) return;
    const bad = new Set(unheld.map((u) => u.targetKey));
    for (const record of records) {
      const targetKey = targetKeyOf(record);
      const digest = digestOf(targetKey);
      if (digest !== undefined && !bad.has(targetKey) && !checkedByCopy.has(digest))
        quay.check(targetKey, digest);
    }
  });
  if (quay !== undefined) {
    for (const corrupt of await quay.done()) suspects.set(corrupt.key, `holds ${corrupt.actual}`);
    hashedBytes = quay.bytes;
  }
  // 2. The registry layout: references resolve, blobs hash to their digests.
  let report: FsckReport | undefined;
  if (state.layout === 'registry') {
    report = await fsckRegistry(
      bucketSource(
        client,
        state.target.bucket,
        `${state.target.prefix}${state.rootDirectory}`,
        'the target',
      ),
      {
        deep: !state.skipBlobHashing,
        alreadyHashed: (digest) => checkedByCopy.has(digest),
        concurrency: Math.min(32, state.concurrency),
        onHash: (done, total) => {
          hashedBytes = done.bytes;
          deps.progress?.({
            step: 'prove',
            blobs: { done: done.blobs, total: total.blobs },
            bytes: { done: done.bytes, total: total.bytes },
          });
        },
      },
    );
    for (const missing of report.dangling)
      if (missing.digest !== undefined)
        suspects.set(`${registryBase}${missing.to}`, missing.reason);
    for (const corrupt of report.corruptBlobs)
      suspects.set(`${registryBase}${layout.keyOf(corrupt.digest)}`, `holds ${corrupt.actual}`);
  }

  if (suspects.size > 0 || (report !== undefined && !report.ok)) {
    const users = usersOf(report);
    const failures = new Map(run.failures.map((failure) => [failure.key, failure]));
    const lines: string[] = [];
    const shown = [...suspects].slice(0, SHOWN);
    const records = await findRecords(
      deps.vault,
      manifest,
      shown.map(([key]) => sourceKeyOf(key)),
    );
    for (const [key, found] of shown) {
      const record = records.get(sourceKeyOf(key));
      const digest = digestOf(key);
      // Quay's references are in its database, which no report here reads.
      const who =
        digest === undefined || state.layout === 'quay'
          ? ''
          : `; needed by ${(users.get(digest) ?? ['no tag']).slice(0, 3).join(', ')}`;
      const what = digest === undefined ? key : `blob ${digest}`;
      if (record === undefined) {
        lines.push(
          `in the target: ${what} ${found}, and the snapshot's inventory does not list it${who}`,
        );
        continue;
      }
      const failure = failures.get(record.targetKey);
      const blame = await blameOf(deps.vault, record, digest, failure?.message);
      const copy =
        failure === undefined ? 'the copy went wrong' : `the copy failed with ${failure.code}`;
      const detail =
        blame === 'in the target'
          ? `(${found}; the vault's copy at vault key ${record.targetKey} is sound: ${copy}; re-run the restore into this bucket with --allow-non-empty)`
          : `(vault key ${record.targetKey})${failure === undefined ? '' : `: ${copy}`}`;
      lines.push(
        `${blame === 'in the target' ? 'corrupt or missing in the target' : blame}: ${what} ${detail}${who}`,
      );
    }
    const more = suspects.size > SHOWN ? [`... and ${suspects.size - SHOWN} more`] : [];
    // What the lines above do not already name (a missing link, a bad tag link).
    const named = [...suspects.keys()].map((key) => digestOf(key) ?? key);
    const other = (report?.problems ?? []).filter((line) => !named.some((n) => line.includes(n)));
    // Objects the copy failed on make the restore partial; a sound copy of a damaged snapshot fails it.
    const Failure = run.failures.length > 0 ? ObjectsFailedError : VaultError;
    throw new Failure(
      [
        `snapshot ${state.snapshotId} could not be proven in s3://${state.target.bucket}/${state.target.prefix}, so the registry was not switched:`,
        ...[...lines, ...more, ...other.slice(0, 5)].map((line) => `  - ${line}`),
        nextForDamaged(state.snapshotId),
      ].join('\n'),
    );
  }

  const blobs =
    report?.counts.blobs ??
    manifest.inventory.parts.filter((p) => p.kind === 'blobs').reduce((n, p) => n + p.records, 0);
  const hashed = report?.counts.blobsVerified ?? quay?.hashed ?? 0;
  const proof: ProveOutput = {
    ok: true,
    proven: !state.skipBlobHashing,
    expected: objects,
    found: objects,
    blobs: {
      total: blobs,
      checkedByCopy: checkedByCopy.size,
      hashed,
      hashedBytes,
    },
    tags: report?.counts.tags ?? (state.layout === 'quay' ? manifest.counts.tags : 0),
    message: state.skipBlobHashing
      ? `${objects} objects present at their sizes and every reference resolves; blob content NOT proven (--skip-blob-hashing)`
      : `${objects} objects present; every tag resolves; ${blobs} blobs hold their digests (${checkedByCopy.size} checked by the copy, ${hashed} hashed)`,
  };
  // The run's record of what was proven (and whether blob content was skipped).
  await saveProof(deps.vault, state.runId, proof);
  return proof;
}

/** Inventory parts read at once while proving: each is at most 10,000 records. */
const PARTS_AT_ONCE = 4;

/**
 * Calls `each` with every record of the snapshot's inventory, a page (1,000
 * records, in key order) at a time, a few parts at once; returns how many
 * records there were. Holds a few parts, never the inventory.
 */
async function eachInventoryPage(
  vault: Vault,
  manifest: SnapshotManifest,
  each: (records: readonly InventoryRecord[]) => Promise<void>,
): Promise<number> {
  const queue = new PQueue({ concurrency: PARTS_AT_ONCE });
  let count = 0;
  await Promise.all(
    manifest.inventory.parts.map((part, index) =>
      queue.add(async () => {
        if (part.records === 0) return;
        const records = await readInventoryPart(vault, manifest, index);
        count += records.length;
        for (let at = 0; at < records.length; at += PAGE_SIZE)
          await each(records.slice(at, at + PAGE_SIZE));
      }),
    ),
  );
  return count;
}

/**
 * What a restore's copy workers wrote, as the proof needs it: the blobs the
 * copy checked against their digest (held as their bytes), and the failures. Read a part's
 * record files at a time.
 */
async function restoreRunFacts(
  vault: Vault,
  runId: string,
  digestOf: (targetKey: string) => string | undefined,
): Promise<{ verifiedDigests: DigestSet; failures: Failure[] }> {
  const verifiedDigests = new DigestSet();
  const failures: Failure[] = [];
  for (const files of (await listRunRecordFiles(vault, runId)).values()) {
    const shard = await readShardRecords(vault, files);
    for (const record of shard.records) {
      if (record.verified === undefined || record.verified === 'unverified') continue;
      const digest = digestOf(record.targetKey);
      if (digest !== undefined) verifiedDigests.add(digest);
    }
    failures.push(...shard.failures);
  }
  return { verifiedDigests, failures };
}

function usersOf(report: FsckReport | undefined): Map<string, string[]> {
  const users = new Map<string, string[]>();
  for (const item of [...(report?.corruptBlobs ?? []), ...(report?.dangling ?? [])]) {
    if (item.digest !== undefined && item.usedBy !== undefined && item.usedBy.length > 0)
      users.set(item.digest, item.usedBy);
  }
  return users;
}

/**
 * Whether the vault object a target object came from is missing, corrupt, or
 * sound: read through fsck's object reader (missing is `undefined`), counted
 * and, for a blob, hashed as it streams.
 */
async function blameOf(
  vault: Vault,
  record: InventoryRecord,
  digest: string | undefined,
  failure: string | undefined,
): Promise<Blame> {
  if (failure !== undefined && /does not hash to|DigestMismatch/.test(failure))
    return 'corrupt in the vault';
  let body: AsyncIterable<Uint8Array> | undefined;
  try {
    body = await objectReader(vault.client, vault.location.bucket).open(record.targetKey);
  } catch (err) {
    throw new VaultError(`cannot read vault key ${record.targetKey}: ${messageOf(err)}`, {
      cause: err,
    });
  }
  if (body === undefined) return 'missing in the vault';
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of body) {
    size += chunk.byteLength;
    hash.update(chunk);
  }
  if (size !== record.size) return 'corrupt in the vault';
  if (digest === undefined) return 'in the target';
  return `sha256:${hash.digest('hex')}` === digest ? 'in the target' : 'corrupt in the vault';
}
