import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from '@jest/globals';
import { portInUse, typeScriptCommand } from '../../sandbox/process.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const cli = fileURLToPath(new URL('../../bin/regvault.ts', import.meta.url));

interface Ready {
  event: 'ready';
  env: Record<string, string>;
  kubeconfig: string;
  registryUrl: string;
  s3Endpoint: string;
  buckets: { registry: string; vault: string; target: string };
  images: { count: number; references: string[] };
  commands: string[];
}

let sandbox: ChildProcess | undefined;

afterAll(() => {
  // Only when the test failed before its own stop: end the whole group.
  if (sandbox?.exitCode === null && sandbox.signalCode === null && sandbox.pid !== undefined)
    process.kill(-sandbox.pid, 'SIGKILL');
});

/** Resolves with the `ready` object once the sandbox prints it; rejects if it exits first. */
function readyObject(child: ChildProcess, output: { stdout: string; stderr: string }) {
  return new Promise<Ready>((resolve, reject) => {
    child.stdout?.on('data', (chunk: Buffer) => {
      output.stdout += chunk.toString();
      for (const line of output.stdout.split('\n')) {
        if (!line.startsWith('{')) continue;
        const parsed = JSON.parse(line) as { event?: string };
        if (parsed.event === 'ready') resolve(parsed as Ready);
      }
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      output.stderr += chunk.toString();
    });
    child.once('exit', (code) =>
      reject(new Error(`the sandbox exited (${code}) before it was ready:\n${output.stderr}`)),
    );
  });
}

function regvault(args: readonly string[], env: NodeJS.ProcessEnv) {
  const { command, args: prefix } = typeScriptCommand(cli);
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(command, [...prefix, ...args], { env, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({
        code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1,
        stdout,
        stderr,
      }),
    );
  });
}

const jsonLines = (text: string) =>
  text
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Record<string, unknown>);

describe('npm run sandbox', () => {
  it('prints an env the CLI runs with, keeps running, and stops everything on Ctrl-C with exit 0', async () => {
    // Prepare: its own process group, so SIGINT reaches npm and the script as Ctrl-C does.
    // The script runs under `node --import tsx`, not the tsx CLI: that CLI relays a signal,
    // gives its child 30 ms to say it got it, and else SIGKILLs it and exits 130, so on a
    // loaded machine Ctrl-C killed the sandbox mid-cleanup (CI, seed -877553162).
    const output = { stdout: '', stderr: '' };
    sandbox = spawn('npm', ['run', '--silent', 'sandbox', '--', '--json', '--images', '3'], {
      cwd: root,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      sandbox?.once('exit', (code, signal) => resolve({ code, signal })),
    );
    const ready = await readyObject(sandbox, output);
    const env = { PATH: process.env['PATH'], HOME: process.env['HOME'], ...ready.env };
    const s3Port = Number(new URL(ready.s3Endpoint).port);
    const registryPort = Number(new URL(ready.registryUrl).port);

    // Act
    const backup = await regvault(['backup', '--json'], env);
    const list = await regvault(['snapshots', 'list', '--json'], env);
    const stillServing = await portInUse(s3Port);
    process.kill(-(sandbox.pid ?? 0), 'SIGINT');
    const exit = await exited;

    // Assess
    expect(ready.env).toMatchObject({
      KUBECONFIG: ready.kubeconfig,
      REGVAULT_VAULT_BUCKET: ready.buckets.vault,
      REGVAULT_VAULT_ENDPOINT: ready.s3Endpoint,
      REGVAULT_REGISTRY_URL: ready.registryUrl,
    });
    expect(new URL(ready.s3Endpoint).hostname).toBe('127.0.0.1');
    expect(ready.images.references).toHaveLength(3);
    expect(ready.commands.some((command) => command.includes('--target-secret'))).toBe(true);
    expect(backup.stderr).toBe('');
    expect(backup.code).toBe(0);
    expect(jsonLines(backup.stdout).at(-1)).toMatchObject({ event: 'result', ok: true });
    expect(list.code).toBe(0);
    const snapshots = jsonLines(list.stdout).filter((line) => line['event'] === 'snapshot');
    expect(snapshots).toHaveLength(1);
    expect(snapshots[0]).toMatchObject({ status: 'complete' });
    expect(stillServing).toBe(true);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(await portInUse(s3Port)).toBe(false);
    expect(await portInUse(registryPort)).toBe(false);
    expect(existsSync(ready.kubeconfig)).toBe(false);
  }, 90_000);
});
