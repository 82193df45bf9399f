/**
 * What every command shares: the run's state (its exit code, --json, whether
 * its result line is out), the settings with where each came from, the output
 * (JSON lines or plain lines), and the settings flags every command takes.
 */
import type { Command } from 'commander';
import { PROFILE_NAMES } from '../functions/commons/registry/profiles.ts';
import { ExitCode } from './outcome.ts';
import { createProgress, type ProgressTotal } from './progress.ts';
import { resolveSettings, type SettingOrigins, type Settings } from './settings.ts';

/** A command's parsed flags, as commander gives them. */
export type Flags = Record<string, unknown>;

/**
 * What this run has said: the exit code it ends with, whether it prints JSON
 * lines, and whether its one result line is out (an error prints it otherwise).
 */
export const run: {
  exitCode: ExitCode;
  json: boolean;
  resultWritten: boolean;
  origins: SettingOrigins;
} = {
  exitCode: ExitCode.Ok,
  json: false,
  resultWritten: false,
  origins: {},
};

/**
 * Resolves the settings and remembers --json (a config file may set it too)
 * for error output, and where each setting came from for messages.
 */
export async function settingsOf(flags: Record<string, unknown>): Promise<Settings> {
  const { settings, origins } = await resolveSettings(flags);
  run.json = settings.json;
  run.origins = origins;
  return settings;
}

/** Output: JSON lines with --json, plain lines otherwise. */
export function reporter(settings: Settings) {
  return {
    event(event: string, text: string, fields: Record<string, unknown> = {}) {
      if (settings.json) process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
      else process.stderr.write(`${text}\n`);
    },
    /** Copy progress for a phase: the bar or plain lines, or `progress` JSON lines. */
    progress(label: string, total?: ProgressTotal) {
      return createProgress({
        json: settings.json,
        label,
        ...(total === undefined ? {} : { total }),
      });
    },
    /** The one result: with --json a line with `ok` and `exitCode` (set `run.exitCode` first). */
    result(value: Record<string, unknown>, text: string) {
      run.resultWritten = true;
      if (!settings.json) {
        process.stdout.write(`${text}\n`);
        return;
      }
      process.stdout.write(
        `${JSON.stringify({ event: 'result', ok: run.exitCode === ExitCode.Ok, ...value, exitCode: run.exitCode })}\n`,
      );
      if (run.exitCode !== ExitCode.Ok) process.stderr.write(`regvault: ${text}\n`);
    },
  };
}

/** A command that takes the settings flags (vault, cluster, registry, output). */
export function commandWithSettings(program: Command, name: string, description: string): Command {
  return program
    .command(name)
    .description(description)
    .option(
      '--config <file>',
      'settings file (YAML or JSON); flags and REGVAULT_* variables override it',
    )
    .option('--vault-bucket <bucket>', 'bucket holding the vault (REGVAULT_VAULT_BUCKET)')
    .option('--vault-region <region>', 'its region (REGVAULT_VAULT_REGION)')
    .option('--vault-endpoint <url>', 'S3-compatible endpoint of the vault; omit for AWS')
    .option('--vault-prefix <prefix>', 'key prefix of the vault in the bucket')
    .option(
      '--vault-content-md5',
      'send Content-MD5 with vault uploads (a bucket with Object Lock default retention needs it)',
    )
    .option(
      '--vault-path-style',
      'address the vault path style (https://host/bucket/key); default: virtual-hosted, path style on an IP address or localhost (REGVAULT_VAULT_PATH_STYLE)',
    )
    .option(
      '--storage-path-style',
      "address buckets on other endpoints path style: the registry's, a restore target, --source-bucket (REGVAULT_STORAGE_PATH_STYLE)",
    )
    .option('--kubeconfig <file>', 'kubeconfig of the registry cluster (KUBECONFIG)')
    .option('--context <name>', 'kubeconfig context')
    .option(
      '--profile <name>',
      `the registry's kind: ${PROFILE_NAMES.join(', ')} (REGVAULT_PROFILE); found in the cluster when not given`,
    )
    .option('--module-info <name>', 'the registry ModuleInfo, when the label finds several')
    .option('--registry-url <url>', 'where the registry answers, for verification')
    .option('--registry-username <user>', 'registry user (basic or token auth)')
    .option(
      '--registry-password-file <path>',
      'file holding the registry password (REGVAULT_REGISTRY_PASSWORD_FILE); there is no password flag',
    )
    .option('--concurrency <n>', 'copies in flight')
    .option('--json', 'JSON lines of progress and one result object');
}
