/**
 * What the workflow steps need from the world, passed in so the Lambda
 * handlers, the local runner, the CLI and the tests call the same code with
 * their own clients, clock and logger.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import type { Location } from '../copy/model.ts';
import type { RegistryClient } from '../registry/client.ts';
import type { RegistryProfile } from '../registry/profile.ts';
import type { Vault } from '../vault/store.ts';

/** Structured log lines; never given secrets. */
export interface StepLogger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
}

export interface WorkflowDeps {
  readonly vault: Vault;
  /** An S3 client for a location, its credentials resolved from `location.access`. */
  s3(location: Location): Promise<S3Client>;
  /**
   * True when one client can read `source` and write `target` (same endpoint,
   * same keys), so objects are copied server-side.
   */
  sameAccess(source: Location, target: Location): Promise<boolean>;
  /** The registry-side profile (cluster access). */
  profile(): RegistryProfile;
  /** A registry API client for verification, or undefined when no registry URL is configured. */
  registry(): RegistryClient | undefined;
  now(): Date;
  readonly log: StepLogger;
  readonly toolVersion: string;
  /** Where a long step reports how far it is (the CLI's progress); absent in Lambda. */
  readonly progress?: (event: StepProgress) => void;
}

/** How far a long step is, in the registry's units where it has them. */
export interface StepProgress {
  /** `prove`: blobs hashed before the switch; `verify`: the registry checked after it. */
  readonly step: 'prove' | 'verify';
  readonly repositories?: { readonly done: number; readonly total: number };
  readonly tags?: { readonly done: number; readonly total: number };
  readonly blobs?: { readonly done: number; readonly total: number };
  readonly bytes?: { readonly done: number; readonly total: number };
}

/** Access references: who reads and writes a location, resolved at the edge and never serialised as keys. */
export const Access = {
  /** The vault's own credentials (the Lambda role in AWS; the configured vault keys locally). */
  Vault: 'vault',
  /** Keys from the registry's storage Secret, read through the cluster. */
  registrySecret: (secretName: string) => `registry-secret:${secretName}`,
} as const;

/** The Secret name of a `registry-secret:` reference, if it is one. */
export function registrySecretOf(access: string): string | undefined {
  return access.startsWith('registry-secret:')
    ? access.slice('registry-secret:'.length)
    : undefined;
}

/** Logger that drops everything (tests that do not look at logs). */
export const silentLogger: StepLogger = { info() {}, warn() {} };
