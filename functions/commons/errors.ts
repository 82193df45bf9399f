/**
 * One error base class per domain. Each carries a literal `name` so callers can
 * narrow with `instanceof` or by name after serialisation (Step Functions
 * `Cause` strings), and keeps the original error as `cause`.
 */

/** Bad input: configuration, execution input, CLI flags, messages. */
export class InputError extends Error {
  override readonly name = 'InputError' as const;
  /** Every problem found, each with the path of its field. */
  readonly issues: readonly string[];

  constructor(message: string, issues: readonly string[] = [], options?: ErrorOptions) {
    super(
      issues.length === 0 ? message : `${message}\n${issues.map((i) => `  - ${i}`).join('\n')}`,
      options,
    );
    this.issues = issues;
  }
}

/** A copy between two S3 locations could not be done. */
export class CopyError extends Error {
  override readonly name = 'CopyError' as const;
}

/** Talking to the cluster API or the registry failed. */
export class ClusterError extends Error {
  override readonly name = 'ClusterError' as const;
}

/** A snapshot or vault is missing, incomplete or unreadable. */
export class VaultError extends Error {
  override readonly name = 'VaultError' as const;
}

/** Message of any thrown value, for reports that must never throw themselves. */
export function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  return typeof err === 'string' ? err : JSON.stringify(err);
}
