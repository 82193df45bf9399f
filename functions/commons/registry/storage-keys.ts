/**
 * The S3 keys a registry's Secret holds, under whichever names its operator
 * or chart writes them: every profile reads a Secret the same way. The names
 * are a profile setting (`secretKeyNames`), with defaults that cover the AWS
 * names, the usual camelCase and snake_case spellings and Alibaba Cloud's
 * backup center (`access-key-id` / `access-key-secret`, seeds 002/004).
 *
 * Apart from the profiles so that reading the settings loads no Kubernetes client.
 */
import { z } from 'zod';
import { ClusterError } from '../errors.ts';
import type { StorageKeys } from './profile.ts';

/** Secret data keys tried for the access key id, in order. */
export const DEFAULT_ACCESS_KEY_NAMES: readonly string[] = [
  'access-key-id',
  'accessKey',
  'accesskey',
  'access_key_id',
  'AWS_ACCESS_KEY_ID',
  'accessKeyId',
  'access-key',
  'REGISTRY_STORAGE_S3_ACCESSKEY',
];

/** Secret data keys tried for the secret key, in order; `access-key-secret` is Alibaba's. */
export const DEFAULT_SECRET_KEY_NAMES: readonly string[] = [
  'secret-access-key',
  'access-key-secret',
  'secretKey',
  'secretkey',
  'secret_access_key',
  'AWS_SECRET_ACCESS_KEY',
  'secretAccessKey',
  'secret-key',
  'REGISTRY_STORAGE_S3_SECRETKEY',
];

const names = (what: string) =>
  z
    .array(z.string().min(1, `a Secret data key for the ${what}`))
    .min(1, `at least one Secret data key for the ${what}`);

/**
 * The profile setting: the names to look for, replacing the defaults
 * (either list may be left out to keep its default).
 */
export const secretKeyNamesSchema = z
  .strictObject({
    accessKey: names('access key id').default([...DEFAULT_ACCESS_KEY_NAMES]),
    secretKey: names('secret key').default([...DEFAULT_SECRET_KEY_NAMES]),
  })
  .default({ accessKey: [...DEFAULT_ACCESS_KEY_NAMES], secretKey: [...DEFAULT_SECRET_KEY_NAMES] });
export type SecretKeyNames = z.infer<typeof secretKeyNamesSchema>;

/**
 * The keys in a Secret's `data` (base64, as the API serves it), found by
 * `keyNames`. A Secret with neither is a failure naming what it holds (never
 * the values) and the names that were looked for.
 */
export function keysFromSecretData(
  data: Readonly<Record<string, string>>,
  keyNames: SecretKeyNames,
  where: { readonly namespace: string; readonly secretName: string },
): StorageKeys {
  const decode = (key: string) =>
    Buffer.from(data[key] ?? '', 'base64')
      .toString('utf8')
      .trim();
  const accessKey = keyNames.accessKey.find((k) => data[k] !== undefined);
  const secretKey = keyNames.secretKey.find((k) => data[k] !== undefined);
  if (accessKey === undefined || secretKey === undefined) {
    const { namespace, secretName } = where;
    throw new ClusterError(
      `Secret ${namespace}/${secretName} has no usable S3 keys: it holds ${Object.keys(data).join(', ') || 'nothing'}; expected ${keyNames.accessKey[0]} and ${keyNames.secretKey[0]} (or one of ${[...keyNames.accessKey.slice(1), ...keyNames.secretKey.slice(1)].join(', ')}): add them (kubectl -n ${namespace} edit secret ${secretName}), name another Secret, or set the profile setting secretKeyNames to the names it uses`,
    );
  }
  return { accessKeyId: decode(accessKey), secretAccessKey: decode(secretKey) };
}
