import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { emptyTotals, type InventoryRecord } from '../../functions/commons/copy/model.ts';
import type { PageEntry } from '../../functions/commons/copy/target-state.ts';
import { createLocalDeps } from '../../functions/commons/local/deps.ts';
import {
  type SnapshotManifest,
  SnapshotStatus,
  VAULT_FORMAT_VERSION,
} from '../../functions/commons/vault/format.ts';
import { writeInventory } from '../../functions/commons/vault/inventory.ts';
import { findRecords, InventoryLookup } from '../../functions/commons/vault/inventory-lookup.ts';
import type { WorkflowDeps } from '../../functions/commons/workflows/deps.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, createBucket, locationOn } from '../support/s3.ts';

const base = 'docker/registry/v2/';
const PART = 100;
const BLOBS = 1_200;
const LINKS = 800;

let s3: S3ServerHandle;
let client: S3Client;
let deps: WorkflowDeps & { close(): void };
let manifest: SnapshotManifest;
let records: InventoryRecord[];

const hex = (n: number) => n.toString(16).padStart(64, '0');
const blobKey = (n: number) => `${base}blobs/sha256/${hex(n).slice(0, 2)}/${hex(n)}/data`;
const linkKey = (n: number) =>
  `${base}repositories/team/app-${String(n).padStart(4, '0')}/_layers/sha256/${hex(n)}/link`;

function recordOf(key: string, n: number): InventoryRecord {
  return { key, size: n, etag: `etag-${n}`, targetKey: `pool/${n}`, copied: true };
}

/** Listed entries for `keys`, as a shard's page hands them to the target state. */
const page = (keys: readonly string[]): PageEntry[] =>
  keys.map((key) => ({
    object: { key, size: 1, etag: 'listed' },
    targetKey: `pool/${key}`,
  }));

/** A snapshot manifest around an inventory table (only its id and inventory are read here). */
function manifestWith(id: string, inventory: SnapshotManifest['inventory']): SnapshotManifest {
  return {
    formatVersion: VAULT_FORMAT_VERSION,
    id,
    status: SnapshotStatus.Complete,
    startedAt: '2026-12-03T00:00:00.000Z',
    toolVersion: 'test',
    layout: 'registry',
    source: {
      profile: 'bucket',
      bucket: 'src',
      region: 'us-east-1',
      prefix: '',
      rootDirectory: '',
    },
    counts: { objects: inventory.records, blobs: BLOBS, repositories: 1, tags: 0 },
    bytes: 0,
    totals: emptyTotals(),
    uploadsSkipped: [],
    checks: {},
    failures: { count: 0, sample: [] },
    clusterFiles: [],
    runId: `backup-${id}`,
    inventory,
  };
}

/** The server's GetObject count around `act`. */
async function gets(act: () => Promise<void>): Promise<number> {
  const before = (await s3.counters())['GetObject'] ?? 0;
  await act();
  return ((await s3.counters())['GetObject'] ?? 0) - before;
}

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-inventory-lookup' });
  client = clientFor(s3);
  await createBucket(client, 'vault');
  deps = createLocalDeps({
    vault: { location: locationOn(s3, 'vault', '', 'vault'), credentials: s3.credentials },
  });
  records = [
    ...Array.from({ length: LINKS }, (_, n) => recordOf(linkKey(n), n)),
    ...Array.from({ length: BLOBS }, (_, n) => recordOf(blobKey(n), n)),
  ];
  const id = '20261203T000000.000Z-abc123';
  manifest = manifestWith(id, await writeInventory(deps.vault, id, records, base, PART));
}, 60_000);

afterAll(async () => {
  deps?.close();
  client?.destroy();
  await s3?.stop();
});

describe("reading an earlier snapshot's inventory for the keys a backup lists", () => {
  it('bounds every part by its first and last key, blob parts first', () => {
    // Assess
    const { parts } = manifest.inventory;
    expect(parts).toHaveLength((BLOBS + LINKS) / PART);
    expect(parts.slice(0, BLOBS / PART).every((part) => part.kind === 'blobs')).toBe(true);
    expect(parts.every((part) => part.first !== undefined && part.last !== undefined)).toBe(true);
    expect(parts.every((part) => (part.first ?? '') <= (part.last ?? ''))).toBe(true);
  });

  it('answers a page from the one part its keys fall in, with one ranged GET', async () => {
    // Prepare: blobs 300..349 lie in one part of sorted blob keys; one key was never recorded.
    const lookup = new InventoryLookup(deps.vault, manifest, { wholeBytes: 0 });
    const keys = Array.from({ length: 50 }, (_, i) => blobKey(300 + i));
    const unknown = `${base}blobs/sha256/${'f'.repeat(2)}/${'f'.repeat(64)}/data`;
    // Act
    let found: ReadonlyMap<string, unknown> = new Map();
    const requests = await gets(async () => {
      found = await lookup.lookup(page([...keys, unknown].slice(0, 50)));
    });
    // Assess
    expect(requests).toBe(1);
    expect(lookup.requests).toBe(1);
    expect(lookup.recordsRead).toBe(PART);
    expect(found.size).toBe(50);
    expect(found.get(blobKey(310))).toEqual({
      size: 310,
      sourceEtag: 'etag-310',
      targetKey: 'pool/310',
    });
    const withUnknown = await lookup.lookup(page([blobKey(301), unknown]));
    expect([...withUnknown.keys()]).toEqual([blobKey(301)]);
  });

  it('reads each part once while two shards walk their keys side by side, holding at most the parts kept', async () => {
    // Prepare: a blob shard and a link shard, pages of 40 keys, interleaved: a
    // page straddles at most two parts, so four kept parts serve both shards.
    const lookup = new InventoryLookup(deps.vault, manifest, { wholeBytes: 0, partsKept: 4 });
    const blobPages = chunks(
      records
        .filter((r) => r.key.includes('/blobs/'))
        .map((r) => r.key)
        .sort(),
      40,
    );
    const linkPages = chunks(
      records
        .filter((r) => r.key.includes('/repositories/'))
        .map((r) => r.key)
        .sort(),
      40,
    );
    // Act
    let answered = 0;
    const requests = await gets(async () => {
      for (let i = 0; i < Math.max(blobPages.length, linkPages.length); i++) {
        const pages = [blobPages[i], linkPages[i]].filter((keys) => keys !== undefined);
        const found = await Promise.all(pages.map((keys) => lookup.lookup(page(keys))));
        answered += found.reduce((sum, map) => sum + map.size, 0);
      }
    });
    // Assess: every key answered; each part read once, though only four are kept.
    expect(answered).toBe(records.length);
    expect(lookup.requests).toBe(manifest.inventory.parts.length);
    expect(requests).toBe(manifest.inventory.parts.length);
    expect(lookup.recordsRead).toBe(records.length);
  });

  it('reads a snapshot written before parts had bounds whole, with one GET, and answers exactly', async () => {
    // Prepare
    const unbounded = manifestWith(manifest.id, {
      ...manifest.inventory,
      parts: manifest.inventory.parts.map(({ first: _first, last: _last, ...part }) => part),
    });
    const lookup = new InventoryLookup(deps.vault, unbounded, { wholeBytes: 0 });
    // Act
    let found: ReadonlyMap<string, unknown> = new Map();
    const requests = await gets(async () => {
      found = await lookup.lookup(page([linkKey(7), blobKey(7)]));
      await lookup.lookup(page([blobKey(900)]));
    });
    // Assess
    expect(requests).toBe(1);
    expect(lookup.recordsRead).toBe(records.length);
    expect([...found.keys()].sort()).toEqual([blobKey(7), linkKey(7)].sort());
  });

  it('reads a small inventory whole, with one GET for every page', async () => {
    // Prepare
    const lookup = new InventoryLookup(deps.vault, manifest);
    // Act
    const requests = await gets(async () => {
      await lookup.lookup(page([blobKey(1)]));
      await lookup.lookup(page([linkKey(799)]));
      await lookup.lookup(page([blobKey(1_199)]));
    });
    // Assess
    expect(requests).toBe(1);
    expect(lookup.recordsRead).toBe(records.length);
  });

  it('finds the records of a few keys by reading only the parts that hold them', async () => {
    // Act
    let found = new Map<string, InventoryRecord>();
    const requests = await gets(async () => {
      found = await findRecords(deps.vault, manifest, [blobKey(5), linkKey(700), 'not/recorded']);
    });
    // Assess
    expect(requests).toBe(2);
    expect(found.get(blobKey(5))?.targetKey).toBe('pool/5');
    expect(found.get(linkKey(700))?.size).toBe(700);
    expect(found.has('not/recorded')).toBe(false);
  });
});

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
