import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { Shard } from '../../functions/commons/copy/model.ts';
import { genericCopyPolicy, planShards } from '../../functions/commons/copy/plan.ts';
import { registryCopyPolicy } from '../../functions/commons/registry/copy-policy.ts';
import { buildDataset, writeDataset } from '../../sandbox/dataset.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, createBucket, listAll, putObjects } from '../support/s3.ts';
import { holders } from './coverage.ts';
import { SyntheticRegistry } from './synthetic-registry.ts';

let server: S3ServerHandle;
let client: S3Client;

beforeAll(async () => {
  server = await startS3Server({ name: 's3-policy' });
  client = clientFor(server);
  // Nine repositories in seven namespaces below the root directory `reg/`, an
  // unfinished upload and a key outside the registry.
  await createBucket(client, 'plans');
  const data = buildDataset({
    repositories: 9,
    tagsPerRepository: 2,
    layerSize: 256,
    seed: 11,
    root: 'reg/',
  });
  await writeDataset(client, 'plans', [
    ...data.objects,
    {
      key: 'reg/docker/registry/v2/repositories/team-0/app-0000/_uploads/u-1/data',
      size: 1,
      body: () => Buffer.from('x'),
    },
    { key: 'outside/readme', size: 1, body: () => Buffer.from('y') },
  ]);
});

afterAll(async () => {
  client?.destroy();
  await server?.stop();
});

const base = 'reg/docker/registry/v2/';
const repos = `${base}repositories/`;
const blobs = `${base}blobs/sha256/`;

describe("the registry's plan (persisted in a backup's job: its ids and ranges never change)", () => {
  it('plans one link shard, one blob shard and a shard for each gap around them that holds a key', async () => {
    // Act
    const plan = await planShards(client, 'plans', '/reg/', registryCopyPolicy);
    // Assess
    const registryShard = { registryPrefix: base };
    expect(plan).toEqual({
      linkShards: [
        { id: 'links-0000', kind: 'links', prefix: repos, ...registryShard, estimatedObjects: 118 },
      ],
      dataShards: [
        { id: 'blobs-0000', kind: 'blobs', prefix: blobs, ...registryShard, estimatedObjects: 73 },
        // Only the gap before the blobs holds a key (outside/readme): the two empty gaps get no shard.
        { id: 'other-0', kind: 'objects', prefix: '', ...registryShard, endBefore: blobs },
      ],
      requests: 6,
      reused: false,
      estimatedObjects: 191,
    });
  });

  it('cuts links at whole repositories and blobs at two-hex fan-outs, sized from counts', async () => {
    // Act
    const plan = await planShards(client, 'plans', 'reg', registryCopyPolicy, {
      targetObjectsPerShard: 12,
    });
    // Assess: each repository holds 13 links (app-0000 14, with its upload), more than
    // the target, so each is a shard; the 73 blobs make seven shards of 9 to 11.
    const ranges = (shards: readonly Shard[]) =>
      shards.map((s) => [s.id, s.startAt, s.endBefore, s.estimatedObjects]);
    const team = (path: string) => `${repos}${path}/`;
    expect(ranges(plan.linkShards)).toEqual([
      ['links-0000', undefined, team('team-0/app-0007'), 14],
      ['links-0001', team('team-0/app-0007'), team('team-1/app-0001'), 13],
      ['links-0002', team('team-1/app-0001'), team('team-1/app-0008'), 13],
      ['links-0003', team('team-1/app-0008'), team('team-2/app-0002'), 13],
      ['links-0004', team('team-2/app-0002'), team('team-3/app-0003'), 13],
      ['links-0005', team('team-3/app-0003'), team('team-4/app-0004'), 13],
      ['links-0006', team('team-4/app-0004'), team('team-5/app-0005'), 13],
      ['links-0007', team('team-5/app-0005'), team('team-6/app-0006'), 13],
      ['links-0008', team('team-6/app-0006'), undefined, 13],
    ]);
    expect(ranges(plan.dataShards)).toEqual([
      ['blobs-0000', undefined, `${blobs}1f/`, 10],
      ['blobs-0001', `${blobs}1f/`, `${blobs}39/`, 10],
      ['blobs-0002', `${blobs}39/`, `${blobs}56/`, 11],
      ['blobs-0003', `${blobs}56/`, `${blobs}85/`, 11],
      ['blobs-0004', `${blobs}85/`, `${blobs}b1/`, 11],
      ['blobs-0005', `${blobs}b1/`, `${blobs}e2/`, 11],
      ['blobs-0006', `${blobs}e2/`, undefined, 9],
      ['other-0', undefined, blobs, undefined],
    ]);
    // The first round trip (repositories, links, blobs, three gaps) counted it all.
    expect(plan.requests).toBe(6);
  });

  it.each([1, 12, 40, 5_000])(
    'lists every key of the bucket in exactly one shard at %i objects a shard',
    async (target) => {
      // Act
      const plan = await planShards(client, 'plans', 'reg', registryCopyPolicy, {
        targetObjectsPerShard: target,
      });
      // Assess
      const shards = [...plan.linkShards, ...plan.dataShards];
      const keys = [...(await listAll(client, 'plans')).keys()];
      expect(keys.filter((key) => holders(shards, key).length !== 1)).toEqual([]);
      expect(keys.length).toBe(plan.estimatedObjects + 1);
    },
  );

  it('plans a gap shard only for a gap that holds a key, with the same id wherever it is', async () => {
    // Prepare: a registry at the bucket's top, one key after its trees and none before or between them.
    await createBucket(client, 'gaps');
    const data = buildDataset({ repositories: 1, tagsPerRepository: 1, layerSize: 64, seed: 3 });
    await writeDataset(client, 'gaps', [
      ...data.objects,
      { key: 'zz-after/notes', size: 1, body: () => Buffer.from('z') },
    ]);
    // Act
    const plan = await planShards(client, 'gaps', '', registryCopyPolicy);
    // Assess
    expect(plan.dataShards.filter((shard) => shard.kind === 'objects')).toEqual([
      {
        id: 'other-2',
        kind: 'objects',
        prefix: '',
        registryPrefix: 'docker/registry/v2/',
        startAt: 'docker/registry/v2/repositories0',
      },
    ]);
  });
});

describe('counting against the S3 server, and the synthetic listing that stands in for it at scale', () => {
  // Two dense fan-outs (about 1,500 blobs each: more than a page) and 300 repositories
  // of about 20 links: the blobs are estimated from a page each, the links walked or,
  // with a budget of two pages, sampled.
  const shape = {
    blobs: 3_000,
    fanOuts: 2,
    links: 6_000,
    repositories: 300,
    perNamespace: 40,
    seed: 5,
  };
  const target = 500;

  beforeAll(async () => {
    await createBucket(client, 'dense');
    const keys = [...new SyntheticRegistry(shape).keys()];
    await putObjects(
      client,
      'dense',
      keys.map((key) => ({ key, body: '' })),
      32,
    );
  }, 120_000);

  it.each([
    { counting: 'walking every tree', countPages: undefined },
    { counting: 'sampling the repositories', countPages: 2 },
  ])(
    'plans the same from the server as from the synthetic listing, $counting, with every key in one shard',
    async ({ countPages }) => {
      // Act
      const options = {
        targetObjectsPerShard: target,
        ...(countPages === undefined ? {} : { countPages }),
      };
      const fromServer = await planShards(client, 'dense', '', registryCopyPolicy, options);
      const synthetic = new SyntheticRegistry(shape);
      const fromSynthetic = await registryCopyPolicy.split(synthetic, '', options);
      // Assess
      expect({ ...fromSynthetic, requests: synthetic.requests, reused: false }).toEqual(fromServer);
      const shards = [...fromServer.linkShards, ...fromServer.dataShards];
      const keys = [...(await listAll(client, 'dense')).keys()];
      expect(keys).toHaveLength(synthetic.size);
      expect(keys.filter((key) => holders(shards, key).length !== 1)).toEqual([]);
    },
  );

  it('counts links exactly and estimates a dense fan-out within 10% from one page', async () => {
    // Act
    const plan = await planShards(client, 'dense', '', registryCopyPolicy, {
      targetObjectsPerShard: target,
    });
    // Assess
    const synthetic = new SyntheticRegistry(shape);
    const sum = (shards: readonly Shard[]) =>
      shards.reduce((total, shard) => total + (shard.estimatedObjects ?? 0), 0);
    expect(sum(plan.linkShards)).toBe(synthetic.links);
    const blobShards = plan.dataShards.filter((shard) => shard.kind === 'blobs');
    expect(Math.abs(sum(blobShards) / synthetic.blobs - 1)).toBeLessThan(0.1);
    // Fan-outs 00 and 01 are cut inside, at hex points, into shards of at most the target.
    const points = blobShards.map((shard) => shard.startAt?.slice('docker/registry/v2/'.length));
    expect(
      points.filter((point) => /^blobs\/sha256\/(00\/00|01\/01)[0-9a-f]+$/.test(point ?? '')),
    ).toHaveLength(4);
    expect(blobShards.every((shard) => (shard.estimatedObjects ?? 0) <= target)).toBe(true);
  });
});

describe("the registry's route through a shard", () => {
  const linkShard: Shard = { id: 'links-0000', kind: 'links', prefix: repos, registryPrefix: base };
  const repo = `${repos}team-0/app-0000/`;
  const digest = `sha256:${'ab'.repeat(32)}`;
  const blobKey = `${blobs}ab/${'ab'.repeat(32)}/data`;

  it('lists a link shard in three passes, the tags behind a barrier, rolling up the directory a pass does not copy', () => {
    // Act
    const route = registryCopyPolicy.route(linkShard);
    // Assess
    expect(route.passes.map((pass) => [pass.rollUp?.delimiter, pass.barrier === true])).toEqual([
      ['/_layers/', true],
      ['/_layers/', false],
      ['/_manifests/', false],
    ]);
    expect(route.lookahead).toBe(10_000);
    const rollUp = route.passes[0]?.rollUp;
    expect(rollUp?.covers(`${repo}_layers/`, repos)).toBe(true);
    // The delimiter inside another reserved directory may hide keys this pass copies.
    expect(rollUp?.covers(`${repo}_manifests/x/_layers/`, repos)).toBe(false);
  });

  it.each([
    ['a tag link', `${repo}_manifests/tags/v1/current/link`, [{}, undefined, undefined]],
    ['a revision link', `${repo}_manifests/revisions/sha256/ab/link`, [undefined, {}, undefined]],
    ['another file below _manifests', `${repo}_manifests/odd`, [undefined, {}, undefined]],
    ['a layer link', `${repo}_layers/sha256/ab/link`, [undefined, undefined, {}]],
    ['a file of the repository itself', `${repo}readme`, [undefined, undefined, {}]],
    [
      'an unfinished upload (counted in the first pass only)',
      `${repo}_uploads/u-1/data`,
      [{ leaveOut: true, uploadId: 'u-1' }, undefined, undefined],
    ],
  ])('treats %s in each pass of a link shard', (_name, key, treatments) => {
    // Act
    const route = registryCopyPolicy.route(linkShard);
    // Assess
    expect([0, 1, 2].map((pass) => route.treat(key, pass))).toEqual(treatments);
  });

  it('copies a blob shard in one pass, each blob with the digest its key names', () => {
    // Act
    const route = registryCopyPolicy.route({
      id: 'blobs-0000',
      kind: 'blobs',
      prefix: blobs,
      registryPrefix: base,
    });
    // Assess
    expect(route.passes).toHaveLength(1);
    expect(route.lookahead).toBeUndefined();
    expect(route.treat(blobKey, 0)).toEqual({ digest });
    expect(route.treat(`${blobs}ab/not-a-digest/data`, 0)).toEqual({});
  });

  it('copies every key of a shard outside a registry as it is, in one pass', () => {
    // Act
    const routes = [
      registryCopyPolicy.route({ id: 'objects-00000', kind: 'objects', prefix: '' }),
      genericCopyPolicy.route({ id: 'objects-00000', kind: 'objects', prefix: '' }),
    ];
    // Assess
    for (const route of routes) {
      expect(route.passes).toHaveLength(1);
      expect(route.treat(blobKey.slice(base.length), 0)).toEqual({});
      expect(route.treat(`${repo}_uploads/u-1/data`, 0)).toEqual({});
    }
  });
});
