/**
 * `pods/exec` on the fake apiserver (issue 20's test bed): `kubectl exec` and
 * `@kubernetes/client-node`'s Exec run commands in a "postgres pod" whose
 * commands are the sandbox's real `psql` and `pg_dump`, over the WebSocket
 * remote-command protocol, stdin included; a failing command's exit code,
 * a refused exec and a missing pod come back as a real cluster sends them.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { promisify } from 'node:util';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import { Exec, KubeConfig } from '@kubernetes/client-node';
import type { PodExecHandler } from '../../sandbox/kube/exec.ts';
import type { KubeApiServer } from '../../sandbox/kube/index.ts';
import { type PostgresHandle, startPostgres } from '../../sandbox/postgres.ts';
import { ONE_IMAGE, quayRows, seedQuayDatabase } from '../../sandbox/quay-schema.ts';
import { apiWithPod } from './support.ts';

const run = promisify(execFile);
const TOKEN = 'exec-test-token';
const NS = 'quay-enterprise';
const POD = 'quay-postgres-0';

let api: KubeApiServer;
let postgres: PostgresHandle;
let dir: string;
let kubeconfigPath: string;

/** What the postgres pod runs: its client programs against the sandbox server, nothing else. */
const postgresPod: PodExecHandler = async ([program, ...args], io) => {
  if (program !== 'psql' && program !== 'pg_dump') {
    io.stderr(`exec: "${program}": executable file not found in $PATH\n`);
    return 127;
  }
  const child = postgres.spawn(program, args);
  child.stdout?.on('data', (chunk: Buffer) => io.stdout(chunk));
  child.stderr?.on('data', (chunk: Buffer) => io.stderr(chunk));
  if (child.stdin !== null) io.stdin.pipe(child.stdin);
  return new Promise((resolve) => child.once('close', (code) => resolve(code ?? 1)));
};

/** `kubectl exec` into the postgres pod: `flags` before the `--`, then the command. */
const inPod = (flags: readonly string[], ...command: string[]) => [
  'exec',
  ...flags,
  '-n',
  NS,
  POD,
  '--',
  ...command,
];

async function kubectl(args: readonly string[], stdin?: string): Promise<string> {
  const env = { ...process.env };
  delete env['KUBECONFIG'];
  const child = run(
    'kubectl',
    ['--kubeconfig', kubeconfigPath, '--cache-dir', join(dir, 'cache'), ...args],
    {
      env,
      timeout: 30_000,
    },
  );
  if (stdin !== undefined) child.child.stdin?.end(stdin);
  return (await child).stdout;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'exec-test-'));
  postgres = await startPostgres({ name: 'postgres-exec-test' });
  await seedQuayDatabase(postgres, 'quay', [ONE_IMAGE]);
  ({ api, kubeconfig: kubeconfigPath } = await apiWithPod(dir, TOKEN, NS, POD, {
    'quay-component': 'postgres',
  }));
  api.setPodExec(NS, POD, postgresPod);
}, 60_000);

beforeEach(() => api.setForbidden([]));

afterAll(async () => {
  await api?.stop();
  await postgres?.stop();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

describe('pods/exec', () => {
  it('runs a command for kubectl exec and returns its output', async () => {
    // Act
    const out = await kubectl(
      inPod([], 'psql', '-U', 'postgres', '-d', 'quay', '-At', '-c', 'SELECT count(*) FROM tag'),
    );

    // Assess
    expect(out).toBe('1\n');
  });

  it("feeds kubectl exec -i's stdin to the command", async () => {
    // Prepare
    await postgres.sql('postgres', 'CREATE DATABASE from_stdin;');

    // Act
    await kubectl(
      inPod(['-i'], 'psql', '-U', 'postgres', '-d', 'from_stdin', '-q', '-v', 'ON_ERROR_STOP=1'),
      'CREATE TABLE t (n int); INSERT INTO t VALUES (1), (2), (3);\n',
    );

    // Assess
    expect(await postgres.sql('from_stdin', 'SELECT sum(n) FROM t;')).toBe('6\n');
  });

  it("streams pg_dump through client-node's Exec into psql on another database", async () => {
    // Prepare
    await postgres.sql('postgres', 'CREATE DATABASE copied;');
    const kc = new KubeConfig();
    kc.loadFromFile(kubeconfigPath);
    const exec = new Exec(kc);
    const chunks: Buffer[] = [];
    const stdout = new Writable({
      write(chunk: Buffer, _encoding, done) {
        chunks.push(chunk);
        done();
      },
    });

    // Act
    const status = await new Promise<string>((resolve, reject) => {
      exec
        .exec(
          NS,
          POD,
          'postgres',
          ['pg_dump', '-U', 'postgres', '--no-owner', 'quay'],
          stdout,
          null,
          null,
          false,
          (s) => resolve(s.status ?? ''),
        )
        .catch(reject);
    });
    const load = new PassThrough();
    const loaded = new Promise<string>((resolve, reject) => {
      exec
        .exec(
          NS,
          POD,
          'postgres',
          ['psql', '-U', 'postgres', '-d', 'copied', '-q', '-v', 'ON_ERROR_STOP=1'],
          null,
          null,
          load,
          false,
          (s) => resolve(s.status ?? ''),
        )
        .catch(reject);
    });
    load.end(Buffer.concat(chunks));

    // Assess
    expect(status).toBe('Success');
    expect(await loaded).toBe('Success');
    expect(await quayRows(postgres, 'copied')).toEqual(await quayRows(postgres, 'quay'));
  });

  it("ends with the command's exit code and stderr when it fails", async () => {
    // Act
    const failed = kubectl(
      inPod([], 'psql', '-U', 'postgres', '-d', 'nothing_here', '-c', 'SELECT 1'),
    );

    // Assess
    await expect(failed).rejects.toMatchObject({
      code: 2,
      stderr: expect.stringContaining('nothing_here'),
    });
  });

  it('refuses an exec RBAC forbids, and one into a pod that is not there', async () => {
    // Prepare
    api.setForbidden([{ verb: 'create', resource: 'pods/exec', namespace: NS }]);

    // Act
    const forbidden = await kubectl(inPod([], 'psql', '--version')).catch(
      (err: { stderr?: string }) => err.stderr ?? '',
    );
    const missing = await kubectl([
      'exec',
      '-n',
      'default',
      'no-such-pod',
      '--',
      'psql',
      '--version',
    ]).catch((err: { stderr?: string }) => err.stderr ?? '');

    // Assess
    expect(forbidden).toContain(
      'cannot create resource "pods/exec" in API group "" in the namespace "quay-enterprise"',
    );
    expect(missing).toContain('pods "no-such-pod" not found');
  });
});
