/**
 * Quay's config.yaml as regvault reads and changes it: the storage of
 * `DISTRIBUTED_STORAGE_CONFIG` (its first location: S3Storage on AWS,
 * RadosGWStorage or RHOCSStorage on S3-compatible storage) and the database
 * of `DB_URI`. Plain functions over text, so the profile's cluster calls and
 * these rules are tested apart.
 */
import { parse, stringify } from 'yaml';
import { ClusterError } from '../errors.ts';
import type { StorageKeys } from './profile.ts';

/** The storage location a config names, with its keys (kept in memory only). */
export interface QuayStorage {
  readonly location: string;
  readonly driver: string;
  readonly bucket: string;
  /** '' for AWS S3. */
  readonly endpoint: string;
  readonly region: string;
  readonly rootDirectory: string;
  readonly keys: StorageKeys;
}

const DRIVERS = ['S3Storage', 'RadosGWStorage', 'RHOCSStorage'] as const;

const record = (value: unknown): Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : {};
const str = (value: unknown): string =>
  typeof value === 'string' || typeof value === 'number' ? String(value) : '';

/** The config as a map; text that is not a YAML map is refused, naming where it came from. */
export function parseQuayConfig(text: string, where: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = parse(text);
  } catch {
    // The text holds keys: its lines are not quoted back.
    throw new ClusterError(`${where} is not valid YAML; fix config.yaml in it`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new ClusterError(`${where} does not hold a YAML map; fix config.yaml in it`);
  return parsed as Record<string, unknown>;
}

/** The first storage location's driver and parameters, or undefined when the config has none. */
function firstLocation(
  config: Record<string, unknown>,
): { name: string; driver: string; params: Record<string, unknown> } | undefined {
  const locations = record(config['DISTRIBUTED_STORAGE_CONFIG']);
  const preferred = Array.isArray(config['DISTRIBUTED_STORAGE_PREFERENCE'])
    ? str(config['DISTRIBUTED_STORAGE_PREFERENCE'][0])
    : '';
  const name = preferred !== '' && preferred in locations ? preferred : Object.keys(locations)[0];
  const entry = name === undefined ? undefined : locations[name];
  if (name === undefined || !Array.isArray(entry)) return undefined;
  return { name, driver: str(entry[0]), params: record(entry[1]) };
}

/** The storage of a config, or undefined when it names none (managed object storage fills it in). */
export function quayStorageOf(
  config: Record<string, unknown>,
  where: string,
): QuayStorage | undefined {
  const found = firstLocation(config);
  if (found === undefined) return undefined;
  const { name, driver, params: p } = found;
  if (!(DRIVERS as readonly string[]).includes(driver))
    throw new ClusterError(
      `${where}: DISTRIBUTED_STORAGE_CONFIG.${name} uses ${driver}; regvault backs up ${DRIVERS.join(', ')} (S3 storage)`,
    );
  const root = str(p['storage_path']).replace(/^\/+/, '').replace(/\/+$/, '');
  if (driver === 'S3Storage') {
    const host = str(p['host']);
    const port = str(p['port']);
    return {
      location: name,
      driver,
      bucket: str(p['s3_bucket']),
      endpoint: host === '' ? '' : `https://${host}${port === '' ? '' : `:${port}`}`,
      region: str(p['s3_region']) || 'us-east-1',
      rootDirectory: root,
      keys: { accessKeyId: str(p['s3_access_key']), secretAccessKey: str(p['s3_secret_key']) },
    };
  }
  const scheme = p['is_secure'] === false ? 'http' : 'https';
  const port = str(p['port']);
  return {
    location: name,
    driver,
    bucket: str(p['bucket_name']),
    endpoint: `${scheme}://${str(p['hostname'])}${port === '' ? '' : `:${port}`}`,
    region: 'us-east-1',
    rootDirectory: root,
    keys: { accessKeyId: str(p['access_key']), secretAccessKey: str(p['secret_key']) },
  };
}

/** The database `DB_URI` names (`postgresql://user:pw@host:5432/<name>`), as the runbook's awk does. */
export function databaseOf(config: Record<string, unknown>): string | undefined {
  const uri = str(config['DB_URI']);
  if (uri === '') return undefined;
  try {
    const name = decodeURIComponent(new URL(uri).pathname.replace(/^\//, ''));
    return name === '' ? undefined : name;
  } catch {
    return undefined;
  }
}

/** Where the config's storage should now point: a bucket, its endpoint and region, and the keys. */
export interface StorageChange {
  readonly bucket: string;
  readonly endpoint: string;
  readonly region: string;
  readonly keys: StorageKeys;
  /** The key prefix, written only when a storage location is added (managed storage left). */
  readonly rootDirectory?: string;
}

/** The location a config gets when it names none (Quay on managed storage moved to a bucket). */
const ADDED_LOCATION = 'default';

/**
 * The config text with its first storage location moved to `next`, every
 * other setting as it was. The driver stays; an endpoint is written in the
 * driver's own fields (S3Storage: host and port; the others: hostname, port
 * and is_secure). A config that names no location (managed object storage:
 * the operator filled it in from its bucket claim) gets one, `default`:
 * S3Storage on AWS, RadosGWStorage on any other endpoint, with `next`'s
 * root directory as its storage_path and the preference lists naming it.
 */
export function withStorage(text: string, next: StorageChange, where: string): string {
  const config = parseQuayConfig(text, where);
  const found = firstLocation(config) ?? {
    name: ADDED_LOCATION,
    driver: next.endpoint === '' ? 'S3Storage' : 'RadosGWStorage',
    params: {
      storage_path:
        next.rootDirectory === undefined || next.rootDirectory === ''
          ? ''
          : `/${next.rootDirectory}`,
    },
  };
  if (config['DISTRIBUTED_STORAGE_CONFIG'] === undefined) {
    config['DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS'] = [found.name];
    config['DISTRIBUTED_STORAGE_PREFERENCE'] = [found.name];
  }
  const p = { ...found.params };
  const url = next.endpoint === '' ? undefined : new URL(next.endpoint);
  const port =
    url === undefined ? undefined : Number(url.port || (url.protocol === 'https:' ? 443 : 80));
  if (found.driver === 'S3Storage') {
    p['s3_bucket'] = next.bucket;
    p['s3_region'] = next.region;
    p['s3_access_key'] = next.keys.accessKeyId;
    p['s3_secret_key'] = next.keys.secretAccessKey;
    if (url === undefined) {
      delete p['host'];
      delete p['port'];
    } else {
      p['host'] = url.hostname;
      p['port'] = port;
    }
  } else {
    p['bucket_name'] = next.bucket;
    p['access_key'] = next.keys.accessKeyId;
    p['secret_key'] = next.keys.secretAccessKey;
    // An added RadosGWStorage is always on an endpoint (AWS gets S3Storage).
    if (url !== undefined) {
      p['hostname'] = url.hostname;
      p['port'] = port;
      p['is_secure'] = url.protocol === 'https:';
    }
  }
  const locations = record(config['DISTRIBUTED_STORAGE_CONFIG']);
  return stringify({
    ...config,
    DISTRIBUTED_STORAGE_CONFIG: { ...locations, [found.name]: [found.driver, p] },
  });
}
