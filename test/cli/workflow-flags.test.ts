import { describe, expect, it } from '@jest/globals';
import { z } from 'zod';
import { BACKUP_FIELDS, FlagNames, RESTORE_FIELDS } from '../../bin/workflow-flags.ts';
import { backupInputSchema } from '../../functions/commons/workflows/backup.ts';
import { restoreInputSchema } from '../../functions/commons/workflows/restore.ts';

/** Every field path of an object schema, nested objects (optional or not) included. */
function fieldPaths(schema: z.ZodType, prefix = ''): string[] {
  const inner =
    schema instanceof z.ZodOptional || schema instanceof z.ZodDefault ? schema.unwrap() : schema;
  if (!(inner instanceof z.ZodObject)) return [prefix];
  return Object.entries(inner.shape as Record<string, z.ZodType>).flatMap(([key, field]) =>
    fieldPaths(field, prefix === '' ? key : `${prefix}.${key}`),
  );
}

describe('the flags behind workflow input fields', () => {
  it('has a flag or setting for every restore input field', () => {
    // Act
    const unmapped = fieldPaths(restoreInputSchema).filter((path) => !(path in RESTORE_FIELDS));
    // Assess
    expect(unmapped).toEqual([]);
  });

  it('has a flag or setting for every backup input field the CLI sets', () => {
    // Act: a plain source's prefix, path style and access are not set from the command line
    const unmapped = fieldPaths(backupInputSchema).filter((path) => !(path in BACKUP_FIELDS));
    // Assess
    expect(unmapped.sort()).toEqual(['source.access', 'source.forcePathStyle', 'source.prefix']);
  });
});

describe("a workflow's message in the CLI's terms", () => {
  const fromEnv = new FlagNames(RESTORE_FIELDS, {
    registryUrl: { from: 'env', name: 'REGVAULT_REGISTRY_URL' },
  });
  const unset = new FlagNames(RESTORE_FIELDS, {});

  it.each([
    {
      case: 'an issue subject and advice to set a boolean',
      names: unset,
      text: 'InputError: the restore target s3://a/ is not empty\n  - target.bucket: it holds objects (e.g. k); restore into an empty bucket, or set allowNonEmptyTarget to true to overwrite',
      said: 'InputError: the restore target s3://a/ is not empty\n  - --target-bucket: it holds objects (e.g. k); restore into an empty bucket, or pass --allow-non-empty to overwrite',
    },
    {
      case: 'a setting that came from the environment, and advice written for AWS too',
      names: fromEnv,
      text: 'registryUrl: switching the registry needs its URL; configure it (CLI: --registry-url; AWS: the registryUrl stack setting) or set switchRegistry to false',
      said: '--registry-url (from REGVAULT_REGISTRY_URL): switching the registry needs its URL; pass --registry-url or pass --no-switch',
    },
    {
      case: 'a setting given nowhere',
      names: unset,
      text: 'registryUrl: needed',
      said: '--registry-url (or REGVAULT_REGISTRY_URL / registryUrl in the config file): needed',
    },
    {
      case: 'a condition on a boolean',
      names: unset,
      text: 'target.secretName: required when switchRegistry is true: the Secret',
      said: '--target-secret: required unless --no-switch: the Secret',
    },
    {
      case: 'a boolean stated as a cause',
      names: unset,
      text: 'it was left there because rollbackOnFailure is false: verification failed',
      said: 'it was left there because --no-rollback was given: verification failed',
    },
    {
      case: 'several fields of one object',
      names: unset,
      text: 'target.bucket: Forbidden; create the bucket first or fix target.endpoint/region/secretName',
      said: '--target-bucket: Forbidden; create the bucket first or fix --target-endpoint, --target-region, --target-secret',
    },
    {
      case: 'a bare mention of a field, and English words that are also field names',
      names: unset,
      text: 'the snapshot was read; pullSample must be lower; set registryUrl',
      said: 'the snapshot was read; --pull-sample must be lower; pass --registry-url',
    },
  ])('names the flags for $case', ({ names, text, said }) => {
    // Act
    const rewritten = names.rewrite(text);
    // Assess
    expect(rewritten).toBe(said);
  });

  it('checks input with the workflow schema and lists every bad field by its flag', () => {
    // Act
    const attempt = () =>
      unset.check(
        restoreInputSchema,
        {
          snapshot: 'yesterday',
          target: { bucket: 'Bad_Bucket', region: 'us-east-1' },
          rolloutTimeoutSeconds: 5,
        },
        'restore input',
      );
    // Assess
    expect(attempt).toThrow(
      expect.objectContaining({
        name: 'InputError',
        issues: [
          expect.stringMatching(/^--snapshot: a snapshot id such as/),
          expect.stringMatching(/^--target-bucket: a bucket name/),
          expect.stringMatching(/^--rollout-timeout: /),
          expect.stringMatching(/^--target-secret: required unless --no-switch/),
        ],
      }),
    );
  });
});
