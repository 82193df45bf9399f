/** Running the CLI as users do: a child process through tsx, its exit code and output. */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { typeScriptCommand } from '../../sandbox/process.ts';

const cli = fileURLToPath(new URL('../../bin/regvault.ts', import.meta.url));

/** How one run of the CLI ended. */
export interface CliRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `regvault args` with exactly `env` (nothing inherited), resolving when it exits. */
export function runRegvault(args: readonly string[], env: NodeJS.ProcessEnv): Promise<CliRun> {
  const { command, args: prefix } = typeScriptCommand(cli);
  return new Promise((resolve) => {
    execFile(command, [...prefix, ...args], { env, timeout: 120_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

/** The JSON lines of `--json` output. */
export const jsonLines = (text: string): Array<Record<string, unknown>> =>
  text
    .trim()
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);

/** The environment of a CLI run against a sandbox S3 server and the vault bucket `vault` there (nothing inherited but PATH and HOME). */
export function sandboxEnv(
  s3: {
    readonly region: string;
    readonly endpoint: string;
    readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string };
  },
  vault: string,
  more: NodeJS.ProcessEnv = {},
): NodeJS.ProcessEnv {
  return {
    PATH: process.env['PATH'],
    HOME: process.env['HOME'],
    REGVAULT_VAULT_BUCKET: vault,
    REGVAULT_VAULT_REGION: s3.region,
    REGVAULT_VAULT_ENDPOINT: s3.endpoint,
    AWS_ACCESS_KEY_ID: s3.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey,
    ...more,
  };
}
