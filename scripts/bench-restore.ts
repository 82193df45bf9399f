/**
 * `npm run bench:restore`: what the restore's proof costs, and the CLI's peak
 * memory with a 1 GiB layer. On the sandbox (S3 server without checksums, so
 * every blob the copy did not stream is read back and hashed; a real
 * docker-registry; the fake cluster), it backs up a registry holding small
 * images and one image with a 1 GiB layer, then runs `regvault restore`
 * as users run it (the compiled CLI, a child process), alternating a proven restore with
 * one under --skip-blob-hashing for several rounds, and ends with a restore
 * that switches the registry and pulls every image in full. Peak RSS is the
 * child's own (GNU time's maximum resident set size).
 *
 *   npm run bench:restore -- [--rounds 3] [--big-mib 1024] [--json]
 */
import { execFile } from 'node:child_process';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { runBackupLocally } from '../functions/commons/local/runner.ts';
import { OciLayout, pushImage } from '../sandbox/images/index.ts';
import { median } from './bench-stats.ts';
import { buildCli, cliVaultEnv } from './bench-workflow.ts';
import { startSandboxBed } from './sandbox-bed.ts';

const flag = (name: string, fallback: number): number => {
  const at = process.argv.indexOf(`--${name}`);
  const value = at === -1 ? undefined : Number(process.argv[at + 1]);
  return value === undefined || !Number.isFinite(value) ? fallback : value;
};
const rounds = flag('rounds', 3);
const bigMiB = flag('big-mib', 1024);
const json = process.argv.includes('--json');

interface Measured {
  readonly mode: string;
  readonly code: number;
  readonly seconds: number;
  readonly peakRssMiB: number;
  readonly objects: number;
  readonly bytes: number;
}

const cli = new URL('../dist/regvault.mjs', import.meta.url).pathname;

/** The rounds of one kind of restore: their median time, fastest and slowest, and largest peak RSS. */
const roundsOf = (runs: readonly Measured[]) => {
  const seconds = runs.map((m) => m.seconds);
  return {
    medianSeconds: median(seconds),
    spread: [Math.min(...seconds), Math.max(...seconds)],
    peakRssMiB: Math.max(...runs.map((m) => m.peakRssMiB)),
  };
};

/** Runs the compiled CLI (what users run) under GNU time; its exit code, wall time and peak RSS. */
function regvault(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<Omit<Measured, 'mode' | 'objects' | 'bytes'> & { stdout: string }> {
  const started = process.hrtime.bigint();
  return new Promise((resolve) => {
    execFile(
      '/usr/bin/time',
      ['-v', process.execPath, cli, ...args],
      { env, maxBuffer: 64 * 1024 * 1024, timeout: 3_600_000 },
      (err, stdout, stderr) => {
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        const rssKiB = Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(stderr)?.[1] ?? 0);
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
        if (code !== 0) process.stderr.write(stderr.slice(-4000));
        resolve({ code, seconds, peakRssMiB: rssKiB / 1024, stdout });
      },
    );
  });
}

async function main(): Promise<void> {
  await buildCli();
  process.stderr.write(`pushing small images and one with a ${bigMiB} MiB layer...\n`);
  const bed = await startSandboxBed({
    name: 'bench-restore',
    registryBucket: 'registry',
    buckets: ['vault'],
    images: [
      { repositories: 10, tagsPerRepository: 3, layerSizes: [4096, 256 * 1024, 2 * 1024 * 1024] },
    ],
  });
  const { s3, admin, cluster, host } = bed;
  try {
    const layout = await OciLayout.create();
    try {
      await layout.addImage('big', [{ seed: 'bench-big', size: bigMiB * 1024 * 1024 }]);
      await pushImage(layout, 'big', `${host}/bench/big:v1`);
    } finally {
      await layout.remove();
    }
    const deps = bed.deps('vault');
    process.stderr.write('backing up...\n');
    const backup = await runBackupLocally({}, { deps });
    deps.close();
    const snapshot = backup.output as { snapshotId: string; objects: number; bytes: number };
    if (backup.status !== 'SUCCEEDED') throw new Error(`backup failed: ${backup.cause}`);

    const env: NodeJS.ProcessEnv = {
      ...cliVaultEnv(s3, 'vault'),
      KUBECONFIG: cluster.kubeconfigPath,
      REGVAULT_REGISTRY_URL: cluster.registryUrl,
    };
    let next = 0;
    const restore = async (mode: string, extra: readonly string[]): Promise<Measured> => {
      const bucket = `restored-${++next}`;
      await admin.send(new CreateBucketCommand({ Bucket: bucket }));
      const run = await regvault(
        [
          'restore',
          '--snapshot',
          snapshot.snapshotId,
          '--target-bucket',
          bucket,
          '--target-secret',
          'registry-s3-secret',
          '--json',
          ...extra,
        ],
        env,
      );
      const measured = {
        mode,
        code: run.code,
        seconds: run.seconds,
        peakRssMiB: run.peakRssMiB,
        objects: snapshot.objects,
        bytes: snapshot.bytes,
      };
      process.stderr.write(`${JSON.stringify(measured)}\n`);
      return measured;
    };
    const proven: Measured[] = [];
    const skipped: Measured[] = [];
    for (let round = 0; round < rounds; round++) {
      // The peers swap which goes first every round.
      const order = round % 2 === 0 ? ['proven', 'skipped'] : ['skipped', 'proven'];
      for (const mode of order) {
        if (mode === 'proven') proven.push(await restore(mode, ['--no-switch']));
        else skipped.push(await restore(mode, ['--no-switch', '--skip-blob-hashing']));
      }
    }
    const switched = await restore('switch, verify, pull all', ['--pull-sample', 'all']);
    const mib = snapshot.bytes / 1024 / 1024;
    const summary = {
      objects: snapshot.objects,
      bytes: snapshot.bytes,
      bigLayerMiB: bigMiB,
      rounds,
      proven: roundsOf(proven),
      skipped: roundsOf(skipped),
      switched,
      ok: [...proven, ...skipped, switched].every((m) => m.code === 0),
    };
    const line = (name: string, m: { medianSeconds: number; peakRssMiB: number }) =>
      `| ${name} | ${m.medianSeconds.toFixed(1)} s | ${(snapshot.objects / m.medianSeconds).toFixed(0)} | ${(mib / m.medianSeconds).toFixed(1)} | ${m.peakRssMiB.toFixed(0)} MiB |`;
    if (json) process.stdout.write(`${JSON.stringify(summary)}\n`);
    else
      process.stdout.write(
        [
          `restore of ${snapshot.objects} objects, ${mib.toFixed(0)} MiB (one ${bigMiB} MiB layer), CLI, median of ${rounds} rounds`,
          '| restore | time | objects/s | MiB/s | peak RSS |',
          '| --- | --- | --- | --- | --- |',
          line('proven (every blob hashed)', summary.proven),
          line('--skip-blob-hashing', summary.skipped),
          `| with switch, rollout and every image pulled | ${switched.seconds.toFixed(1)} s | | | ${switched.peakRssMiB.toFixed(0)} MiB |`,
          `proven / skipped: ${(summary.proven.medianSeconds / summary.skipped.medianSeconds).toFixed(2)}x; all exit 0: ${summary.ok}`,
          '',
        ].join('\n'),
      );
    if (!summary.ok) process.exitCode = 1;
  } finally {
    await bed.stop();
  }
}

await main();
