/**
 * The quay profile's restore onto NooBaa (ODF) managed object storage: the
 * config bundle names no bucket, the operator's bucket claim (ConfigMap and
 * Secret labelled app=noobaa) does. A restore into the claim's bucket keeps
 * managed storage and the bundle as they are; a restore into any other
 * bucket names it in a new config bundle and sets `objectstorage` unmanaged
 * (the operator takes storage from the bundle only then); rolling that back
 * puts the old bundle and managed storage back.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { parse } from 'yaml';
import { QUAY_REGISTRY } from '../../sandbox/kube/quay-operator.ts';
import { BuiltIn } from '../../sandbox/kube/resources.ts';
import { NOTHING_ANSWERS } from '../../sandbox/process.ts';
import { quayRows } from '../../sandbox/quay-schema.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import { QUAY_DATABASE, QUAY_NAME, type QuayBed } from '../support/quay.ts';
import {
  blobsIn,
  drNamespace,
  keysSecret,
  type RestoreBed,
  restoreQuay,
  startRestoreBed,
} from '../support/quay-restore.ts';
import { clientFor, deleteKeys, listAll } from '../support/s3.ts';

const NS = 'quay-nb';
const DR = 'quay-nb-dr';
const SOURCE = 'quay-noobaa';
/** The claim's ConfigMap and Secret, as the sandbox operator names them. */
const CLAIM = `${QUAY_NAME}-quay-datastorage`;
let s3: S3ServerHandle;
let bed: QuayBed;
let snapshotId: string;
let rows: string[];

interface Spec {
  configBundleSecret: string;
  components: Array<{ kind: string; managed?: boolean }>;
}
const spec = (namespace: string) =>
  bed.api.store.read(QUAY_REGISTRY, namespace, QUAY_NAME)['spec'] as unknown as Spec;
const objectStorageManaged = (namespace: string) =>
  spec(namespace).components.find((c) => c.kind === 'objectstorage')?.managed;
/** The config.yaml of the bundle a namespace's QuayRegistry names. */
const bundleConfig = (namespace: string) => {
  const secret = bed.api.store.read(BuiltIn.secrets, namespace, spec(namespace).configBundleSecret);
  const data = secret['data'] as Record<string, string>;
  return parse(Buffer.from(data['config.yaml'] ?? '', 'base64').toString('utf8')) as Record<
    string,
    unknown
  >;
};
const expectBlobsIn = async (bucket: string) => {
  const blobs = await blobsIn(s3, bucket);
  for (const image of bed.images)
    for (const blob of image.blobs) expect(blobs.has(blob.digest)).toBe(true);
};

let started: RestoreBed;

beforeAll(async () => {
  started = await startRestoreBed('s3-quay-restore-noobaa', ['nb-dr', 'nb-back'], {
    version: '3.9.1',
    namespace: NS,
    bucket: SOURCE,
    count: 2,
    noobaa: true,
  });
  ({ s3, bed, rows, snapshotId } = started);
}, 240_000);

afterAll(async () => {
  await started?.stop();
});

describe('quay restore onto NooBaa managed storage', () => {
  it('restores into a new namespace and bucket: the bucket in a new bundle, objectstorage unmanaged', async () => {
    // Prepare
    const url = await drNamespace(s3, bed, DR, 'dr-s3');

    // Act
    const result = await restoreQuay(s3, bed, {
      snapshotId,
      namespace: DR,
      bucket: 'nb-dr',
      secretName: 'dr-s3',
      registryUrl: url,
    });

    // Assess
    expect(result.cause).toBeUndefined();
    expect(result.status).toBe('SUCCEEDED');
    expect(objectStorageManaged(DR)).toBe(false);
    expect(objectStorageManaged(NS)).toBe(true);
    const config = bundleConfig(DR);
    expect(config['DISTRIBUTED_STORAGE_PREFERENCE']).toEqual(['default']);
    expect(config['DISTRIBUTED_STORAGE_CONFIG']).toMatchObject({
      default: ['RadosGWStorage', { bucket_name: 'nb-dr' }],
    });
    expect(await quayRows(await bed.operator.database(DR, QUAY_NAME), QUAY_DATABASE)).toEqual(rows);
    await expectBlobsIn('nb-dr');
    const tags = (await (await fetch(`${url}/v2/team/app1/tags/list`)).json()) as {
      tags: string[];
    };
    expect(tags.tags).toEqual(['v1']);
  });

  it("restores in place into the claim's bucket after it was lost, managed storage kept", async () => {
    // Prepare: the claim's bucket emptied and the database dropped.
    const bundle = spec(NS).configBundleSecret;
    const client = clientFor(s3);
    await deleteKeys(client, SOURCE, [...(await listAll(client, SOURCE)).keys()]);
    const postgres = await bed.database();
    await postgres.sql('postgres', `DROP DATABASE "${QUAY_DATABASE}" WITH (FORCE);`);

    // Act: the target is the bucket the claim's ConfigMap names, with the claim's Secret.
    const result = await restoreQuay(s3, bed, {
      snapshotId,
      namespace: NS,
      bucket: SOURCE,
      secretName: CLAIM,
      registryUrl: bed.registryUrl,
    });

    // Assess
    expect(result.cause).toBeUndefined();
    expect(result.status).toBe('SUCCEEDED');
    expect(spec(NS).configBundleSecret).toBe(bundle);
    expect(objectStorageManaged(NS)).toBe(true);
    expect(await quayRows(postgres, QUAY_DATABASE)).toEqual(rows);
    await expectBlobsIn(SOURCE);
  });

  it('rolls a move off managed storage back: the old bundle and objectstorage managed again', async () => {
    // Prepare
    const bundle = spec(NS).configBundleSecret;
    keysSecret(s3, bed, NS, 'nb-keys');

    // Act: a registry URL nothing answers on, so the verification fails.
    const result = await restoreQuay(s3, bed, {
      snapshotId,
      namespace: NS,
      bucket: 'nb-back',
      secretName: 'nb-keys',
      registryUrl: NOTHING_ANSWERS,
    });

    // Assess
    expect(result.status).toBe('FAILED');
    expect({ error: result.error, cause: result.cause }).toMatchObject({
      error: 'RestoreRolledBack',
    });
    expect(spec(NS).configBundleSecret).toBe(bundle);
    expect(objectStorageManaged(NS)).toBe(true);
    // It had moved: the bundle made for nb-back is there, made from the one it went back to.
    const made = bed.api.store
      .list(BuiltIn.secrets, NS)
      .filter((s) => s.metadata.labels?.['regvault.dev/restored-from'] === bundle);
    expect(made).toHaveLength(1);
    await bed.operator.waitForAvailable(NS, QUAY_NAME, 30_000);
  });
});
