/**
 * The CLI's settings: flags, then REGVAULT_* environment variables, then a
 * config file (--config, YAML or JSON with the same names in camelCase), all
 * validated by one schema before anything runs. Each setting remembers where
 * it came from, so a message names what the user actually typed.
 */
import { readFile } from 'node:fs/promises';
import { type Document, isMap, isScalar, LineCounter, parseDocument } from 'yaml';
import { z } from 'zod';
import { InputError, messageOf } from '../functions/commons/errors.ts';
import { DEFAULT_PROFILE, profileNameSchema } from '../functions/commons/registry/profiles.ts';

export const bucketName = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/,
    'a bucket name: 3-63 lowercase letters, digits, dots and hyphens',
  );
/** An S3 endpoint URL. */
export const endpointUrl = z.url({
  protocol: /^https?$/,
  message: 'an http(s) URL such as https://s3.example.com',
});

/** A decimal number written out: digits, an optional sign and fraction. */
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)$/;

/**
 * A number given as text (a flag, a variable) or as a number (a config
 * file), checked by `schema`. `z.coerce.number()` read "" and "  " as 0 and
 * "0x10" as 16: here anything but a decimal number is refused.
 */
export function numberFrom<S extends z.ZodType<number, number>>(schema: S) {
  return z.preprocess(
    (value) => {
      if (typeof value !== 'string') return value;
      const text = value.trim();
      return DECIMAL.test(text) ? Number(text) : value;
    },
    z.number({ error: 'expected number (digits, such as 60)' }).pipe(schema),
  );
}

/** A switch: a flag or config file boolean, or `true` / `false` in a variable. */
const flagBoolean = z.union(
  [z.boolean(), z.enum(['true', 'false']).transform((v) => v === 'true')],
  { error: 'true or false' },
);

/** Every setting the commands read, after flags, environment and config file are merged. */
export const settingsSchema = z
  .object({
    vaultBucket: bucketName,
    vaultRegion: z.string().min(1, 'the vault bucket region, e.g. us-east-1'),
    vaultEndpoint: endpointUrl.optional(),
    vaultPrefix: z.string().default(''),
    /** Uploads to the vault carry Content-MD5 (a bucket with Object Lock default retention needs it). */
    vaultContentMd5: flagBoolean.default(false),
    /** Path-style addressing for the vault (functions/commons/s3/addressing.ts). */
    vaultPathStyle: flagBoolean.default(false),
    /** Path-style addressing for buckets on other endpoints: the registry's, a restore target, --source-bucket. */
    storagePathStyle: flagBoolean.default(false),
    kubeconfig: z.string().optional(),
    context: z.string().optional(),
    profile: profileNameSchema.default(DEFAULT_PROFILE),
    /** The profile's own settings (registry/profiles.ts); config file only. */
    profileSettings: z.record(z.string(), z.unknown()).optional(),
    moduleInfo: z.string().optional(),
    registryUrl: z.url().optional(),
    registryUsername: z.string().optional(),
    registryPassword: z.string().optional(),
    /** A file holding the registry password (a mounted Secret): the password without a flag. */
    registryPasswordFile: z.string().min(1, 'a file path').optional(),
    concurrency: numberFrom(z.number().int().min(1).max(512)).default(64),
    json: z.boolean().default(false),
  })
  .strict();
export type Settings = z.infer<typeof settingsSchema>;
export type SettingKey = keyof Settings;

/** The environment variable of each setting that has one. */
const ENV: Partial<Record<SettingKey, string>> = {
  vaultBucket: 'REGVAULT_VAULT_BUCKET',
  vaultRegion: 'REGVAULT_VAULT_REGION',
  vaultEndpoint: 'REGVAULT_VAULT_ENDPOINT',
  vaultPrefix: 'REGVAULT_VAULT_PREFIX',
  vaultContentMd5: 'REGVAULT_VAULT_CONTENT_MD5',
  vaultPathStyle: 'REGVAULT_VAULT_PATH_STYLE',
  storagePathStyle: 'REGVAULT_STORAGE_PATH_STYLE',
  profile: 'REGVAULT_PROFILE',
  registryUrl: 'REGVAULT_REGISTRY_URL',
  registryUsername: 'REGVAULT_REGISTRY_USERNAME',
  registryPassword: 'REGVAULT_REGISTRY_PASSWORD',
  registryPasswordFile: 'REGVAULT_REGISTRY_PASSWORD_FILE',
};

const SETTING_KEYS = new Set<string>(Object.keys(settingsSchema.shape));
const isSettingKey = (key: string): key is SettingKey => SETTING_KEYS.has(key);

/** `vaultBucket` -> `--vault-bucket`. */
export function flagName(key: string): string {
  return `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** Where a setting's value came from; a setting absent from the map was left at its default. */
export type SettingOrigin =
  | { readonly from: 'flag' }
  | { readonly from: 'env'; readonly name: string }
  | { readonly from: 'file'; readonly path: string; readonly line?: number };
export type SettingOrigins = Readonly<Partial<Record<SettingKey, SettingOrigin>>>;

/**
 * Settings no flag sets: a password typed on the command line stays in shell
 * history and process listings.
 */
const WITHOUT_FLAG: ReadonlySet<SettingKey> = new Set(['registryPassword', 'profileSettings']);

/**
 * How a message names a setting: the flag, with the environment variable or
 * config file key in parentheses when the value came from there, or every
 * place it may be given when it was not given at all.
 */
export function settingLabel(key: SettingKey, origin: SettingOrigin | undefined): string {
  const flag = flagName(key);
  if (WITHOUT_FLAG.has(key)) {
    const env = ENV[key] ?? key;
    return origin?.from === 'file'
      ? `${key} (in ${origin.path}${origin.line === undefined ? '' : `, line ${origin.line}`})`
      : origin?.from === 'env'
        ? env
        : `${env} (or ${key} in the config file)`;
  }
  switch (origin?.from) {
    case 'flag':
      return flag;
    case 'env':
      return `${flag} (from ${origin.name})`;
    case 'file':
      return `${flag} (from ${key} in ${origin.path}${origin.line === undefined ? '' : `, line ${origin.line}`})`;
    default: {
      const env = ENV[key];
      return `${flag} (or ${env === undefined ? '' : `${env} / `}${key} in the config file)`;
    }
  }
}

/** The command-level numeric flags and what each accepts. */
const numericFlags = {
  copyWorkers: numberFrom(z.number().int().min(1).max(1_000)),
  pollSeconds: numberFrom(z.number().int().min(1).max(300)),
  workerRate: numberFrom(z.number().positive()),
  shardObjects: numberFrom(z.number().int().min(1_000).max(1_000_000)),
  rolloutTimeout: numberFrom(z.number().int().min(1).max(86_400)),
  sample: numberFrom(z.number().int().min(1)),
  keepLast: numberFrom(z.number().int().min(1)),
  ttlDays: numberFrom(z.number().positive()),
  graceMinutes: numberFrom(z.number().min(0)),
} as const;
type NumericFlag = keyof typeof numericFlags;

/**
 * Parses a command's own numeric flags with one schema, before anything runs;
 * each bad value names its flag. Flags left unset stay undefined.
 */
export function numbersOf<K extends NumericFlag>(
  flags: Record<string, unknown>,
  names: readonly K[],
): { [N in K]?: number } {
  const out: { [N in K]?: number } = {};
  const issues: string[] = [];
  for (const name of names) {
    if (flags[name] === undefined) continue;
    const parsed = numericFlags[name].safeParse(flags[name]);
    if (parsed.success) out[name] = parsed.data;
    else
      issues.push(
        `${flagName(name)}: ${String(flags[name]).trim() === '' ? 'an empty value' : String(flags[name])} is not accepted (${parsed.error.issues.map((i) => i.message).join('; ')})`,
      );
  }
  if (issues.length > 0) throw new InputError('the flags are not valid', issues);
  return out;
}

/** Settings with where each came from. */
export interface ResolvedSettings {
  readonly settings: Settings;
  readonly origins: SettingOrigins;
}

/** What each YAML error code means, in words that quote nothing of the file. */
const YAML_PROBLEMS: Readonly<Record<string, string>> = {
  BAD_INDENT: 'the indentation is wrong, or a bracket is not closed',
  BLOCK_AS_IMPLICIT_KEY: 'a value runs on into the next line: is that line indented too far?',
  MULTILINE_IMPLICIT_KEY: 'a value runs on into the next line: is that line indented too far?',
  DUPLICATE_KEY: 'a setting is given twice',
  MISSING_CHAR: 'a closing quote or bracket is missing',
  TAB_AS_INDENT: 'a tab indents the line; YAML indents with spaces',
  UNEXPECTED_TOKEN: 'there is text YAML does not expect here',
  BAD_DQ_ESCAPE: 'a double-quoted value has a bad escape; single-quote values with backslashes',
  MULTIPLE_DOCS: 'the file holds more than one YAML document',
};

/** A config file's top-level keys with their line numbers. */
function keyLines(
  doc: Document,
  lines: LineCounter,
): Array<{ key: string; at: number; line: number }> {
  if (!isMap(doc.contents)) return [];
  return doc.contents.items.flatMap(({ key }) => {
    if (!isScalar(key) || typeof key.value !== 'string' || !key.range) return [];
    const at = key.range[0];
    return [{ key: key.value, at, line: lines.linePos(at).line }];
  });
}

/**
 * Reads a config file: its settings and the line of each. A syntax error
 * names its line and the setting it is in, and never quotes the file, which
 * may hold the registry password (YAML's own messages show the text around
 * the error).
 */
async function readConfigFile(
  path: string,
): Promise<{ values: Record<string, unknown>; lines: ReadonlyMap<string, number> }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new InputError('the config file cannot be read', [
      `--config: ${path}: ${messageOf(err)}`,
    ]);
  }
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const keys = keyLines(doc, lines);
  if (doc.errors.length > 0) {
    const found = doc.errors.map((error) => {
      const { line, col } = lines.linePos(error.pos[0]);
      const within = keys.filter((k) => k.at <= error.pos[0]).at(-1);
      const setting = within === undefined ? '' : ` (in ${within.key}, from line ${within.line})`;
      return `--config: ${path} line ${line}, column ${col}${setting}: ${YAML_PROBLEMS[error.code] ?? `YAML error ${error.code}`}`;
    });
    throw new InputError(
      'the config file is not valid YAML; its text is not repeated here, since it may hold the registry password',
      [...new Set(found)],
    );
  }
  const parsed: unknown = doc.toJS();
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new InputError('the config file is not valid', [
      `--config: ${path} must hold a mapping of settings such as vaultBucket: my-vault`,
    ]);
  }
  return {
    values: parsed as Record<string, unknown>,
    lines: new Map(keys.map(({ key, line }) => [key, line])),
  };
}

/** Merges the config file, the environment and the flags (in rising priority) and validates them. */
export async function resolveSettings(
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv = process.env,
): Promise<ResolvedSettings> {
  const configPath = typeof flags['config'] === 'string' ? flags['config'] : env['REGVAULT_CONFIG'];
  const file = configPath === undefined ? undefined : await readConfigFile(configPath);
  const fromFile = file?.values ?? {};
  const origins: Partial<Record<SettingKey, SettingOrigin>> = {};
  for (const key of Object.keys(fromFile)) {
    const line = file?.lines.get(key);
    if (isSettingKey(key) && configPath !== undefined)
      origins[key] = { from: 'file', path: configPath, ...(line === undefined ? {} : { line }) };
  }
  const fromEnv: Record<string, unknown> = {};
  for (const [key, name] of Object.entries(ENV)) {
    const value = env[name];
    if (value === undefined || value === '' || !isSettingKey(key)) continue;
    fromEnv[key] = value;
    origins[key] = { from: 'env', name };
  }
  const fromFlags: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(flags)) {
    if (!isSettingKey(key) || value === undefined) continue;
    fromFlags[key] = value;
    origins[key] = { from: 'flag' };
  }
  const parsed = settingsSchema.safeParse({ ...fromFile, ...fromEnv, ...fromFlags });
  if (!parsed.success) {
    throw new InputError(
      'the settings are not valid',
      parsed.error.issues.flatMap((issue) => {
        if (issue.code === 'unrecognized_keys') {
          return issue.keys.map((key) => {
            const line = file?.lines.get(key);
            return `${key} in the config file${line === undefined ? '' : ` (line ${line})`} (unknown setting): remove it or fix its spelling`;
          });
        }
        const key = String(issue.path[0] ?? '');
        const where = isSettingKey(key)
          ? settingLabel(key, origins[key])
          : `${key} in the config file (unknown setting)`;
        return `${where}: ${issue.message}`;
      }),
    );
  }
  const settings = await withPasswordFile(parsed.data, origins);
  return { settings: Object.freeze(settings), origins: Object.freeze(origins) };
}

/**
 * The registry password read from `registryPasswordFile`, before anything
 * runs: a file that cannot be read or holds nothing, or a password given
 * both ways, is bad input naming the setting; the file's text never appears.
 * One trailing line break is dropped (`echo pw > file`, a mounted Secret).
 */
async function withPasswordFile(settings: Settings, origins: SettingOrigins): Promise<Settings> {
  const path = settings.registryPasswordFile;
  if (path === undefined) return settings;
  const label = settingLabel('registryPasswordFile', origins.registryPasswordFile);
  if (settings.registryPassword !== undefined)
    throw new InputError('the registry password is given twice', [
      `${label}: give the password either in this file or in ${settingLabel('registryPassword', origins.registryPassword)}, not both`,
    ]);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = Reflect.get(err as object, 'code');
    throw new InputError('the registry password file cannot be read', [
      `${label}: ${path} cannot be read (${typeof code === 'string' ? code : messageOf(err)}); name a file holding the registry password`,
    ]);
  }
  const password = text.replace(/\r?\n$/, '');
  if (password.trim() === '')
    throw new InputError('the registry password file is empty', [
      `${label}: ${path} holds no password; write the registry password into it`,
    ]);
  return { ...settings, registryPassword: password };
}
