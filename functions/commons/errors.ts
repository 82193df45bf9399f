/**
 * The errors regvault names, and what each means to whoever ran it: an exit
 * code for the CLI and a hint saying what to do. Each class carries a literal
 * `name`, which is what survives serialisation (a Lambda error's `errorType`,
 * a Step Functions `Error`), so a caller judges a failure by its name, never
 * by its message; the original error stays as `cause`.
 */
import type { z } from 'zod';

/** How a CLI run ends. */
export const ExitCode = { Ok: 0, Failed: 1, BadInput: 2, Partial: 3, RolledBack: 4 } as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/**
 * Every failure regvault names: the error classes below and the workflows'
 * own ends (the Fail states of `state-machines/*.asl.json`), each with the
 * exit code it means and what to do about it.
 */
export const FAILURES = {
  InputError: {
    exitCode: ExitCode.BadInput,
    hint: 'fix each input named above and run it again; nothing was changed',
  },
  ObjectsFailed: {
    exitCode: ExitCode.Partial,
    hint: 'run it again: what is already copied is skipped; the keys named above say why each object failed',
  },
  RestoreRolledBack: {
    exitCode: ExitCode.RolledBack,
    hint: 'the registry is back on its previous bucket; fix the reason given and restore again',
  },
  ClusterError: {
    exitCode: ExitCode.Failed,
    hint: 'check the kubeconfig and --context, and that the cluster API and the registry answer',
  },
  VaultError: {
    exitCode: ExitCode.Failed,
    hint: 'check the vault settings and the snapshot id (`regvault snapshots list`), and run `regvault fsck --deep`',
  },
  RunLocked: {
    exitCode: ExitCode.Failed,
    hint: 'another backup of the same source into this vault is running: wait for it to end, or, if you know it is dead, run again with --break-lock <its run id>',
  },
  BackupFailed: {
    exitCode: ExitCode.Failed,
    hint: 'the snapshot is marked failed; its manifest says what went wrong',
  },
  RestoreNotApproved: {
    exitCode: ExitCode.Failed,
    hint: 'nobody approved the switch (a rejection, or no answer within restoreApprovalHours); the cluster is unchanged and the target holds the proven copy: start the restore again with allowNonEmptyTarget to be asked again',
  },
  RestoreFailed: {
    exitCode: ExitCode.Failed,
    hint: 'the message says what failed and whether the registry was switched',
  },
} as const satisfies Record<string, { readonly exitCode: ExitCode; readonly hint: string }>;
export type FailureName = keyof typeof FAILURES;

const isFailureName = (name: string): name is FailureName => Object.hasOwn(FAILURES, name);

/**
 * A failure's own name when regvault names it, else `fallback`: what a
 * workflow ends with when a step failed with `name` (a Step Functions `Error`).
 */
export function failureNameOf(name: string | undefined, fallback: FailureName): FailureName {
  return name !== undefined && isFailureName(name) ? name : fallback;
}

/** The exit code a failure's name means; a name regvault does not give is a plain failure. */
export function exitCodeOf(name: string | undefined): ExitCode {
  return name !== undefined && isFailureName(name) ? FAILURES[name].exitCode : ExitCode.Failed;
}

/** What to do about a failure with this name, when regvault names it. */
export function hintOf(name: string | undefined): string | undefined {
  return name !== undefined && isFailureName(name) ? FAILURES[name].hint : undefined;
}

/** Bad input: configuration, execution input, CLI flags, messages. */
export class InputError extends Error {
  override readonly name = 'InputError' as const;
  readonly exitCode = FAILURES.InputError.exitCode;
  readonly hint = FAILURES.InputError.hint;
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

/** A run got through its copy, but some objects failed: the result is partial. */
export class ObjectsFailedError extends Error {
  override readonly name = 'ObjectsFailed' as const;
  readonly exitCode = FAILURES.ObjectsFailed.exitCode;
  readonly hint = FAILURES.ObjectsFailed.hint;
}

/** Talking to the cluster API or the registry failed. */
export class ClusterError extends Error {
  override readonly name = 'ClusterError' as const;
  readonly exitCode = FAILURES.ClusterError.exitCode;
  readonly hint = FAILURES.ClusterError.hint;
}

/** A snapshot or vault is missing, incomplete or unreadable. */
export class VaultError extends Error {
  override readonly name = 'VaultError' as const;
  readonly exitCode = FAILURES.VaultError.exitCode;
  readonly hint = FAILURES.VaultError.hint;
}

/**
 * A backup refused because another run of the same source into the same
 * vault holds the run lock (vault/run-lease.ts): nothing was written.
 */
export class RunLockedError extends Error {
  override readonly name = 'RunLocked' as const;
  readonly exitCode = FAILURES.RunLocked.exitCode;
  readonly hint = FAILURES.RunLocked.hint;
}

/**
 * One line per problem of a failed zod parse: the path of its field (`root`
 * for the value as a whole) and what is wrong. The one place issues become text.
 */
export function issueLines(error: z.ZodError, root = '(input)'): string[] {
  return error.issues.map((issue) => `${issue.path.join('.') || root}: ${issue.message}`);
}

/** An InputError listing every problem of a failed zod parse of the `what`. */
export function inputErrorFrom(error: z.ZodError, what: string, root?: string): InputError {
  return new InputError(`the ${what} is not valid`, issueLines(error, root), { cause: error });
}

/** Parses input with a schema, listing every problem with its field path. */
export function parseInput<S extends z.ZodType>(schema: S, raw: unknown, what: string): z.infer<S> {
  const parsed = schema.safeParse(raw ?? {});
  if (parsed.success) return parsed.data;
  throw inputErrorFrom(parsed.error, what);
}

/** Message of any thrown value, for reports that must never throw themselves. */
export function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  return typeof err === 'string' ? err : JSON.stringify(err);
}
