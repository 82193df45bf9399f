import { createHash } from 'node:crypto';
import { DeleteObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createCopyContext, prefixMapper } from '../../functions/commons/copy/context.ts';
import { runPlan, summarise } from '../../functions/commons/copy/engine.ts';
import { copyEntries } from '../../functions/commons/copy/entries.ts';
import type {
  Cursor,
  InventoryRecord,
  Location,
  Shard,
} from '../../functions/commons/copy/model.ts';
import { genericCopyPolicy, planShards } from '../../functions/commons/copy/plan.ts';
import type { CopyPolicy } from '../../functions/commons/copy/policy.ts';
import { runShard } from '../../functions/commons/copy/shard-runner.ts';
import {
  emptyTarget,
  ListedTarget,
  PreviousInventory,
} from '../../functions/commons/copy/target-state.ts';
import { registryCopyPolicy } from '../../functions/commons/registry/copy-policy.ts';
import type { FastCopier } from '../../functions/commons/s3/fast-copy.ts';
import {
  buildDataset,
  type DatasetOptions,
  putObject,
  seededBytes,
  writeDataset,
} from '../../sandbox/dataset.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import {
  clientFor,
  createBucket,
  listAll,
  locationOn,
  putObjects,
  readObject,
} from '../support/s3.ts';

let server: S3ServerHandle;
let other: S3ServerHandle;
let client: S3Client;
let otherClient: S3Client;
let bucketCounter = 0;

beforeAll(async () => {
  [server, other] = await Promise.all([
    startS3Server({ name: 's3-a' }),
    startS3Server({ name: 's3-b' }),
  ]);
  client = clientFor(server);
  otherClient = clientFor(other);
});

afterAll(async () => {
  client?.destroy();
  otherClient?.destroy();
  await Promise.all([server?.stop(), other?.stop()]);
});

async function freshBucket(c: S3Client = client): Promise<string> {
  const name = `bucket-${process.pid}-${bucketCounter++}`;
  await createBucket(c, name);
  return name;
}

const wholeShard = (prefix = ''): Shard => ({ id: 'all', kind: 'objects', prefix });

function job(
  source: Location,
  target: Location,
  options: {
    targetState?: 'list' | 'empty' | PreviousInventory;
    transfer?: Record<string, number | string>;
    /** The source's policy (default: any bucket, as keys). */
    policy?: CopyPolicy;
    concurrency?: number;
  } = {},
) {
  const sourceClient = source.endpoint === other.endpoint ? otherClient : client;
  const targetClient = target.endpoint === other.endpoint ? otherClient : client;
  const state = options.targetState ?? 'list';
  return createCopyContext({
    source: { location: source, client: sourceClient },
    target: { location: target, client: targetClient },
    mapKey: prefixMapper(source, target),
    targetState:
      state === 'list'
        ? new ListedTarget(targetClient, target.bucket)
        : state === 'empty'
          ? emptyTarget
          : state,
    policy: options.policy ?? genericCopyPolicy,
    concurrency: options.concurrency ?? 16,
    ...(options.transfer === undefined ? {} : { transfer: options.transfer }),
  });
}

const MiB = 1024 ** 2;

/** Job options for a registry's bucket: copied as a registry. */
const registry = { policy: registryCopyPolicy };

/** Plans a registry at the top of `bucket`. */
const planRegistry = (bucket: string, options: { targetObjectsPerShard?: number } = {}) =>
  planShards(client, bucket, '', registryCopyPolicy, options);

/** Plans any bucket below `prefix`. */
const planGeneric = (
  bucket: string,
  prefix: string,
  options: { targetObjectsPerShard?: number } = {},
) => planShards(client, bucket, prefix, genericCopyPolicy, options);

/**
 * A registry data set in a fresh source that plans into exactly one link
 * shard, and a fresh, empty target.
 */
async function oneLinkShard(options: DatasetOptions, targetObjectsPerShard?: number) {
  const source = await freshBucket();
  const data = buildDataset(options);
  await writeDataset(client, source, data.objects);
  const plan = await planRegistry(
    source,
    targetObjectsPerShard === undefined ? {} : { targetObjectsPerShard },
  );
  const shard = plan.linkShards[0];
  if (shard === undefined || plan.linkShards.length !== 1) throw new Error('one link shard');
  return { source, data, shard, target: await freshBucket() };
}

describe('copying a shard between two buckets', () => {
  it('copies every key, including spaces, unicode, +, %, =, XML specials and empty objects', async () => {
    // Prepare
    const source = await freshBucket();
    const target = await freshBucket();
    const keys = [
      'plain.txt',
      'with space/a b.txt',
      'ünïcödé/日本.txt',
      'plus+sign',
      'per%cent',
      'eq=ual',
      'xml/a&b<c>"d\'e&amp;',
      'empty',
    ];
    await putObjects(
      client,
      source,
      keys.map((key) => ({ key, body: key === 'empty' ? '' : `content of ${key}` })),
    );
    // Act
    const result = await runShard(
      job(locationOn(server, source), locationOn(server, target)),
      wholeShard(),
    );
    // Assess
    const copied = await listAll(client, target);
    expect([...copied.keys()].sort()).toEqual([...keys].sort());
    expect(copied.get('empty')?.size).toBe(0);
    expect((await readObject(client, target, 'ünïcödé/日本.txt')).toString()).toBe(
      'content of ünïcödé/日本.txt',
    );
    expect(result.totals).toMatchObject({ listed: 8, copied: 8, skipped: 0, failed: 0 });
  });

  it('copies nothing and succeeds for an empty bucket', async () => {
    const source = await freshBucket();
    const target = await freshBucket();
    const result = await runShard(
      job(locationOn(server, source), locationOn(server, target)),
      wholeShard(),
    );
    expect(result.totals).toMatchObject({ listed: 0, copied: 0, failed: 0, pages: 1 });
    expect(summarise([result]).ok).toBe(true);
  });

  it('follows the listing across many pages with one LIST per page and one CopyObject per object', async () => {
    // Prepare
    const source = await freshBucket();
    const target = await freshBucket();
    const objects = Array.from({ length: 2_345 }, (_, i) => ({
      key: `k/${String(i).padStart(5, '0')}`,
      body: `${i}`,
    }));
    await putObjects(client, source, objects, 32);
    await server.resetCounters();
    // Act
    const result = await runShard(
      job(locationOn(server, source), locationOn(server, target), { targetState: 'empty' }),
      wholeShard(),
    );
    // Assess
    const counters = await server.counters();
    expect(result.totals).toMatchObject({ listed: 2_345, copied: 2_345, pages: 3 });
    expect(counters.CopyObject).toBe(2_345);
    expect(counters.ListObjectsV2).toBe(3);
    expect((await listAll(client, target)).size).toBe(2_345);
  });

  it.each([
    ['ranged UploadPartCopy', 'server-side', 'UploadPartCopy'],
    ['streaming GET to multipart PUT', 'stream', 'UploadPart'],
  ])('copies a 20 MiB object by %s with small thresholds', async (_label, mode, partOperation) => {
    // Prepare
    const source = await freshBucket();
    const target = await freshBucket();
    const body = seededBytes('twenty', 20 * MiB);
    await putObject(client, source, 'big/object', body);
    await server.resetCounters();
    // Act
    const result = await runShard(
      job(
        locationOn(server, source),
        locationOn(server, target, '', mode === 'stream' ? 'other-access' : 'sandbox'),
        {
          targetState: 'empty',
          transfer: {
            mode,
            multipartCopyThreshold: 5 * MiB,
            partSize: 5 * MiB,
            partConcurrency: 2,
          },
        },
      ),
      wholeShard(),
    );
    // Assess
    expect(result.failures).toEqual([]);
    expect((await readObject(client, target, 'big/object')).equals(body)).toBe(true);
    const counters = await server.counters();
    expect(counters[partOperation]).toBe(4);
    expect(counters.CopyObject ?? 0).toBe(0);
  });

  it('streams between two server processes with memory bounded by the budget', async () => {
    // Prepare
    const source = await freshBucket(otherClient);
    const target = await freshBucket();
    const big = seededBytes('cross', 12 * MiB);
    await putObject(otherClient, source, 'blob', big);
    await putObjects(otherClient, source, [{ key: 'small', body: 'tiny' }]);
    const ctx = job(locationOn(other, source), locationOn(server, target), {
      transfer: { partSize: 5 * MiB, partConcurrency: 4 },
    });
    // Act
    const result = await runShard(ctx, wholeShard());
    // Assess
    expect(ctx.settings.mode).toBe('stream');
    expect(result.totals).toMatchObject({ copied: 2, failed: 0 });
    expect((await readObject(client, target, 'blob')).equals(big)).toBe(true);
    // Parts in flight at most, never the whole 12 MiB object (let alone twice).
    expect(ctx.budget.peak).toBeLessThanOrEqual(5 * MiB * 4);
    expect(ctx.budget.peak).toBeGreaterThanOrEqual(5 * MiB);
  });
});

describe('skipping what the target already holds', () => {
  it('copies nothing on a re-run and gives the same listed totals and records', async () => {
    // Prepare
    const source = await freshBucket();
    const target = await freshBucket();
    await putObjects(
      client,
      source,
      Array.from({ length: 50 }, (_, i) => ({ key: `o/${i}`, body: `v${i}` })),
    );
    const first: InventoryRecord[] = [];
    const second: InventoryRecord[] = [];
    const run = (records: InventoryRecord[]) =>
      runShard(job(locationOn(server, source), locationOn(server, target)), wholeShard(), {
        onRecord: (r) => records.push(r),
      });
    // Act
    const a = await run(first);
    await server.resetCounters();
    const b = await run(second);
    // Assess
    const counters = await server.counters();
    expect(a.totals).toMatchObject({ listed: 50, copied: 50, skipped: 0 });
    expect(b.totals).toMatchObject({
      listed: 50,
      copied: 0,
      skipped: 50,
      bytesListed: a.totals.bytesListed,
    });
    expect(counters.CopyObject ?? 0).toBe(0);
    const strip = (rs: InventoryRecord[]) =>
      rs.map(({ copied: _c, ...rest }) => rest).sort((x, y) => x.key.localeCompare(y.key));
    expect(strip(second)).toEqual(strip(first));
  });

  it('catches a re-tag although every tag link has the same size', async () => {
    // Prepare: a registry with one image, copied once, then re-tagged at the source.
    const source = await freshBucket();
    const target = await freshBucket();
    const data = buildDataset({ repositories: 1, tagsPerRepository: 2, layerSize: 2048, seed: 7 });
    await writeDataset(client, source, data.objects);
    const plan = await planRegistry(source);
    const ctx = () => job(locationOn(server, source), locationOn(server, target), registry);
    await runPlan(ctx(), plan);
    const tagKey =
      data.objects.find((o) => o.key.endsWith('_manifests/tags/v0.0/current/link'))?.key ?? '';
    const otherDigest = data.images[1]?.digest ?? '';
    await client.send(new PutObjectCommand({ Bucket: source, Key: tagKey, Body: otherDigest }));
    // Act
    const rerun = await runPlan(ctx(), plan);
    // Assess
    expect(rerun.totals.copied).toBe(1);
    expect((await readObject(client, target, tagKey)).toString()).toBe(otherDigest);
  });

  it('uses a previous inventory instead of listing the target', async () => {
    // Prepare
    const source = await freshBucket();
    const target = await freshBucket();
    await putObjects(
      client,
      source,
      Array.from({ length: 30 }, (_, i) => ({ key: `p/${i}`, body: `x${i}` })),
    );
    const records: InventoryRecord[] = [];
    await runShard(job(locationOn(server, source), locationOn(server, target)), wholeShard(), {
      onRecord: (r) => records.push(r),
    });
    await client.send(new PutObjectCommand({ Bucket: source, Key: 'p/3', Body: 'changed!' }));
    await server.resetCounters();
    // Act
    const result = await runShard(
      job(locationOn(server, source), locationOn(server, target), {
        targetState: new PreviousInventory(records),
      }),
      wholeShard(),
    );
    // Assess
    const counters = await server.counters();
    expect(result.totals).toMatchObject({ listed: 30, copied: 1, skipped: 29 });
    expect(counters.ListObjectsV2).toBe(1);
    expect(counters.CopyObject).toBe(1);
  });
});

describe('failures and retries', () => {
  it('reports a key deleted between listing and copying, without crashing', async () => {
    // Prepare
    const source = await freshBucket();
    const target = await freshBucket();
    await putObjects(
      client,
      source,
      ['a', 'b', 'c'].map((key) => ({ key, body: key })),
    );
    // Act
    const result = await runShard(
      job(locationOn(server, source), locationOn(server, target)),
      wholeShard(),
      {
        afterList: async () => {
          await client.send(new DeleteObjectCommand({ Bucket: source, Key: 'b' }));
        },
      },
    );
    // Assess
    expect(result.totals).toMatchObject({ listed: 3, copied: 2, failed: 1 });
    expect(result.failures).toEqual([
      expect.objectContaining({
        key: 'b',
        operation: 'CopyObject',
        code: 'NoSuchKey',
        sourceGone: true,
      }),
    ]);
    expect(summarise([result]).ok).toBe(false);
  });

  it('retries a copy whose connection was reset', async () => {
    // Prepare
    const source = await freshBucket();
    const target = await freshBucket();
    await putObjects(client, source, [{ key: 'reset/me', body: 'survives resets' }]);
    await server.injectFaults({
      operation: 'CopyObject',
      status: 0,
      code: 'Reset',
      count: 2,
      bucket: target,
      reset: true,
    });
    // Act
    const result = await runShard(
      job(locationOn(server, source), locationOn(server, target), { targetState: 'empty' }),
      wholeShard(),
    );
    // Assess
    expect(result.failures).toEqual([]);
    expect(result.totals.retries).toBe(2);
    expect((await readObject(client, target, 'reset/me')).toString()).toBe('survives resets');
  });

  it.each([
    [503, 'SlowDown'],
    [429, 'TooManyRequests'],
    [500, 'InternalError'],
  ])('recovers from injected %i %s answers by retrying', async (status, code) => {
    // Prepare
    const source = await freshBucket();
    const target = await freshBucket();
    await putObjects(
      client,
      source,
      Array.from({ length: 10 }, (_, i) => ({ key: `r/${i}`, body: `${i}` })),
    );
    await server.injectFaults({ operation: 'CopyObject', status, code, count: 4, bucket: target });
    await server.resetCounters();
    // Act
    const result = await runShard(
      job(locationOn(server, source), locationOn(server, target), { targetState: 'empty' }),
      wholeShard(),
    );
    // Assess
    expect(result.failures).toEqual([]);
    expect(result.totals.copied).toBe(10);
    expect(result.totals.retries).toBe(4);
    expect((await server.counters()).CopyObject).toBe(14);
    await server.clearFaults();
  });

  it('counts in its totals the retries of its listing, its target lookup and its copies', async () => {
    // Prepare: 500s for the source's listing (lean path), the target's (SDK) and two copies
    const source = await freshBucket();
    const target = await freshBucket();
    await putObjects(
      client,
      source,
      Array.from({ length: 5 }, (_, i) => ({ key: `n/${i}`, body: `${i}` })),
    );
    const fault = { status: 500, code: 'InternalError' };
    await server.injectFaults({ ...fault, operation: 'ListObjectsV2', count: 2, bucket: source });
    await server.injectFaults({ ...fault, operation: 'ListObjectsV2', count: 1, bucket: target });
    await server.injectFaults({ ...fault, operation: 'CopyObject', count: 2, bucket: target });
    // Act
    const result = await runShard(
      job(locationOn(server, source), locationOn(server, target), { targetState: 'list' }),
      wholeShard(),
    );
    // Assess
    expect(result.failures).toEqual([]);
    expect(result.totals.copied).toBe(5);
    expect(result.totals.retries).toBe(5);
    await server.clearFaults();
  });

  it('does not retry an access denial and names the key', async () => {
    const source = await freshBucket();
    const target = await freshBucket();
    await putObjects(client, source, [{ key: 'secret', body: 's' }]);
    await server.injectFaults({
      operation: 'CopyObject',
      status: 403,
      code: 'AccessDenied',
      count: 1,
      bucket: target,
    });
    await server.resetCounters();
    const result = await runShard(
      job(locationOn(server, source), locationOn(server, target), { targetState: 'empty' }),
      wholeShard(),
    );
    expect(result.failures).toEqual([
      expect.objectContaining({ key: 'secret', code: 'AccessDenied' }),
    ]);
    expect((await server.counters()).CopyObject).toBe(1);
    await server.clearFaults();
  });
});

describe('reporting what failed', () => {
  it('names UploadPartCopy as the failed call of a ranged copy', async () => {
    // Prepare
    const source = await freshBucket();
    const target = await freshBucket();
    await putObjects(client, source, [{ key: 'big/one', body: seededBytes('big-one', 3 * MiB) }]);
    await server.injectFaults({
      operation: 'UploadPartCopy',
      status: 403,
      code: 'AccessDenied',
      count: 1,
      bucket: target,
    });
    // Act
    const result = await runShard(
      job(locationOn(server, source), locationOn(server, target), {
        targetState: 'empty',
        transfer: { multipartCopyThreshold: MiB, partSize: MiB },
      }),
      wholeShard(),
    );
    await server.clearFaults();
    // Assess
    expect(result.failures).toEqual([
      expect.objectContaining({
        key: 'big/one',
        operation: 'UploadPartCopy',
        code: 'AccessDenied',
      }),
    ]);
  });

  it('keeps the digest check of a blob found unchanged from the inventory that recorded it', async () => {
    // Prepare
    const source = await freshBucket();
    const target = await freshBucket();
    const body = seededBytes('kept-blob', 2048);
    const hex = createHash('sha256').update(body).digest('hex');
    const key = `docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`;
    await putObjects(client, source, [{ key, body }]);
    const blobShard: Shard = {
      id: 'blobs',
      kind: 'blobs',
      prefix: 'docker/registry/v2/blobs/',
      registryPrefix: 'docker/registry/v2/',
    };
    const first: InventoryRecord[] = [];
    await runShard(
      job(locationOn(server, source), locationOn(server, target), {
        targetState: 'empty',
        ...registry,
      }),
      blobShard,
      { onRecord: (record) => first.push(record) },
    );
    // Act
    const second: InventoryRecord[] = [];
    const rerun = await runShard(
      job(locationOn(server, source), locationOn(server, target), {
        targetState: new PreviousInventory(first),
        ...registry,
      }),
      blobShard,
      { onRecord: (record) => second.push(record) },
    );
    // Assess
    expect(first[0]?.copied).toBe(true);
    expect(first[0]?.verified).toBeDefined();
    expect(rerun.totals).toMatchObject({ skipped: 1, copied: 0 });
    expect(second).toEqual([{ ...first[0], copied: false }]);
  });
});

describe('splitting work between workers', () => {
  /**
   * 2,500 objects under `prefix` in a fresh source, copied by one worker alone
   * into a bucket of its own (the totals to compare with), and a fresh, empty
   * target for the split run.
   */
  async function soloRun(prefix: string) {
    const source = await freshBucket();
    const target = await freshBucket();
    await putObjects(
      client,
      source,
      Array.from({ length: 2_500 }, (_, i) => ({ key: `${prefix}${i}`, body: `${i}` })),
      32,
    );
    const alone = await runShard(
      job(locationOn(server, source), locationOn(server, await freshBucket())),
      wholeShard(),
    );
    return { source, target, alone };
  }

  it("gives the same totals when a second worker continues from the first one's cursor", async () => {
    // Prepare
    const { source, target: two, alone } = await soloRun('s/');
    // Act: a worker that stops after its first page, and a second that continues.
    const first = await runShard(
      job(locationOn(server, source), locationOn(server, two)),
      wholeShard(),
      {
        deadline: 0,
      },
    );
    const second = await runShard(
      job(locationOn(server, source), locationOn(server, two)),
      wholeShard(),
      {
        ...(first.next === undefined ? {} : { cursor: first.next }),
      },
    );
    // Assess
    expect(first.next).toBeDefined();
    expect(first.totals.listed).toBe(1_000);
    const split = summarise([first, second]);
    expect(split.totals).toEqual(alone.totals);
    expect((await listAll(client, two)).size).toBe(2_500);
  });

  it('hands the continuation on before copying a page, and the chain of workers gives the totals of one', async () => {
    // Prepare
    const { source, target: chained, alone } = await soloRun('h/');
    // Act: every worker but the last gives its continuation away as soon as it is offered.
    const runs = [];
    const copiedWhenOffered: number[] = [];
    let cursor: Cursor | undefined;
    for (let worker = 0; worker < 3; worker++) {
      let copied = 0;
      const run = await runShard(
        job(locationOn(server, source), locationOn(server, chained)),
        wholeShard(),
        {
          ...(cursor === undefined ? {} : { cursor }),
          onRecord: () => {
            copied++;
          },
          ...(worker < 2
            ? {
                handOn: () => {
                  copiedWhenOffered.push(copied);
                  return true;
                },
              }
            : {}),
        },
      );
      runs.push(run);
      cursor = run.handedOn;
    }
    // Assess
    expect(copiedWhenOffered).toEqual([0, 0]);
    expect(runs.map((r) => r.totals.listed)).toEqual([1_000, 1_000, 500]);
    expect(runs.map((r) => r.handedOn === undefined)).toEqual([false, false, true]);
    expect(runs.every((r) => r.next === undefined && r.failures.length === 0)).toBe(true);
    expect(summarise(runs).totals).toEqual(alone.totals);
    expect((await listAll(client, chained)).size).toBe(2_500);
  });

  it('copies blobs in turns with the links still queued once every link is listed', async () => {
    // Prepare
    const source = await freshBucket();
    const data = buildDataset({
      repositories: 40,
      tagsPerRepository: 10,
      layerSize: 256,
      seed: 10,
    });
    await writeDataset(client, source, data.objects);
    const plan = await planRegistry(source, { targetObjectsPerShard: 2_000 });
    const target = await freshBucket();
    const order: string[] = [];
    // Act
    const outcome = await runPlan(
      job(locationOn(server, source), locationOn(server, target), registry),
      plan,
      {
        onRecord: (r) => order.push(r.key),
      },
    );
    // Assess: blob copies did not wait for the last link copy (the queue's lanes take turns)
    expect(outcome.ok).toBe(true);
    const firstBlob = order.findIndex((k) => k.includes('/blobs/'));
    const lastLink = order.findLastIndex((k) => k.includes('/repositories/'));
    expect(firstBlob).toBeGreaterThan(0);
    expect(firstBlob).toBeLessThan(lastLink);
    // Served one after the other, only the copies in flight at the switch would overlap.
    const linksAfterFirstBlob = order.slice(firstBlob).filter((k) => k.includes('/repositories/'));
    expect(linksAfterFirstBlob.length).toBeGreaterThan(100);
  });

  it("never offers a link shard's continuation during its tag phase", async () => {
    // Prepare: enough tags and revisions for two pages in every phase
    const { source, shard, target } = await oneLinkShard({
      repositories: 60,
      tagsPerRepository: 10,
      layerSize: 256,
      seed: 9,
    });
    const offered: number[] = [];
    // Act
    const result = await runShard(
      job(locationOn(server, source), locationOn(server, target), registry),
      shard,
      {
        handOn: (c) => {
          offered.push(c.phase);
          return false;
        },
      },
    );
    // Assess
    expect(result.failures).toEqual([]);
    expect(result.totals.pages).toBeGreaterThan(3);
    expect(offered.length).toBeGreaterThan(0);
    expect(offered).not.toContain(0);
  });

  it('hands on a list of entries (a restore part) at the deadline and continues from its offset', async () => {
    // Prepare
    const source = await freshBucket();
    const target = await freshBucket();
    const keys = Array.from({ length: 2_300 }, (_, i) => `e/${String(i).padStart(4, '0')}`);
    await putObjects(
      client,
      source,
      keys.map((key) => ({ key, body: key })),
      32,
    );
    const entries = keys.map((key) => ({
      object: { key, size: Buffer.byteLength(key), etag: '' },
      targetKey: `restored/${key}`,
    }));
    const ctx = () =>
      job(locationOn(server, source), locationOn(server, target), { targetState: 'empty' });
    // Act: every run after the first page is past its deadline, so each hands on.
    const runs = [await copyEntries(ctx(), 'part-0', entries, { deadline: 0 })];
    while (runs.at(-1)?.next !== undefined) {
      const cursor = runs.at(-1)?.next;
      runs.push(
        await copyEntries(ctx(), 'part-0', entries, {
          deadline: 0,
          ...(cursor === undefined ? {} : { cursor }),
        }),
      );
    }
    // Assess
    expect(runs.map((run) => run.next?.offset)).toEqual([1_000, 2_000, undefined]);
    expect(summarise(runs).totals).toMatchObject({ listed: 2_300, copied: 2_300, failed: 0 });
    expect((await listAll(client, target)).size).toBe(2_300);
  });
});

describe('planning', () => {
  it('plans a registry into link shards of whole repositories and blob fan-out ranges covering every key once', async () => {
    // Prepare
    const source = await freshBucket();
    const data = buildDataset({ repositories: 12, tagsPerRepository: 2, layerSize: 1024, seed: 3 });
    await writeDataset(client, source, [
      ...data.objects,
      {
        key: 'docker/registry/v2/repositories/team-0/app-0000/_uploads/u-1/data',
        size: 1,
        body: () => Buffer.from('x'),
      },
      { key: 'outside/readme', size: 1, body: () => Buffer.from('y') },
    ]);
    // Act
    const plan = await planRegistry(source, { targetObjectsPerShard: 40 });
    const target = await freshBucket();
    const ctx = job(locationOn(server, source), locationOn(server, target), registry);
    // What happened, in order: each LIST as it is sent, each copy as it is recorded.
    const events: string[] = [];
    const fast = ctx.source.fast;
    if (fast === undefined) throw new Error('the context lists through the lean path');
    // A run lists through its own view of the lean path (withRetrySink): spied on too.
    const spied = (copier: FastCopier): FastCopier => ({
      ...copier,
      listObjectsV2: (input) => {
        events.push(`list ${input.prefix} ${input.delimiter ?? ''}`);
        return copier.listObjectsV2(input);
      },
      withRetrySink: (sink) => spied(copier.withRetrySink(sink)),
    });
    (ctx.source as { fast: FastCopier }).fast = spied(fast);
    const outcome = await runPlan(ctx, plan, {
      onRecord: (r) => events.push(`copy ${r.key}`),
    });
    // Assess
    expect(plan.linkShards.length).toBeGreaterThan(1);
    expect(plan.dataShards.filter((s) => s.kind === 'blobs').length).toBeGreaterThan(1);
    expect(outcome.ok).toBe(true);
    expect(outcome.totals.listed).toBe(data.objects.length + 1);
    expect(outcome.totals.uploadsSkipped).toBe(1);
    expect(outcome.uploadIds).toEqual(['u-1']);
    const copied = await listAll(client, target);
    expect(copied.size).toBe(data.objects.length + 1);
    const records = events.filter((e) => e.startsWith('copy '));
    expect(new Set(records).size).toBe(records.length);
    // Every link is listed before any blob is (their copies may overlap).
    const lastLinkList = events.findLastIndex((e) =>
      e.startsWith('list docker/registry/v2/repositories/'),
    );
    const firstBlobList = events.findIndex((e) => e.startsWith('list docker/registry/v2/blobs/'));
    expect(lastLinkList).toBeGreaterThan(0);
    expect(lastLinkList).toBeLessThan(firstBlobList);
  });

  it("copies a link shard phase by phase: tags, then revisions, then layer links, each listed after every tag's current link is copied, while its index entries may trail", async () => {
    // Prepare: one copy at a time, so that what waits behind what shows
    const { source, data, shard, target } = await oneLinkShard({
      repositories: 4,
      tagsPerRepository: 3,
      layerSize: 512,
      seed: 8,
    });
    const ctx = job(locationOn(server, source), locationOn(server, target), {
      ...registry,
      concurrency: 1,
    });
    const copied = { current: new Set<string>(), index: new Set<string>() };
    const pages: Array<{ kinds: Set<string>; current: number; index: number }> = [];
    const kindOf = (key: string) =>
      key.includes('/_manifests/tags/')
        ? 'tag'
        : key.includes('/_manifests/revisions/')
          ? 'revision'
          : 'layer';
    // Act
    const result = await runShard(ctx, shard, {
      afterList: async (keys) => {
        pages.push({
          kinds: new Set(keys.map(kindOf)),
          current: copied.current.size,
          index: copied.index.size,
        });
      },
      onRecord: (r) => {
        if (kindOf(r.key) !== 'tag') return;
        (r.key.endsWith('/current/link') ? copied.current : copied.index).add(r.key);
      },
    });
    // Assess
    const tagLinks = data.objects.filter((o) => o.key.includes('/_manifests/tags/'));
    const currents = tagLinks.filter((o) => o.key.endsWith('/current/link')).length;
    const indexes = tagLinks.length - currents;
    expect(currents).toBe(12);
    expect(indexes).toBeGreaterThanOrEqual(12);
    expect(result.failures).toEqual([]);
    expect(copied.current.size).toBe(currents);
    expect(copied.index.size).toBe(indexes);
    const phases = pages.filter((p) => p.kinds.size > 0);
    expect(phases.map((p) => [...p.kinds])).toEqual([['tag'], ['revision'], ['layer']]);
    // Revisions and layer links are listed only once every current link is copied.
    expect(phases[1]?.current).toBe(currents);
    expect(phases[2]?.current).toBe(currents);
    // The index entries (named by their digest) waited behind the current links
    // and did not hold the revision listing back: most were still to copy.
    expect(phases[1]?.index).toBeLessThan(indexes / 2);
  });

  it("lists an unchanged link shard's manifests once, and twice again once a tag was re-pointed", async () => {
    // Prepare: a link shard copied once, so a second run finds every link unchanged
    const { source, data, shard, target } = await oneLinkShard(
      {
        repositories: 10,
        tagsPerRepository: 40,
        layersPerImage: 1,
        layerSize: 64,
        seed: 12,
      },
      100_000,
    );
    const run = () => {
      const kinds: string[] = [];
      const result = runShard(
        job(locationOn(server, source), locationOn(server, target), registry),
        shard,
        {
          afterList: async (keys) => {
            for (const key of keys) kinds.push(key.includes('/_manifests/tags/') ? 'tag' : 'other');
          },
        },
      );
      return result.then((r) => ({ ...r, kinds }));
    };
    const first = await run();
    // Act
    const unchanged = await run();
    const tag = data.objects.find((o) => o.key.includes('/_manifests/tags/'))?.key ?? '';
    const revision = data.objects.find((o) => o.key.includes('/_manifests/revisions/'))?.key ?? '';
    await client.send(
      new PutObjectCommand({
        Bucket: source,
        Key: tag,
        Body: `sha256:${revision.split('/').at(-2)}`,
      }),
    );
    const retagged = await run();
    // Assess
    expect(first.totals.copied).toBe(first.totals.listed);
    // The tag pass and the revision pass list the same pages; the layer pass lists its own.
    expect(first.totals.pages).toBeGreaterThanOrEqual(5);
    expect(unchanged.totals.copied).toBe(0);
    expect(unchanged.totals.listed).toBe(first.totals.listed);
    expect(unchanged.kinds.sort()).toEqual(first.kinds.sort());
    const tagPages = first.totals.pages - unchanged.totals.pages;
    expect(tagPages).toBeGreaterThanOrEqual(2);
    expect(retagged.totals.copied).toBe(1);
    expect(retagged.totals.pages).toBe(first.totals.pages);
    expect(unchanged.failures).toEqual([]);
    expect(retagged.failures).toEqual([]);
  });

  it('copies odd keys in a registry tree exactly once although link phases roll directories up', async () => {
    // Prepare: keys where a phase's delimiter appears inside another reserved directory
    const source = await freshBucket();
    const data = buildDataset({ repositories: 3, tagsPerRepository: 2, layerSize: 512, seed: 5 });
    const repo = 'docker/registry/v2/repositories/team-0/app-0000';
    const odd = [
      `${repo}/_layers/x/_manifests/tags/odd/current/link`,
      `${repo}/_manifests/revisions/sha256/abc/_layers/odd`,
      `${repo}/_manifests/odd-file`,
      `${repo}/_layers/odd-file`,
      `${repo}/readme`,
      'docker/registry/v2/repositories/_layers/stray',
      'docker/registry/v2/repositories/_manifests/tags/stray/current/link',
      // More than a page below one prefix the delimiter did not mean to roll up.
      ...Array.from(
        { length: 1_050 },
        (_, i) => `${repo}/_manifests/tags/t/index/_layers/${String(i).padStart(4, '0')}`,
      ),
    ];
    const upload = `${repo}/_uploads/u-2/_layers/data`;
    await writeDataset(client, source, [
      ...data.objects,
      ...[...odd, upload].map((key) => ({ key, size: 3, body: () => Buffer.from('odd') })),
    ]);
    const plan = await planRegistry(source, { targetObjectsPerShard: 1_000 });
    const target = await freshBucket();
    const order: string[] = [];
    // Act
    const outcome = await runPlan(
      job(locationOn(server, source), locationOn(server, target), registry),
      plan,
      { onRecord: (r) => order.push(r.key) },
    );
    // Assess
    expect(outcome.failures).toEqual([]);
    expect(outcome.ok).toBe(true);
    expect(new Set(order).size).toBe(order.length);
    expect(outcome.totals.listed).toBe(data.objects.length + odd.length);
    expect(outcome.totals.copied).toBe(data.objects.length + odd.length);
    expect(outcome.totals.uploadsSkipped).toBe(1);
    const copied = await listAll(client, target);
    expect([...copied.keys()].sort()).toEqual([...data.objects.map((o) => o.key), ...odd].sort());
  });
  it('plans any bucket into bounded contiguous key ranges', async () => {
    const source = await freshBucket();
    await putObjects(
      client,
      source,
      Array.from({ length: 2_100 }, (_, i) => ({
        key: `${['a', 'b/x', 'c'][i % 3]}/${i}`,
        body: '.',
      })),
      32,
    );
    const plan = await planGeneric(source, '', { targetObjectsPerShard: 500 });
    const target = await freshBucket();
    const outcome = await runPlan(
      job(locationOn(server, source), locationOn(server, target)),
      plan,
    );
    expect(plan.dataShards.length).toBeGreaterThanOrEqual(5);
    expect(plan.dataShards.length).toBeLessThanOrEqual(7);
    expect(plan.dataShards.every((s) => (s.estimatedObjects ?? 0) <= 500)).toBe(true);
    expect(plan.estimatedObjects).toBe(2_100);
    expect(outcome.totals.listed).toBe(2_100);
    expect(outcome.shards.every((s) => s.totals.listed <= 500)).toBe(true);
    expect((await listAll(client, target)).size).toBe(2_100);
  });
});

describe('planning a bucket that is not a registry', () => {
  it('discovers nested prefixes with delimiter listings and packs them into contiguous shards', async () => {
    // Prepare: direct keys, a deep tree, a large prefix and keys that sort around the separators.
    const source = await freshBucket();
    const keys = [
      'top-file',
      'z-last',
      'a+b/plus',
      ...Array.from({ length: 1_450 }, (_, i) => `big/part-${String(i).padStart(5, '0')}`),
      ...Array.from({ length: 60 }, (_, i) => `tree/${i % 3}/leaf/${i}`),
      ...Array.from({ length: 40 }, (_, i) => `tree/direct-${i}`),
      'tree/',
    ];
    await putObjects(
      client,
      source,
      keys.map((key) => ({ key, body: '.' })),
      32,
    );
    // Act
    const plan = await planGeneric(source, '', { targetObjectsPerShard: 400 });
    const target = await freshBucket();
    const outcome = await runPlan(
      job(locationOn(server, source), locationOn(server, target)),
      plan,
    );
    // Assess
    expect(plan.estimatedObjects).toBe(keys.length);
    expect(plan.dataShards.every((s) => (s.estimatedObjects ?? 0) <= 400)).toBe(true);
    expect(plan.dataShards.length).toBeLessThanOrEqual(Math.ceil(keys.length / 400) + 3);
    const bounds = plan.dataShards.map((s) => [s.startAt, s.endBefore]);
    for (let i = 1; i < bounds.length; i++) expect(bounds[i]?.[0]).toBe(bounds[i - 1]?.[1]);
    expect(outcome.shards.map((s) => s.totals.listed)).toEqual(
      plan.dataShards.map((s) => s.estimatedObjects),
    );
    expect([...(await listAll(client, target)).keys()].sort()).toEqual([...keys].sort());
  });

  it('plans an empty bucket as one shard that finds nothing', async () => {
    // Prepare
    const source = await freshBucket();
    // Act
    const plan = await planGeneric(source, '');
    // Assess
    expect(plan.dataShards).toEqual([
      { id: 'objects-00000', kind: 'objects', prefix: '', estimatedObjects: 0 },
    ]);
    expect(plan.requests).toBe(1);
  });
});

describe('checking blobs against their digests', () => {
  const registryShard = (prefix: string): Shard => ({
    id: 'blobs',
    kind: 'blobs',
    prefix,
    registryPrefix: 'docker/registry/v2/',
  });
  const blobKey = (content: Buffer) => {
    const hex = createHash('sha256').update(content).digest('hex');
    return `docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`;
  };

  async function blobs(c: S3Client, bucket: string, corrupt: boolean) {
    const good = seededBytes('digest-good', 3000);
    const bad = seededBytes('digest-bad', 3000);
    await putObjects(c, bucket, [
      { key: blobKey(good), body: good },
      // corrupt: stored under the digest of other bytes
      { key: blobKey(bad), body: corrupt ? seededBytes('not-what-the-key-says', 3000) : bad },
    ]);
    return { goodKey: blobKey(good), badKey: blobKey(bad) };
  }

  it('uses the SHA-256 the server computes for the copy, and keeps no copy of a corrupt blob', async () => {
    // Prepare
    const checksums = await startS3Server({ name: 's3-checksums', computeChecksums: true });
    const c = clientFor(checksums);
    try {
      await createBucket(c, 'digest-source');
      await createBucket(c, 'digest-target');
      const { goodKey, badKey } = await blobs(c, 'digest-source', true);
      const records: InventoryRecord[] = [];
      const source = locationOn(checksums, 'digest-source');
      const target = locationOn(checksums, 'digest-target');
      const ctx = createCopyContext({
        source: { location: source, client: c },
        target: { location: target, client: c },
        mapKey: prefixMapper(source, target),
        targetState: emptyTarget,
        policy: registryCopyPolicy,
      });
      await checksums.resetCounters();
      // Act
      const result = await runShard(ctx, registryShard('docker/registry/v2/blobs/'), {
        onRecord: (r) => records.push(r),
      });
      // Assess
      expect(records.map((r) => [r.key, r.verified])).toEqual([[goodKey, 'server-sha256']]);
      expect(result.failures.map((f) => [f.key, f.code])).toEqual([[badKey, 'DigestMismatch']]);
      expect(result.failures[0]?.message).toMatch(/does not hash to sha256:/);
      expect([...(await listAll(c, 'digest-target')).keys()]).toEqual([goodKey]);
      expect((await checksums.counters()).GetObject ?? 0).toBe(0);
    } finally {
      c.destroy();
      await checksums.stop();
    }
  });

  it('hashes blobs while streaming them, also in parts, and writes nothing for a corrupt one', async () => {
    // Prepare
    const source = await freshBucket();
    const target = await freshBucket(otherClient);
    const { goodKey, badKey } = await blobs(client, source, true);
    const big = seededBytes('digest-big', 12 * MiB);
    await putObject(client, source, blobKey(big), big);
    const records: InventoryRecord[] = [];
    // Act
    const result = await runShard(
      job(locationOn(server, source), locationOn(other, target), {
        targetState: 'empty',
        transfer: { partSize: 5 * MiB },
        ...registry,
      }),
      registryShard('docker/registry/v2/blobs/'),
      { onRecord: (r) => records.push(r) },
    );
    // Assess
    expect(records.map((r) => [r.key, r.verified]).sort()).toEqual(
      [
        [blobKey(big), 'stream-sha256'],
        [goodKey, 'stream-sha256'],
      ].sort(),
    );
    expect(result.failures.map((f) => [f.key, f.code])).toEqual([[badKey, 'DigestMismatch']]);
    expect([...(await listAll(otherClient, target)).keys()].sort()).toEqual(
      [blobKey(big), goodKey].sort(),
    );
  });

  it('records a blob as unverified when the server computes no checksums', async () => {
    // Prepare
    const source = await freshBucket();
    const target = await freshBucket();
    const { goodKey } = await blobs(client, source, false);
    const records: InventoryRecord[] = [];
    // Act
    await runShard(
      job(locationOn(server, source), locationOn(server, target), {
        targetState: 'empty',
        ...registry,
      }),
      registryShard('docker/registry/v2/blobs/'),
      {
        onRecord: (r) => records.push(r),
      },
    );
    // Assess
    expect(records.find((r) => r.key === goodKey)?.verified).toBe('unverified');
  });
});
