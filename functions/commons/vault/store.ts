/**
 * Reading and writing the vault: JSON documents, gzip'd JSON-lines record
 * files, the snapshot inventory (one file of gzip members, read part by part
 * with ranged GETs) and snapshot lookup.
 */
import { promisify } from 'node:util';
import { gunzip, gzip } from 'node:zlib';
import {
  AbortMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectLockConfigurationCommand,
  ListObjectsV2Command,
  type ListObjectsV2CommandOutput,
  PutObjectCommand,
  type S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import type { z } from 'zod';
import type { Location } from '../copy/model.ts';
import { cleanEtag, type InventoryRecord, inventoryRecordSchema } from '../copy/model.ts';
import { completeMultipart } from '../copy/multipart.ts';
import { issueLines, VaultError } from '../errors.ts';
import { md5Base64 } from '../s3/fast-copy.ts';
import { getObjectBytes } from '../s3/get-object.ts';
import { type SnapshotManifest, snapshotManifestSchema, vaultKeys, vaultRoot } from './format.ts';

const gzipAsync = promisify(gzip);
const gunzipAsync = promisify(gunzip);

/** A vault: where it is and a client that can read and write it. */
export interface Vault {
  readonly location: Location;
  readonly client: S3Client;
}

/** The vault's key root ('' or 'prefix/'). */
export const rootOf = (vault: Vault): string => vaultRoot(vault.location.prefix);

function isMissing(err: unknown): boolean {
  const name = typeof err === 'object' && err !== null && 'name' in err ? String(err.name) : '';
  return name === 'NoSuchKey' || name === 'NotFound';
}

export async function putBytes(
  vault: Vault,
  key: string,
  body: Uint8Array,
  contentType: string,
): Promise<void> {
  await vault.client.send(
    new PutObjectCommand({
      Bucket: vault.location.bucket,
      Key: key,
      Body: body,
      ContentType: contentType,
      ContentLength: body.byteLength,
      // A vault with Object Lock default retention refuses uploads without it.
      ...(vault.location.contentMd5 === true ? { ContentMD5: md5Base64(body) } : {}),
    }),
  );
}

/**
 * The bytes of a vault object (or a range of them); `undefined` when the key
 * does not exist. A body cut mid-stream is read again (s3/retry.ts).
 */
export async function getBytes(
  vault: Vault,
  key: string,
  range?: { offset: number; length: number },
): Promise<Buffer | undefined> {
  try {
    const { body } = await getObjectBytes(vault.client, {
      Bucket: vault.location.bucket,
      Key: key,
      ...(range === undefined
        ? {}
        : { Range: `bytes=${range.offset}-${range.offset + range.length - 1}` }),
    });
    return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  } catch (err) {
    if (isMissing(err)) return undefined;
    throw err;
  }
}

export async function putJson(vault: Vault, key: string, value: unknown): Promise<void> {
  await putBytes(
    vault,
    key,
    Buffer.from(`${JSON.stringify(value, null, 2)}\n`),
    'application/json',
  );
}

/** Reads and validates a JSON document; `undefined` when the key does not exist. */
export async function getJson<S extends z.ZodType>(
  vault: Vault,
  key: string,
  schema: S,
): Promise<z.infer<S> | undefined> {
  const bytes = await getBytes(vault, key);
  if (bytes === undefined) return undefined;
  const parsed = schema.safeParse(JSON.parse(bytes.toString('utf8')));
  if (!parsed.success) {
    throw new VaultError(
      `s3://${vault.location.bucket}/${key} is not a valid document of this vault format: ${issueLines(parsed.error, '(document)').join('; ')}`,
    );
  }
  return parsed.data;
}

/** One gzip member of JSON lines. */
export async function gzipLines(items: readonly unknown[]): Promise<Buffer> {
  return gzipAsync(Buffer.from(items.map((item) => `${JSON.stringify(item)}\n`).join('')));
}

/** Parses gzip'd JSON lines (one member or several). */
export async function gunzipLines(bytes: Buffer): Promise<unknown[]> {
  const text = (await gunzipAsync(bytes)).toString('utf8');
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as unknown);
}

/** One listed key: its size and LastModified (ms). */
/**
 * The vault bucket's S3 Object Lock, as the bucket reports it: a default
 * retention locks every version regvault writes for that long (regvault sets
 * none of its own); `unknown` when the bucket would not say.
 */
export type VaultObjectLock =
  | { readonly state: 'none' }
  | {
      readonly state: 'locked';
      readonly mode: string;
      /** The default retention in days (years counted as 365 days). */
      readonly days: number;
    }
  | { readonly state: 'unknown'; readonly why: string };

/** Reads the vault bucket's Object Lock default retention. */
export async function readObjectLock(vault: Vault): Promise<VaultObjectLock> {
  try {
    const answer = await vault.client.send(
      new GetObjectLockConfigurationCommand({ Bucket: vault.location.bucket }),
    );
    const retention = answer.ObjectLockConfiguration?.Rule?.DefaultRetention;
    const days = retention?.Days ?? (retention?.Years === undefined ? 0 : retention.Years * 365);
    return retention?.Mode === undefined || days === 0
      ? { state: 'none' }
      : { state: 'locked', mode: retention.Mode, days };
  } catch (err) {
    const name = err instanceof Error ? err.name : 'Error';
    if (name === 'ObjectLockConfigurationNotFoundError') return { state: 'none' };
    return {
      state: 'unknown',
      why: `${name}: ${err instanceof Error ? err.message : String(err)}`,
    };
  }
}

export interface ListedKey {
  readonly key: string;
  readonly size: number;
  /** A key without a date counts as brand new (infinity), so prune never sweeps it on a guess. */
  readonly lastModified: number;
  /** The store's ETag, unquoted ('' when the listing gives none). */
  readonly etag: string;
}

/** Every key under a prefix, in order, with its size, LastModified and ETag, a page at a time. */
export async function* eachListedKey(vault: Vault, prefix: string): AsyncGenerator<ListedKey> {
  let token: string | undefined;
  do {
    const page: ListObjectsV2CommandOutput = await vault.client.send(
      new ListObjectsV2Command({
        Bucket: vault.location.bucket,
        Prefix: prefix,
        ...(token === undefined ? {} : { ContinuationToken: token }),
      }),
    );
    for (const item of page.Contents ?? [])
      yield {
        key: item.Key ?? '',
        size: item.Size ?? 0,
        lastModified: item.LastModified?.getTime() ?? Number.POSITIVE_INFINITY,
        etag: cleanEtag(item.ETag),
      };
    token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
  } while (token !== undefined);
}

/** Every key under a prefix, in order, with its size and LastModified. */
export async function listKeys(vault: Vault, prefix: string): Promise<ListedKey[]> {
  const keys: ListedKey[] = [];
  for await (const key of eachListedKey(vault, prefix)) keys.push(key);
  return keys;
}

/** Snapshot ids in the vault, oldest first (ids sort by time). */
export async function listSnapshotIds(vault: Vault): Promise<string[]> {
  const root = rootOf(vault);
  const ids: string[] = [];
  let token: string | undefined;
  do {
    const page: ListObjectsV2CommandOutput = await vault.client.send(
      new ListObjectsV2Command({
        Bucket: vault.location.bucket,
        Prefix: `${root}snapshots/`,
        Delimiter: '/',
        ...(token === undefined ? {} : { ContinuationToken: token }),
      }),
    );
    for (const prefix of page.CommonPrefixes ?? []) {
      const id = (prefix.Prefix ?? '').slice(`${root}snapshots/`.length).replace(/\/$/, '');
      // A paginated delimiter listing can repeat a prefix (seen on fauxqs).
      if (id !== '' && ids.at(-1) !== id) ids.push(id);
    }
    token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
  } while (token !== undefined);
  return [...new Set(ids)].sort();
}

export async function readManifest(
  vault: Vault,
  id: string,
): Promise<SnapshotManifest | undefined> {
  return getJson(vault, vaultKeys.manifest(rootOf(vault), id), snapshotManifestSchema);
}

/**
 * Complete manifests read by `readCompleteManifest`, per vault, for a while:
 * a backup reads its previous snapshot's manifest in discover, plan and every
 * worker process, and a complete snapshot's manifest does not change while a
 * backup builds on it (retention keeps the newest complete one).
 */
const completeManifests = new WeakMap<
  Vault,
  Map<string, { manifest: SnapshotManifest; at: number }>
>();
const COMPLETE_MANIFEST_MS = 10 * 60_000;

/** The manifest of snapshot `id` if it is complete, read once per process and vault for ten minutes. */
export async function readCompleteManifest(
  vault: Vault,
  id: string,
): Promise<SnapshotManifest | undefined> {
  let known = completeManifests.get(vault);
  const hit = known?.get(id);
  if (hit !== undefined && Date.now() - hit.at < COMPLETE_MANIFEST_MS) return hit.manifest;
  const manifest = await readManifest(vault, id);
  if (manifest?.status !== 'complete') return undefined;
  if (known === undefined) {
    known = new Map();
    completeManifests.set(vault, known);
  }
  known.set(id, { manifest, at: Date.now() });
  return manifest;
}

/**
 * The newest complete snapshot that `accept` takes, reading manifests newest
 * first and stopping at it (a vault keeping 30 snapshots costs one or two
 * reads, not 30). `read` is readCompleteManifest (kept for the backup's later
 * steps) unless the caller must see the vault as it is now.
 */
export async function newestComplete(
  vault: Vault,
  accept: (manifest: SnapshotManifest) => boolean,
  read: typeof readCompleteManifest = readCompleteManifest,
): Promise<SnapshotManifest | undefined> {
  for (const id of (await listSnapshotIds(vault)).reverse()) {
    const manifest = await read(vault, id);
    if (manifest !== undefined && accept(manifest)) return manifest;
  }
  return undefined;
}

/** The manifest of snapshot `id` if it is complete, read now. */
const readIfComplete = async (vault: Vault, id: string) => {
  const manifest = await readManifest(vault, id);
  return manifest?.status === 'complete' ? manifest : undefined;
};

/** Every snapshot with a manifest, oldest first. */
export async function listSnapshots(vault: Vault): Promise<SnapshotManifest[]> {
  const manifests: SnapshotManifest[] = [];
  for (const id of await listSnapshotIds(vault)) {
    const manifest = await readManifest(vault, id);
    if (manifest !== undefined) manifests.push(manifest);
  }
  return manifests;
}

/** The complete snapshot named by `id`, or the newest complete one for `latest`. */
export async function resolveSnapshot(vault: Vault, id: string): Promise<SnapshotManifest> {
  const where = `s3://${vault.location.bucket}/${rootOf(vault)}`;
  if (id === 'latest') {
    const latest = await newestComplete(vault, () => true, readIfComplete);
    if (latest === undefined) {
      throw new VaultError(
        `the vault ${where} holds no complete snapshot; run a backup first or check the vault bucket and prefix`,
      );
    }
    return latest;
  }
  const manifest = await readManifest(vault, id);
  if (manifest === undefined) {
    const known = await listSnapshotIds(vault);
    throw new VaultError(
      `snapshot ${id} is not in the vault ${where}; it holds ${known.length === 0 ? 'no snapshots' : known.slice(-5).join(', ')}`,
    );
  }
  if (manifest.status !== 'complete') {
    throw new VaultError(
      `snapshot ${id} is ${manifest.status}, not complete; restore a complete snapshot (\`latest\` picks the newest)`,
    );
  }
  return manifest;
}

/** The snapshot's inventory file is gone from the vault. */
const lostInventory = (manifest: SnapshotManifest) =>
  new VaultError(
    `snapshot ${manifest.id} lost its inventory file; the snapshot cannot be restored`,
  );

/** The records of one inventory part. */
export async function readInventoryPart(
  vault: Vault,
  manifest: SnapshotManifest,
  partIndex: number,
): Promise<InventoryRecord[]> {
  const part = manifest.inventory.parts[partIndex];
  if (part === undefined)
    throw new VaultError(`snapshot ${manifest.id} has no inventory part ${partIndex}`);
  if (part.length === 0) return [];
  const bytes = await getBytes(vault, vaultKeys.inventory(rootOf(vault), manifest.id), part);
  if (bytes === undefined) throw lostInventory(manifest);
  return (await gunzipLines(bytes)).map((line) => inventoryRecordSchema.parse(line));
}

/** Every record of a snapshot's inventory, a part at a time (one ranged GET a part): holds a part. */
export async function* eachInventoryRecord(
  vault: Vault,
  manifest: SnapshotManifest,
): AsyncGenerator<InventoryRecord> {
  for (let index = 0; index < manifest.inventory.parts.length; index++) {
    if (manifest.inventory.parts[index]?.records === 0) continue;
    yield* await readInventoryPart(vault, manifest, index);
  }
}

/** The whole inventory of a snapshot: one GET of the file, its parts cut out by their offsets. */
export async function readInventory(
  vault: Vault,
  manifest: SnapshotManifest,
): Promise<InventoryRecord[]> {
  const { parts } = manifest.inventory;
  if (parts.every((part) => part.length === 0)) return [];
  const bytes = await getBytes(vault, vaultKeys.inventory(rootOf(vault), manifest.id));
  if (bytes === undefined) throw lostInventory(manifest);
  const records: InventoryRecord[] = [];
  for (const part of parts) {
    if (part.length === 0) continue;
    const lines = await gunzipLines(bytes.subarray(part.offset, part.offset + part.length));
    for (const line of lines) records.push(inventoryRecordSchema.parse(line));
  }
  return records;
}

/** Bytes an upload holds before it sends them as a part (S3 takes parts of 5 MiB at least, the last one aside). */
export const UPLOAD_PART_BYTES = 8 * 1024 ** 2;

/** An object written piece by piece: one PUT when it ends small, else a multipart upload. */
export interface VaultUpload {
  /** Appends `bytes`; sends a part once enough is held. */
  write(bytes: Buffer): Promise<void>;
  /** Sends what is left and completes the object; an upload that fails is aborted. */
  close(): Promise<void>;
  /** Stops the upload (a multipart one is aborted); nothing is written. */
  abort(): Promise<void>;
}

/**
 * Writes `key` from pieces holding at most `partBytes` (plus one piece) in
 * memory: what a writer of an object larger than it wants to hold (the
 * inventory of a large snapshot) uses. Each part carries its Content-MD5
 * where the vault asks for it (Object Lock), as putBytes does.
 */
export function openUpload(
  vault: Vault,
  key: string,
  contentType: string,
  partBytes = UPLOAD_PART_BYTES,
): VaultUpload {
  const { bucket } = vault.location;
  const md5 = (body: Uint8Array) =>
    vault.location.contentMd5 === true ? { ContentMD5: md5Base64(body) } : {};
  let held: Buffer[] = [];
  let heldBytes = 0;
  let uploadId: string | undefined;
  const etags: string[] = [];
  const sendPart = async () => {
    const body = Buffer.concat(held);
    held = [];
    heldBytes = 0;
    if (uploadId === undefined) {
      const created = await vault.client.send(
        new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ContentType: contentType }),
      );
      if (created.UploadId === undefined)
        throw new VaultError(
          `CreateMultipartUpload for s3://${bucket}/${key} returned no UploadId`,
        );
      uploadId = created.UploadId;
    }
    const part = await vault.client.send(
      new UploadPartCommand({
        Bucket: bucket,
        Key: key,
        UploadId: uploadId,
        PartNumber: etags.length + 1,
        Body: body,
        ContentLength: body.byteLength,
        ...md5(body),
      }),
    );
    etags.push(part.ETag ?? '');
  };
  let aborted = false;
  const refuseAborted = () => {
    if (aborted) throw new VaultError(`the upload of s3://${bucket}/${key} was aborted`);
  };
  // Once: a failed write aborts, and so does its caller's clean-up.
  const abort = async () => {
    held = [];
    heldBytes = 0;
    if (aborted) return;
    aborted = true;
    if (uploadId === undefined) return;
    await vault.client
      .send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId }))
      .catch(() => undefined);
  };
  return {
    async write(bytes) {
      refuseAborted();
      held.push(bytes);
      heldBytes += bytes.byteLength;
      if (heldBytes < partBytes) return;
      try {
        await sendPart();
      } catch (err) {
        await abort();
        throw err;
      }
    },
    async close() {
      refuseAborted();
      if (uploadId === undefined) {
        await putBytes(vault, key, Buffer.concat(held), contentType);
        return;
      }
      try {
        if (heldBytes > 0) await sendPart();
        await completeMultipart({ client: vault.client, bucket }, key, uploadId, etags);
      } catch (err) {
        await abort();
        throw err;
      }
    },
    abort,
  };
}
