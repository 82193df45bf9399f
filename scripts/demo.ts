/**
 * `npm run demo`: the main job end to end on this machine, on the built-in
 * sandbox. It starts an S3 server, a fake cluster whose ModuleInfo runs a
 * real `docker-registry` on bucket `registry`, pushes sample images, backs the
 * registry up into a vault, deletes the bucket (the disaster), restores the
 * latest snapshot into `registry-bucket-restored`, switches the ModuleInfo,
 * waits for the registry to roll, verifies it and pulls every image back.
 *
 * `--json` prints progress as JSON lines and ends with one result object.
 */
import { DeleteBucketCommand } from '@aws-sdk/client-s3';
import { Command } from 'commander';
import { loadKubeConfig } from '../functions/commons/cluster/kube.ts';
import { runRestoreLocally } from '../functions/commons/local/runner.ts';
import { acpProfile } from '../functions/commons/registry/acp.ts';
import { pullImage } from '../sandbox/images/index.ts';
import { runQuayDemo } from './demo-quay.ts';
import { demoBackup, emptyBucket } from './demo-steps.ts';
import { ensureSandboxPackages, type Say, startSandboxBed } from './sandbox-bed.ts';

const program = new Command()
  .name('npm run demo --')
  .description('back up and restore a registry on the local sandbox')
  .option('--json', 'JSON lines of progress, then one result object', false)
  .option('--repositories <n>', 'repositories to push', '4')
  .option('--tags <n>', 'tags per repository', '3')
  .option(
    '--profile <name>',
    'acp (a ModuleInfo) or quay (a QuayRegistry with its database)',
    'acp',
  )
  .parse();
const options = program.opts<{
  json: boolean;
  repositories: string;
  tags: string;
  profile: string;
}>();

const say: Say = (event, text, fields = {}) => {
  if (options.json) process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
  else process.stdout.write(`${text}\n`);
};

async function main(): Promise<number> {
  ensureSandboxPackages('the demo', say, options.json);
  if (options.profile === 'quay')
    return runQuayDemo({ json: options.json, images: Number(options.repositories), say });
  if (options.profile !== 'acp')
    throw new Error(`--profile: "${options.profile}" is not one the demo runs; give acp or quay`);
  const started = Date.now();
  say(
    'sandbox',
    'starting the sandbox: S3 server, fake cluster API, registry on bucket "registry"',
  );
  const bed = await startSandboxBed({
    name: 'demo-s3',
    registryBucket: 'registry',
    buckets: ['regvault-vault', 'registry-bucket-restored'],
    images: [
      {
        repositories: Number(options.repositories),
        tagsPerRepository: Number(options.tags),
        multiArch: true,
        layerSizes: [4096, 256 * 1024],
      },
    ],
    beforePush: (host) =>
      say(
        'push',
        `pushing ${options.repositories} repositories x ${options.tags} tags (shared base layer, one multi-arch index) to ${host}`,
      ),
  });
  const { s3, admin, cluster, host, images } = bed;
  const deps = bed.deps('regvault-vault');
  try {
    say(
      'backup',
      'backup: discover the ModuleInfo, plan, copy links then blobs, finalize the snapshot',
    );
    const summary = await demoBackup(deps, say);

    say('disaster', 'disaster: deleting every object and the bucket "registry"');
    await emptyBucket(admin, s3.region, 'registry');
    await admin.send(new DeleteBucketCommand({ Bucket: 'registry' }));

    say(
      'restore',
      'restore: latest snapshot into "registry-bucket-restored", switch the ModuleInfo, wait for the rollout, verify',
    );
    const restore = await runRestoreLocally(
      {
        snapshot: 'latest',
        target: {
          bucket: 'registry-bucket-restored',
          endpoint: s3.endpoint,
          region: s3.region,
          secretName: 'registry-s3-secret',
        },
        pullSample: 3,
      },
      {
        deps,
        waitMs: 500,
        onState: (state) => say('state', `  - ${state}`, { workflow: 'restore', state }),
      },
    );
    say(
      'restore-done',
      `restore ${restore.status}${restore.cause === undefined ? '' : `: ${restore.cause}`}`,
      { status: restore.status },
    );
    const restored = restore.output as
      | { verify?: { ok: boolean; repositories: number; tags: number; pulled: number } }
      | undefined;

    const storage = (await acpProfile(loadKubeConfig({ path: cluster.kubeconfigPath })).discover())
      .storage;
    let pulledOk = 0;
    let pulled = 0;
    for (const repository of images.repositories) {
      for (const [tag, digest] of Object.entries(repository.tags)) {
        pulled++;
        if ((await pullImage(`${host}/${repository.name}:${tag}`)).digest === digest) pulledOk++;
      }
    }
    const verifyOk =
      restore.status === 'SUCCEEDED' && restored?.verify?.ok === true && pulledOk === pulled;
    const seconds = (Date.now() - started) / 1000;
    if (!options.json) {
      process.stdout.write(
        [
          '',
          'report',
          `  snapshot      ${summary.snapshotId}: ${summary.objects} objects, ${summary.bytes} bytes, ${summary.repositories} repositories, ${summary.tags} tags`,
          `  ModuleInfo    spec.config.s3storage.bucket = ${storage.bucket}`,
          `  verification  ${restored?.verify?.ok === true ? 'passed' : 'FAILED'}: catalog, tags and manifest digests checked; ${restored?.verify?.pulled ?? 0} images pulled with every digest checked`,
          `  skopeo pulls  ${pulledOk}/${pulled} images pulled back with the digests they were pushed with`,
          `  took          ${seconds.toFixed(1)} s`,
          '',
          'against a real cluster and S3 (see README.md):',
          '  npm run regvault -- backup  --vault-bucket VAULT --vault-region REGION --kubeconfig ~/.kube/config',
          '  npm run regvault -- snapshots list --vault-bucket VAULT --vault-region REGION',
          '  npm run regvault -- restore --vault-bucket VAULT --vault-region REGION --kubeconfig ~/.kube/config \\',
          '      --target-bucket NEW_BUCKET --target-region REGION --target-secret SECRET_NAME --registry-url https://REGISTRY',
          '',
        ].join('\n'),
      );
    }
    const result = {
      backup: { status: summary.status, snapshotId: summary.snapshotId, copied: summary.copied },
      restore: {
        status: restore.status === 'SUCCEEDED' ? 'succeeded' : 'failed',
        bucket: storage.bucket,
      },
      verify: { ok: verifyOk, pulled, pulledOk },
      objects: summary.objects,
      bytes: summary.bytes,
      seconds,
    };
    if (options.json) process.stdout.write(`${JSON.stringify(result)}\n`);
    return verifyOk ? 0 : 1;
  } finally {
    deps.close();
    await bed.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`demo failed: ${message}\n`);
    // --json promises one result object last, also when the demo fails.
    if (options.json)
      process.stdout.write(`${JSON.stringify({ event: 'result', ok: false, error: message })}\n`);
    process.exit(1);
  },
);
