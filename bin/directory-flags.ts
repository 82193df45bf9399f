/**
 * `--source-dir` and `--target-dir`: a registry's filesystem storage (its
 * `rootdirectory`, a mounted PVC) as the backup's source or the restore's
 * target. The directory becomes a location with a `file://` endpoint, which
 * the copy path reads and writes as a bucket (functions/commons/s3/directory.ts).
 */
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import { InputError } from '../functions/commons/errors.ts';
import { DIRECTORY_BUCKET, directoryEndpoint } from '../functions/commons/s3/directory.ts';
import { Access } from '../functions/commons/workflows/deps.ts';
import type { Flags } from './context.ts';

/** The flags a directory flag stands in for: giving one of them too is a contradiction. */
const BUCKET_FLAGS = {
  sourceDir: ['sourceBucket', 'sourceEndpoint', 'sourceRegion'],
  targetDir: ['targetBucket', 'targetEndpoint', 'targetPrefix', 'targetSecret'],
} as const;

const flagOf = (name: string) => `--${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

/**
 * The location `flags[name]` names (`sourceDir` or `targetDir`), or undefined
 * without it. Refused, naming the flag, before anything runs: a path that is
 * not an existing directory, or a bucket flag given beside it.
 */
export function directoryLocationOf(
  flags: Flags,
  name: keyof typeof BUCKET_FLAGS,
  region: string,
):
  | { bucket: string; endpoint: string; region: string; prefix: string; access: string }
  | undefined {
  const value = flags[name];
  if (value === undefined) return undefined;
  const problems: string[] = [];
  const path = resolve(String(value));
  let isDirectory = false;
  try {
    isDirectory = statSync(path).isDirectory();
  } catch {
    // reported below
  }
  if (!isDirectory)
    problems.push(
      `${flagOf(name)}: ${path} is not an existing directory; give the registry's storage directory (its rootdirectory)${name === 'targetDir' ? ', created first' : ''}`,
    );
  for (const other of BUCKET_FLAGS[name])
    if (flags[other] !== undefined && !(other === 'targetPrefix' && flags[other] === ''))
      problems.push(
        `${flagOf(other)}: not with ${flagOf(name)}, which names a directory instead of a bucket; give one of them`,
      );
  if (problems.length > 0) throw new InputError('the flags are not valid', problems);
  return {
    bucket: DIRECTORY_BUCKET,
    endpoint: directoryEndpoint(path),
    region,
    prefix: '',
    access: Access.Directory,
  };
}
