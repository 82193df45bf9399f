/**
 * `npm run demo -- --profile quay`: the Quay round trip on the sandbox. A
 * fake cluster whose sandbox Quay Operator runs a QuayRegistry (a real
 * `docker-registry` on bucket `quay-storage`, a real PostgreSQL as its
 * database pod); images are pushed and Quay's rows written; the backup
 * quiesces Quay, dumps the database through pods/exec, copies the blobs and
 * resumes it; the disaster empties the bucket and drops the database; the
 * restore applies the snapshot's Secrets and QuayRegistry quiesced, loads
 * the dump with psql, points the config bundle at `quay-restored`, resumes
 * and verifies; then every image is pulled back and the rows compared.
 */
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { createLocalDeps } from '../functions/commons/local/deps.ts';
import { runRestoreLocally } from '../functions/commons/local/runner.ts';
import { pullImage } from '../sandbox/images/index.ts';
import { BuiltIn } from '../sandbox/kube/resources.ts';
import { QUAY_DATABASE, startQuayBed } from '../sandbox/quay-bed.ts';
import { quayRows } from '../sandbox/quay-schema.ts';
import { startS3Server } from '../sandbox/s3/index.ts';
import { demoBackup, emptyBucket } from './demo-steps.ts';
import type { Say } from './sandbox-bed.ts';

const NAMESPACE = 'quay-enterprise';

/** Runs the Quay round trip; 0 when everything came back. */
export async function runQuayDemo(options: {
  readonly json: boolean;
  readonly images: number;
  readonly say: Say;
}): Promise<number> {
  const { say } = options;
  const started = Date.now();
  say(
    'sandbox',
    'starting the sandbox: S3 server, fake cluster API, Quay Operator, Quay on bucket "quay-storage"',
  );
  const s3 = await startS3Server({ name: 'demo-quay-s3', computeChecksums: true });
  const admin = new S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    credentials: s3.credentials,
    forcePathStyle: true,
  });
  const bed = await startQuayBed(s3, {
    version: '3.9.1',
    namespace: NAMESPACE,
    bucket: 'quay-storage',
    count: options.images,
  }).catch(async (err: unknown) => {
    await s3.stop();
    throw err;
  });
  for (const bucket of ['regvault-vault', 'quay-restored'])
    await admin.send(new CreateBucketCommand({ Bucket: bucket }));
  const deps = createLocalDeps({
    vault: {
      location: {
        endpoint: s3.endpoint,
        region: s3.region,
        bucket: 'regvault-vault',
        prefix: '',
        forcePathStyle: true,
        access: 'vault',
      },
      credentials: s3.credentials,
    },
    kube: { path: bed.kubeconfig },
    profileName: 'quay',
    profileSettings: { namespace: NAMESPACE, waitSeconds: 120 },
    registryUrl: bed.registryUrl,
  });
  try {
    const rowsBefore = await quayRows(await bed.database(), QUAY_DATABASE);
    say(
      'push',
      `pushed ${bed.images.length} images to ${bed.registryUrl}; Quay's database holds ${rowsBefore.length} tags`,
    );
    say(
      'backup',
      'backup: capture the QuayRegistry and Secrets, quiesce Quay, pg_dump through the postgres pod, copy the blobs, resume',
    );
    const summary = await demoBackup(deps, say);

    say('disaster', 'disaster: every object of "quay-storage" deleted and the database dropped');
    await emptyBucket(admin, s3.region, 'quay-storage');
    await (await bed.database()).sql('postgres', `DROP DATABASE "${QUAY_DATABASE}" WITH (FORCE);`);

    bed.api.store.create(BuiltIn.secrets, {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'quay-restored-s3', namespace: NAMESPACE },
      data: {
        'access-key-id': Buffer.from(s3.credentials.accessKeyId).toString('base64'),
        'secret-access-key': Buffer.from(s3.credentials.secretAccessKey).toString('base64'),
      },
    });
    say(
      'restore',
      'restore: latest snapshot into "quay-restored": Secrets and QuayRegistry quiesced, psql the dump, new config bundle, resume, verify',
    );
    const restore = await runRestoreLocally(
      {
        snapshot: 'latest',
        target: {
          bucket: 'quay-restored',
          endpoint: s3.endpoint,
          region: s3.region,
          secretName: 'quay-restored-s3',
        },
        pullSample: 'all',
      },
      {
        deps,
        waitMs: 300,
        onState: (state) => say('state', `  - ${state}`, { workflow: 'restore', state }),
      },
    );
    say(
      'restore-done',
      `restore ${restore.status}${restore.cause === undefined ? '' : `: ${restore.cause}`}`,
      {
        status: restore.status,
      },
    );
    const rowsAfter = await quayRows(await bed.database(), QUAY_DATABASE);
    const host = new URL(bed.registryUrl).host;
    let pulledOk = 0;
    for (const image of bed.images)
      if (
        (await pullImage(`${host}/${image.namespace}/${image.repository}:${image.tag}`)).digest ===
        image.manifestDigest
      )
        pulledOk++;
    const rowsOk = JSON.stringify(rowsAfter) === JSON.stringify(rowsBefore);
    const ok = restore.status === 'SUCCEEDED' && rowsOk && pulledOk === bed.images.length;
    const seconds = (Date.now() - started) / 1000;
    const result = {
      profile: 'quay',
      backup: { status: summary.status, snapshotId: summary.snapshotId, copied: summary.copied },
      restore: {
        status: restore.status === 'SUCCEEDED' ? 'succeeded' : 'failed',
        bucket: 'quay-restored',
      },
      database: { rows: rowsAfter.length, same: rowsOk },
      verify: { ok, pulled: bed.images.length, pulledOk },
      objects: summary.objects,
      bytes: summary.bytes,
      seconds,
    };
    if (options.json) process.stdout.write(`${JSON.stringify(result)}\n`);
    else
      process.stdout.write(
        [
          '',
          'report',
          `  snapshot      ${summary.snapshotId}: ${summary.objects} objects, ${summary.bytes} bytes, and Quay's database`,
          `  database      ${rowsAfter.length} tag rows after the restore, ${rowsOk ? 'the same as' : 'NOT the same as'} before the disaster`,
          `  skopeo pulls  ${pulledOk}/${bed.images.length} images pulled back with the digests they were pushed with`,
          `  took          ${seconds.toFixed(1)} s`,
          '',
        ].join('\n'),
      );
    return ok ? 0 : 1;
  } finally {
    deps.close();
    admin.destroy();
    await bed.stop();
    await s3.stop();
  }
}
