/**
 * Settings every profile whose registry runs as a Deployment shares, apart
 * from ./workload.ts so that reading them loads no Kubernetes client.
 */
import { z } from 'zod';

/** Default log lines of new registry pods that mean the storage is wrong. */
export const STORAGE_ERROR_PATTERNS: readonly string[] = [
  'NoSuchBucket',
  'AccessDenied',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'connection refused',
];

/** Log lines of new registry pods that mean the storage is wrong. */
export const storageErrorPatternsSchema = z.array(z.string()).default([...STORAGE_ERROR_PATTERNS]);
