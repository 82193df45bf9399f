/**
 * Writing a snapshot's inventory (`inventory.jsonl.gz`): one gzip member per
 * part, blob parts before link parts for a registry, so a restore worker
 * reads one part and the blobs go back before any link. store.ts reads it.
 */
import type { InventoryRecord } from '../copy/model.ts';
import { classifyRegistryKey, KeyKind } from '../registry/layout.ts';
import { type SnapshotManifest, vaultKeys } from './format.ts';
import { gzipLines, putBytes, rootOf, type Vault } from './store.ts';

/** Records per inventory part: small enough for one worker invocation to restore. */
export const INVENTORY_PART_RECORDS = 10_000;

function partsOf(
  records: readonly InventoryRecord[],
  kind: 'blobs' | 'links' | 'objects',
  partRecords: number,
): Array<{ kind: typeof kind; records: InventoryRecord[] }> {
  const parts: Array<{ kind: typeof kind; records: InventoryRecord[] }> = [];
  for (let start = 0; start < records.length; start += partRecords) {
    parts.push({ kind, records: records.slice(start, start + partRecords) });
  }
  return parts;
}

/** Writes `inventory.jsonl.gz` as one gzip member per part and returns the part table. */
export async function writeInventory(
  vault: Vault,
  snapshotId: string,
  records: readonly InventoryRecord[],
  registryBase: string | undefined,
  partRecords = INVENTORY_PART_RECORDS,
): Promise<SnapshotManifest['inventory']> {
  const sorted = [...records].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const isBlob = (r: InventoryRecord) =>
    registryBase !== undefined &&
    r.key.startsWith(registryBase) &&
    classifyRegistryKey(r.key.slice(registryBase.length)) === KeyKind.Blob;
  const parts =
    registryBase !== undefined
      ? [
          ...partsOf(sorted.filter(isBlob), 'blobs', partRecords),
          ...partsOf(
            sorted.filter((r) => !isBlob(r)),
            'links',
            partRecords,
          ),
        ]
      : partsOf(sorted, 'objects', partRecords);
  const members: Buffer[] = [];
  const table: SnapshotManifest['inventory']['parts'] = [];
  let offset = 0;
  for (const part of parts) {
    const member = await gzipLines(part.records);
    const first = part.records[0]?.key;
    const last = part.records.at(-1)?.key;
    table.push({
      kind: part.kind,
      offset,
      length: member.length,
      records: part.records.length,
      ...(first === undefined || last === undefined ? {} : { first, last }),
    });
    members.push(member);
    offset += member.length;
  }
  await putBytes(
    vault,
    vaultKeys.inventory(rootOf(vault), snapshotId),
    Buffer.concat(members),
    'application/gzip',
  );
  return { records: sorted.length, parts: table };
}
