/**
 * A real PostgreSQL server for the tests of a registry whose metadata lives
 * in a database (Quay, issue 20): Debian's server binaries on a private data
 * directory, port and socket directory, started and stopped by the test. It
 * stands in for Quay's postgres pod; `quay-schema.ts` gives it Quay's tables.
 *
 * The server refuses to run as root, so when the tests run as root every
 * server program runs as the `postgres` user through `runuser`, on a data
 * directory that user owns (FACTS.md).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, LOOPBACK, type ManagedProcess, spawnManaged, waitFor } from './process.ts';

/** The programs of a PostgreSQL installation the sandbox runs. */
export type PostgresProgram = 'initdb' | 'postgres' | 'psql' | 'pg_dump' | 'pg_isready';

export interface PostgresHandle {
  readonly port: number;
  /** Where the server's Unix socket is (clients connect with `-h <socketDir>`). */
  readonly socketDir: string;
  /** The superuser clients connect as. */
  readonly user: string;
  /**
   * Starts one of the installation's programs against this server (as the
   * server's OS user), with stdin, stdout and stderr as pipes: what a
   * `kubectl exec` into the postgres pod runs.
   */
  spawn(
    program: Exclude<PostgresProgram, 'initdb' | 'postgres'>,
    args: readonly string[],
  ): ChildProcess;
  /** Runs `psql` with `sql` on database `database`; its output, or an error with psql's message. */
  sql(database: string, sql: string): Promise<string>;
  stop(): Promise<void>;
}

/** The newest installed server's `bin` directory (Debian keeps them off PATH). */
function binDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((name) => existsSync(join(root, name, 'bin', 'initdb')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  const newest = versions[0];
  if (newest === undefined)
    throw new Error(
      `no PostgreSQL server in ${root}/<version>/bin: install Debian's postgresql (apt-get install -y postgresql; .ci/run does)`,
    );
  return join(root, newest, 'bin');
}

const asRoot = process.getuid?.() === 0;

/** The command line of `program`, as the `postgres` user when the tests run as root. */
function command(bin: string, program: PostgresProgram, args: readonly string[]): string[] {
  const path = join(bin, program);
  return asRoot ? ['/usr/sbin/runuser', '-u', 'postgres', '--', path, ...args] : [path, ...args];
}

/** Starts a private server; `stop` ends it and removes its files. */
export async function startPostgres(options: { name?: string } = {}): Promise<PostgresHandle> {
  const bin = binDir();
  const home = mkdtempSync(join(tmpdir(), 'regvault-postgres-'));
  const data = join(home, 'data');
  const user = 'postgres';
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim());
    chownSync(home, uid, gid);
  }
  const [initdb = '', ...initArgs] = command(bin, 'initdb', [
    '-D',
    data,
    '-A',
    'trust',
    '-U',
    user,
    '--no-sync',
    '-E',
    'UTF8',
  ]);
  execFileSync(initdb, initArgs, { stdio: 'pipe' });
  const port = await freePort();
  const [program = '', ...serverArgs] = command(bin, 'postgres', [
    '-D',
    data,
    '-p',
    String(port),
    '-k',
    home,
    '-c',
    `listen_addresses=${LOOPBACK}`,
    '-c',
    'fsync=off',
  ]);
  const postmaster: ManagedProcess = spawnManaged({
    name: options.name ?? `postgres-${port}`,
    command: program,
    args: serverArgs,
  });
  const client = (
    program: Exclude<PostgresProgram, 'initdb' | 'postgres'>,
    args: readonly string[],
  ) => {
    // `--version` takes no connection options (and refuses them), as in a pod.
    const version = args[0] === '--version' || args[0] === '-V';
    const [first = '', ...rest] = command(
      bin,
      program,
      version ? args : ['-h', home, '-p', String(port), ...args],
    );
    return spawn(first, rest, { stdio: ['pipe', 'pipe', 'pipe'] });
  };
  const finished = (child: ChildProcess) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      let stdout = '';
      let stderr = '';
      child.stdout?.on('data', (chunk: Buffer) => {
        stdout += chunk.toString('utf8');
      });
      child.stderr?.on('data', (chunk: Buffer) => {
        stderr += chunk.toString('utf8');
      });
      child.once('close', (code) => resolve({ code, stdout, stderr }));
    });
  await waitFor(
    `PostgreSQL on port ${port}`,
    async () => (await finished(client('pg_isready', ['-U', user]))).code === 0,
    { process: postmaster, timeoutMs: 30_000, intervalMs: 100 },
  );
  return {
    port,
    socketDir: home,
    user,
    spawn: client,
    async sql(database, sql) {
      const child = client('psql', [
        '-U',
        user,
        '-d',
        database,
        '-X',
        '-q',
        '-A',
        '-t',
        '-v',
        'ON_ERROR_STOP=1',
      ]);
      child.stdin?.end(sql);
      const result = await finished(child);
      if (result.code !== 0)
        throw new Error(`psql on ${database} exited ${result.code}: ${result.stderr.trim()}`);
      return result.stdout;
    },
    async stop() {
      // SIGINT: PostgreSQL's fast shutdown (SIGTERM waits for every client to leave).
      if (postmaster.running()) postmaster.child.kill('SIGINT');
      await postmaster.stop(10_000);
      rmSync(home, { recursive: true, force: true });
    },
  };
}
