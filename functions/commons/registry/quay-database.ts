/**
 * Quay's database through the postgres pod (pods/exec): which database a
 * snapshot names, whether the target already holds one worth keeping, and
 * the load of a `pg_dump -C` text that replaces it (dropped, then fed to
 * psql), with the database as it was streamed out first when the restore
 * keeps it for a rollback.
 */
import { Readable } from 'node:stream';
import { type PodTarget, podText, runInPod } from '../cluster/exec.ts';
import { ClusterError } from '../errors.ts';
import type { CapturedFile, DatabaseDump } from './profile.ts';
import type { QuayCluster } from './quay-cluster.ts';
import { databaseOf, parseQuayConfig } from './quay-config.ts';

/** The database the snapshot's running config names (DB_URI), or the operator's default. */
export async function postgresDatabase(
  files: readonly CapturedFile[],
  name: string,
): Promise<string> {
  const config = files.find((f) => f.name === 'quay-config.yaml');
  const found =
    config === undefined
      ? undefined
      : databaseOf(parseQuayConfig(config.yaml, 'the snapshot quay-config.yaml'));
  return found ?? `${name}-quay-database`;
}

/** A SQL string literal. */
const literal = (text: string) => `'${text.replaceAll("'", "''")}'`;

/** True when `database` exists in the pod's server and holds a table of its own. */
async function holdsTables(cluster: QuayCluster, pod: PodTarget, database: string) {
  const exists = await podText(cluster.kc, pod, [
    'psql',
    '-d',
    'postgres',
    '-tAc',
    `SELECT 1 FROM pg_database WHERE datname = ${literal(database)}`,
  ]);
  if (exists.trim() !== '1') return false;
  const tables = await podText(cluster.kc, pod, [
    'psql',
    '-d',
    database,
    '-tAc',
    "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
  ]);
  return Number(tables.trim()) > 0;
}

/** How a load gets its dump, and where it keeps the database it replaces (if it keeps one). */
export interface DumpLoad {
  open(): Promise<AsyncIterable<Buffer>>;
  save?: ((database: string, dump: () => DatabaseDump) => Promise<void>) | undefined;
}

/**
 * Replaces `database` with a `pg_dump -C` text: kept first (`save`) when it
 * holds tables, then dropped, then the text fed to psql.
 */
export async function loadDump(
  cluster: QuayCluster,
  database: string,
  load: DumpLoad,
  postgresPod: () => Promise<PodTarget>,
): Promise<void> {
  const { namespace } = cluster;
  let pod: PodTarget | undefined;
  await cluster.until(`a running postgres pod in ${namespace} that runs psql`, async () => {
    try {
      pod = await postgresPod();
      await podText(cluster.kc, pod, ['psql', '--version']);
      return true;
    } catch {
      return false;
    }
  });
  if (pod === undefined) throw new ClusterError(`no postgres pod in ${namespace} to restore into`);
  const target = pod;
  if (load.save !== undefined && (await holdsTables(cluster, target, database)))
    await load.save(database, () => {
      const run = runInPod(cluster.kc, target, ['pg_dump', '-C', database]);
      return { database, stream: run.stdout, finished: run.finished };
    });
  const quoted = `"${database.replaceAll('"', '""')}"`;
  await podText(cluster.kc, target, [
    'psql',
    '-d',
    'postgres',
    '-v',
    'ON_ERROR_STOP=1',
    '-c',
    `DROP DATABASE IF EXISTS ${quoted} WITH (FORCE)`,
  ]);
  const running = runInPod(
    cluster.kc,
    target,
    ['psql', '-d', 'postgres', '-q', '-v', 'ON_ERROR_STOP=1'],
    Readable.from(await load.open()),
  );
  // Nothing is read from psql's output: its failure comes through `finished`, not the stream.
  running.stdout.on('error', () => undefined).resume();
  await running.finished;
}
