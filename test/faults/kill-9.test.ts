/**
 * kill -9 of the CLI in the middle of a backup (issue 18, item 6): the run
 * that was killed leaves a `running` snapshot and its run lease behind; the
 * next backup of the same source sees the lease's process gone, marks the
 * dead snapshot failed with the reason, takes the lease and completes with
 * an inventory equal to the source. Or `backup --retry-failed` mends the
 * killed run's own snapshot: it copies again the shards that never ended.
 * The CLI runs as users run it, a child process, against the sandbox S3
 * server.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { SnapshotStatus } from '../../functions/commons/vault/format.ts';
import { listRunLeases } from '../../functions/commons/vault/run-lease.ts';
import { listSnapshots, readInventory } from '../../functions/commons/vault/store.ts';
import { typeScriptCommand } from '../../sandbox/process.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import { jsonLines, runRegvault, sandboxEnv } from '../support/cli.ts';
import { listAll, putObjects, serverWithBuckets, vaultDeps } from '../support/s3.ts';

const OBJECTS = 3_000;
const cli = fileURLToPath(new URL('../../bin/regvault.ts', import.meta.url));

let s3: S3ServerHandle;
let client: S3Client;
let env: NodeJS.ProcessEnv;
const args = ['backup', '--source-bucket', 'source', '--shard-objects', '1000', '--json'];

/** Starts `regvault backup` and kills it (SIGKILL) once it has copied some objects. */
async function backupKilledMidCopy(
  env: NodeJS.ProcessEnv,
): Promise<{ copiedBeforeKill: number; pid: number }> {
  const { command, args: prefix } = typeScriptCommand(cli);
  // Two copies at a time: the copy takes long enough to be killed in its middle.
  const child: ChildProcess = spawn(command, [...prefix, ...args, '--concurrency', '2'], { env });
  let seen = '';
  return new Promise((resolve, reject) => {
    child.stdout?.on('data', (chunk: Buffer) => {
      seen += chunk.toString('utf8');
      const lines = seen.split('\n');
      seen = lines.pop() ?? '';
      for (const line of lines) {
        const event = JSON.parse(line) as { event?: string; copied?: number };
        if (
          event.event === 'progress' &&
          (event.copied ?? 0) >= OBJECTS / 10 &&
          child.pid !== undefined
        ) {
          const pid = child.pid;
          child.kill('SIGKILL');
          resolve({ copiedBeforeKill: event.copied ?? 0, pid });
        }
      }
    });
    child.on('exit', (code, signal) => {
      if (signal !== 'SIGKILL')
        reject(new Error(`the backup ended (${code}) before it was killed`));
    });
  });
}

beforeAll(async () => {
  ({ server: s3, client } = await serverWithBuckets('s3-kill-9', [
    'vault',
    'vault-retry',
    'source',
  ]));
  await putObjects(
    client,
    'source',
    Array.from({ length: OBJECTS }, (_, i) => ({
      key: `data/${String(i).padStart(5, '0')}`,
      body: `object ${i} `.repeat(20),
    })),
    32,
  );
  env = sandboxEnv(s3, 'vault');
}, 120_000);

afterAll(async () => {
  client?.destroy();
  await s3?.stop();
});

describe('kill -9 of the CLI mid-backup', () => {
  it('leaves a run the next backup marks failed with the reason, and that backup completes with the source in its inventory', async () => {
    // Prepare
    const killed = await backupKilledMidCopy(env);
    const deps = vaultDeps(s3, 'vault', '');
    const left = await listSnapshots(deps.vault);
    const leases = await listRunLeases(deps.vault);

    // Act
    const started = Date.now();
    const rerun = await runRegvault(args, env);
    const rerunMs = Date.now() - started;

    // Assess
    expect(killed.copiedBeforeKill).toBeGreaterThan(0);
    expect(left.map((m) => m.status)).toEqual([SnapshotStatus.Running]);
    expect(leases.map((l) => l.holder.pid)).toEqual([killed.pid]);
    expect(rerun.code).toBe(0);
    const result = jsonLines(rerun.stdout).at(-1);
    expect(result).toMatchObject({ event: 'result', ok: true, exitCode: 0 });
    const after = await listSnapshots(deps.vault);
    const dead = after.find((m) => m.id === left[0]?.id);
    const fresh = after.find((m) => m.id !== left[0]?.id);
    expect(dead?.status).toBe(SnapshotStatus.Failed);
    expect(dead?.checks['workflow']?.detail).toContain(`RunDied: regvault (pid ${killed.pid} on `);
    expect(dead?.checks['workflow']?.detail).toContain('is gone (no such process on this host');
    expect(fresh?.status).toBe(SnapshotStatus.Complete);
    const source = await listAll(client, 'source');
    const inventory = fresh === undefined ? [] : await readInventory(deps.vault, fresh);
    expect(new Map(inventory.map((r) => [r.key, r.size]))).toEqual(
      new Map([...source].map(([key, { size }]) => [key, size])),
    );
    expect(await listRunLeases(deps.vault)).toEqual([]);
    process.stdout.write(
      `kill -9 after ${killed.copiedBeforeKill} of ${OBJECTS} copied; the re-run ended the dead run and completed in ${rerunMs} ms\n`,
    );
    deps.close();
  }, 240_000);

  it('leaves a run whose own snapshot --retry-failed completes, copying again the shards that never ended', async () => {
    // Prepare
    const retryEnv = sandboxEnv(s3, 'vault-retry');
    const killed = await backupKilledMidCopy(retryEnv);
    const deps = vaultDeps(s3, 'vault-retry', '');
    const [left] = await listSnapshots(deps.vault);

    // Act
    const retry = await runRegvault(
      ['backup', '--retry-failed', left?.id ?? '(none)', '--json'],
      retryEnv,
    );

    // Assess
    expect(killed.copiedBeforeKill).toBeGreaterThan(0);
    expect(retry.stderr).toBe('');
    expect(retry.code).toBe(0);
    const result = jsonLines(retry.stdout).at(-1) as { shardsCopiedAgain?: string[] };
    expect(result).toMatchObject({ event: 'result', ok: true, snapshot: { status: 'complete' } });
    expect(result.shardsCopiedAgain?.length).toBeGreaterThan(0);
    const after = await listSnapshots(deps.vault);
    expect(after.map((m) => [m.id, m.status])).toEqual([[left?.id, SnapshotStatus.Complete]]);
    const source = await listAll(client, 'source');
    const inventory = after[0] === undefined ? [] : await readInventory(deps.vault, after[0]);
    expect(new Map(inventory.map((r) => [r.key, r.size]))).toEqual(
      new Map([...source].map(([key, { size }]) => [key, size])),
    );
    expect(after[0]?.totals).toMatchObject({ failed: 0, listed: OBJECTS });
    expect(await listRunLeases(deps.vault)).toEqual([]);
    deps.close();
  }, 240_000);
});
