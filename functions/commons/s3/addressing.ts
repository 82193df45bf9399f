/**
 * How a bucket is addressed at an endpoint: virtual-hosted
 * (`https://bucket.host/key`) unless path style (`https://host/bucket/key`)
 * is asked for or is the only way. AWS S3, Alibaba Cloud OSS (which refuses
 * path style) and newer MinIO want virtual-hosted; an endpoint that is an IP
 * address or `localhost` can only be reached path style, since no name
 * `bucket.<IP>` resolves.
 */
import { isIP } from 'node:net';

/**
 * True when requests to `endpoint` go path style: when `pathStyle` asks for
 * it, or the endpoint is an IP address or `localhost`. A DNS-named endpoint
 * (or AWS S3, no endpoint) goes virtual-hosted otherwise.
 */
export function pathStyleFor(endpoint: string | undefined, pathStyle?: boolean): boolean {
  if (pathStyle === true) return true;
  if (endpoint === undefined || endpoint === '') return false;
  return onlyPathStyle(endpoint);
}

/** True when `endpoint`'s host cannot carry a bucket name: an IP address or `localhost`. */
export function onlyPathStyle(endpoint: string): boolean {
  let host: string;
  try {
    host = new URL(endpoint).hostname.toLowerCase();
  } catch {
    return true;
  }
  const bare = host.startsWith('[') ? host.slice(1, -1) : host;
  return isIP(bare) !== 0 || bare === 'localhost';
}

/**
 * True when `bucket` can be a host name label under `protocol`: the AWS
 * SDK's own rule, which falls back to path style for a bucket with dots over
 * TLS (the certificate would not cover it) or a name DNS does not allow.
 */
export function virtualHostable(bucket: string, protocol: string): boolean {
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket) || bucket.includes('..')) return false;
  return !(protocol === 'https:' && bucket.includes('.'));
}
