/**
 * The commands' own flag values that are not numbers (see numbersOf in
 * ./settings.ts), and the snapshot a flag names, found before anything runs.
 */
import { z } from 'zod';
import { InputError } from '../functions/commons/errors.ts';
import {
  SNAPSHOT_ID,
  SNAPSHOT_ID_EXAMPLE,
  type SnapshotManifest,
} from '../functions/commons/vault/format.ts';
import {
  listSnapshotIds,
  listSnapshots,
  readManifest,
  rootOf,
  type Vault,
} from '../functions/commons/vault/store.ts';
import { run } from './context.ts';
import { bucketName, numberFrom, settingLabel } from './settings.ts';

/** A flag given more than once (`--repository a --repository b`): commander's collector. */
export const repeatable = (value: string, previous: readonly string[]): string[] => [
  ...previous,
  value,
];

/** `--pull-sample`: a count of images, or `all`. */
export function pullSampleOf(value: unknown): number | 'all' {
  if (value === undefined) return 3;
  if (value === 'all') return 'all';
  const parsed = numberFrom(z.number().int().min(0).max(1_000_000)).safeParse(value);
  if (!parsed.success)
    throw new InputError('the restore settings are not valid', [
      `--pull-sample: expected a count of images (0 or more) or "all", got ${JSON.stringify(value)}`,
    ]);
  return parsed.data;
}

/** `--from`/`--to`: an s3://bucket/prefix URL. */
export function parseS3Url(value: string, flag: string): { bucket: string; prefix: string } {
  const match = /^s3:\/\/([^/]+)\/?(.*)$/.exec(value);
  if (match?.[1] === undefined)
    throw new InputError('the copy locations are not valid', [
      `${flag}: expected s3://bucket/prefix, got ${value}`,
    ]);
  const checked = bucketName.safeParse(match[1]);
  if (!checked.success)
    throw new InputError('the copy locations are not valid', [
      `${flag}: ${checked.error.issues[0]?.message ?? 'bad bucket'}`,
    ]);
  return { bucket: match[1], prefix: match[2] ?? '' };
}

/**
 * A snapshot id the user gave has the one form ids have, or is `latest`
 * unless `latest` is refused there; `subject` is the flag or argument.
 */
export function checkSnapshotId(id: string, subject: string, latest = true): string {
  if (SNAPSHOT_ID.test(id) || (latest && id === 'latest')) return id;
  throw new InputError(`${id} is not a snapshot id`, [
    `${subject}: expected an id such as ${SNAPSHOT_ID_EXAMPLE}${latest ? ', or latest' : ''}; run \`regvault snapshots list\` for the ids`,
  ]);
}

/** `--vault-bucket (from ...) and --vault-prefix (...)`: where the user points at a vault. */
function vaultSettings(): string {
  return `${settingLabel('vaultBucket', run.origins.vaultBucket)} and ${settingLabel('vaultPrefix', run.origins.vaultPrefix)}`;
}

/**
 * The snapshot `id` names in the vault (`latest`: the newest complete one),
 * or bad input naming `subject` and what to name instead: an id the vault
 * does not hold, or (with `complete`) a snapshot that is not complete.
 */
export async function snapshotNamed(
  vault: Vault,
  id: string,
  subject: string,
  complete = true,
): Promise<SnapshotManifest> {
  const where = `s3://${vault.location.bucket}/${rootOf(vault)}`;
  const list = '`regvault snapshots list` shows each one with its status';
  if (id === 'latest') {
    const all = await listSnapshots(vault);
    const latest = all.filter((m) => m.status === 'complete').at(-1);
    if (latest !== undefined) return latest;
    throw new InputError(`the vault ${where} holds no complete snapshot`, [
      all.length === 0
        ? `${subject}: the vault holds no snapshots; run \`regvault backup\` first, or fix ${vaultSettings()} if the vault is elsewhere`
        : `${subject}: its ${all.length} snapshots are ${[...new Set(all.map((m) => m.status))].join(' or ')}; run \`regvault backup\` until one completes (${list})`,
    ]);
  }
  const manifest = await readManifest(vault, id);
  if (manifest === undefined) {
    const known = await listSnapshotIds(vault);
    throw new InputError(`snapshot ${id} is not in the vault ${where}`, [
      known.length === 0
        ? `${subject}: the vault holds no snapshots; fix ${vaultSettings()} if the vault is elsewhere, or run \`regvault backup\` first`
        : `${subject}: name one the vault holds (the newest: ${known.slice(-3).join(', ')}; ${list}), or latest`,
    ]);
  }
  if (complete && manifest.status !== 'complete')
    throw new InputError(`snapshot ${id} is ${manifest.status}, not complete`, [
      `${subject}: name a complete snapshot, or latest for the newest (${list})`,
    ]);
  return manifest;
}

/** A partial backup's `--repository` and `--exclude-repository` globs, as the backup input names them. */
export function selectionFlags(flags: Record<string, unknown>): {
  repositories?: string[];
  excludeRepositories?: string[];
} {
  const globs = (name: string) => (Array.isArray(flags[name]) ? (flags[name] as string[]) : []);
  const taken = globs('repository');
  const left = globs('excludeRepository');
  return {
    ...(taken.length === 0 ? {} : { repositories: taken }),
    ...(left.length === 0 ? {} : { excludeRepositories: left }),
  };
}
