/**
 * Parsing the values regvault keeps in Secrets Manager. Neither JSON.parse's
 * message (it quotes the text) nor zod's received values may reach an error,
 * a log or a Step Functions cause: only the fields' names and the fix.
 */
import { z } from 'zod';
import { InputError } from '../errors.ts';

const registryCredentialsSchema = z.object({ username: z.string().min(1), password: z.string() });

/** Parses the registry credentials secret (`{"username": ..., "password": ...}`). */
export function registryCredentialsOf(
  text: string,
  arn: string,
): { username: string; password: string } {
  const fix = `store {"username": "...", "password": "..."} in the secret ${arn}`;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new InputError(`the registry credentials secret is not JSON; ${fix}`);
  }
  const parsed = registryCredentialsSchema.safeParse(value);
  if (!parsed.success) {
    throw new InputError(
      `the registry credentials secret lacks usable fields; ${fix}`,
      parsed.error.issues.map(
        (issue) =>
          `${issue.path.join('.') || '(root)'}: expected ${issue.code === 'invalid_type' ? issue.expected : 'a value'}`,
      ),
    );
  }
  return parsed.data;
}
