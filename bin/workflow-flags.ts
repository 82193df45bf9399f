/**
 * The workflows speak of their input fields (`allowNonEmptyTarget`,
 * `target.bucket`), which is what a Step Functions user types. A CLI user
 * typed flags: these tables say which flag (or setting) sets each field, so
 * the CLI checks a workflow's input with the workflow's own schema before
 * anything runs and names the flag in every message, its own and the
 * workflow's.
 */
import type { z } from 'zod';
import { InputError, issueLines } from '../functions/commons/errors.ts';
import { flagName, type SettingKey, type SettingOrigins, settingLabel } from './settings.ts';

/** What sets a workflow input field on the command line. */
export type FieldSource =
  | {
      readonly flag: `--${string}`;
      /** For a boolean field: the value the flag sets (`--no-switch` sets `switchRegistry` to false). */
      readonly sets?: boolean;
    }
  | { readonly setting: SettingKey };

/** Which flags set the restore workflow's input (functions/commons/workflows/restore.ts). */
export const RESTORE_FIELDS: Readonly<Record<string, FieldSource>> = {
  snapshot: { flag: '--snapshot' },
  'target.bucket': { flag: '--target-bucket' },
  'target.region': { flag: '--target-region' },
  'target.endpoint': { flag: '--target-endpoint' },
  'target.prefix': { flag: '--target-prefix' },
  'target.secretName': { flag: '--target-secret' },
  switchRegistry: { flag: '--no-switch', sets: false },
  rollbackOnFailure: { flag: '--no-rollback', sets: false },
  allowNonEmptyTarget: { flag: '--allow-non-empty', sets: true },
  pullSample: { flag: '--pull-sample' },
  pushTest: { flag: '--push-test', sets: true },
  skipBlobHashing: { flag: '--skip-blob-hashing', sets: true },
  rolloutTimeoutSeconds: { flag: '--rollout-timeout' },
  concurrency: { setting: 'concurrency' },
  // Not an input field: the workflow reads it from its deployment, the CLI from this setting.
  registryUrl: { setting: 'registryUrl' },
};

/** Which flags set the backup workflow's input (functions/commons/workflows/backup.ts). */
export const BACKUP_FIELDS: Readonly<Record<string, FieldSource>> = {
  source: { flag: '--source-bucket' },
  'source.bucket': { flag: '--source-bucket' },
  'source.region': { flag: '--source-region' },
  'source.endpoint': { flag: '--source-endpoint' },
  includeSecret: { flag: '--include-secret', sets: true },
  targetObjectsPerShard: { flag: '--shard-objects' },
  concurrency: { setting: 'concurrency' },
  ttlDays: { flag: '--ttl-days' },
  breakLock: { flag: '--break-lock' },
  repositories: { flag: '--repository' },
  excludeRepositories: { flag: '--exclude-repository' },
  resources: { flag: '--resources' },
  'resources.includeNamespaces': { flag: '--include-namespaces' },
  'resources.excludeNamespaces': { flag: '--exclude-namespaces' },
  'resources.includeResources': { flag: '--include-resources' },
  'resources.excludeResources': { flag: '--exclude-resources' },
  'resources.labelSelector': { flag: '--selector' },
};

/**
 * Advice written for both the CLI and the deployment (`(CLI: --x; AWS: the
 * y stack setting)`) with the CLI's half only.
 */
export function cliHalf(text: string): string {
  return text
    .replace(/configure it \(CLI: ([^;)]+); AWS: [^)]*\)/g, 'pass $1')
    .replace(/ \(CLI: ([^;)]+); AWS: [^)]*\)/g, ' ($1)');
}

/** Speaks of workflow input fields in the CLI's terms. */
export class FlagNames {
  readonly #fields: Readonly<Record<string, FieldSource>>;
  readonly #origins: SettingOrigins;

  constructor(fields: Readonly<Record<string, FieldSource>>, origins: SettingOrigins) {
    this.#fields = fields;
    this.#origins = origins;
  }

  /** The flag alone, for use inside a sentence. */
  flag(path: string): string | undefined {
    const source = this.#fields[path];
    if (source === undefined) return undefined;
    return 'flag' in source ? source.flag : flagName(source.setting);
  }

  /** The flag as an issue's subject: a setting also says where its value came from. */
  label(path: string): string | undefined {
    const source = this.#fields[path];
    if (source === undefined) return undefined;
    return 'flag' in source
      ? source.flag
      : settingLabel(source.setting, this.#origins[source.setting]);
  }

  /**
   * Checks a workflow's input with its own schema, before anything runs: an
   * InputError naming the flag of every bad field.
   */
  check<S extends z.ZodType>(schema: S, input: unknown, what: string): z.infer<S> {
    const parsed = schema.safeParse(input);
    if (parsed.success) return parsed.data;
    throw new InputError(
      `the ${what} is not valid`,
      issueLines(parsed.error).map((line) => this.rewrite(line)),
      { cause: parsed.error },
    );
  }

  /** An InputError of a workflow's with its issues in flag terms; any other error as it is. */
  rethrown(err: unknown): unknown {
    if (!(err instanceof InputError)) return err;
    return new InputError(
      err.message.split('\n')[0] ?? err.message,
      err.issues.map((issue) => this.rewrite(issue)),
      { cause: err },
    );
  }

  /**
   * A workflow's message with its field names turned into flags: an issue's
   * subject (`target.bucket: ...` -> `--target-bucket: ...`), advice
   * (`set allowNonEmptyTarget to true` -> `pass --allow-non-empty`), and
   * any other mention of a field.
   */
  rewrite(text: string): string {
    const field = '([A-Za-z]\\w*(?:\\.[A-Za-z]\\w*)?)';
    // Subjects become labels last (held as private-use placeholders): a label may name a
    // config file key, which later passes must not take for a field.
    const labels: string[] = [];
    const held = text.replace(
      new RegExp(`(^|\\n|: |\\s- )${field}: `, 'g'),
      (whole, before: string, path: string) => {
        const label = this.label(path);
        if (label === undefined) return whole;
        labels.push(label);
        return `${before}\uE000${labels.length - 1}\uE000: `;
      },
    );
    return (
      cliHalf(held)
        .replace(new RegExp(`\\bset ${field} to (true|false)\\b`, 'g'), (whole, path, value) =>
          this.#choice(whole, path, value === 'true', 'pass', 'leave out'),
        )
        .replace(new RegExp(`\\bwhen ${field} is (true|false)\\b`, 'g'), (whole, path, value) =>
          this.#choice(whole, path, value === 'true', 'with', 'unless'),
        )
        .replace(new RegExp(`\\b${field} is (true|false)\\b`, 'g'), (whole, path, value) => {
          const flag = this.#booleanFlag(path, value === 'true');
          return flag === undefined ? whole : `${flag.flag} was${flag.given ? '' : ' not'} given`;
        })
        // `target.endpoint/region/secretName`: several fields of one object.
        .replace(/\b([a-z]\w*)\.(\w+(?:\/\w+)+)/g, (whole, parent: string, names: string) => {
          const flags = names.split('/').map((name) => this.flag(`${parent}.${name}`));
          return flags.every((f) => f !== undefined) ? flags.join(', ') : whole;
        })
        .replace(new RegExp(`\\bset ${field}\\b`, 'g'), (whole, path: string) => {
          const flag = this.flag(path);
          return flag === undefined ? whole : `pass ${flag}`;
        })
        // Any other mention of a field with a name no sentence uses (`pullSample`, `target.bucket`).
        .replace(new RegExp(`(?<![\\w.-])${field}(?![\\w-])`, 'g'), (whole, path: string) =>
          /[A-Z.]/.test(path) ? (this.flag(path) ?? whole) : whole,
        )
        .replace(/\uE000(\d+)\uE000/g, (_, index: string) => labels[Number(index)] ?? '')
    );
  }

  /** The flag that gives a boolean field `value`, and whether it is given for that value. */
  #booleanFlag(path: string, value: boolean): { flag: string; given: boolean } | undefined {
    const source = this.#fields[path];
    if (source === undefined || !('flag' in source) || source.sets === undefined) return undefined;
    return { flag: source.flag, given: source.sets === value };
  }

  #choice(whole: string, path: string, value: boolean, yes: string, no: string): string {
    const flag = this.#booleanFlag(path, value);
    return flag === undefined ? whole : `${flag.given ? yes : no} ${flag.flag}`;
  }
}
