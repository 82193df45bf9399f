/** The commands' own flag values that are not numbers (see numbersOf in ./settings.ts). */
import { z } from 'zod';
import { InputError } from '../functions/commons/errors.ts';
import { SNAPSHOT_ID, SNAPSHOT_ID_EXAMPLE } from '../functions/commons/vault/format.ts';
import { bucketName } from './settings.ts';

/** `--pull-sample`: a count of images, or `all`. */
export function pullSampleOf(value: unknown): number | 'all' {
  if (value === undefined) return 3;
  if (value === 'all') return 'all';
  const parsed = z.coerce.number().int().min(0).max(1_000_000).safeParse(value);
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
