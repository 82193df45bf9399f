/**
 * The regvault CLI: the backup and restore workflows (the same ASL files and
 * step code the AWS deployment runs, executed locally), verification, snapshot
 * management, a planning dry run and a bucket-to-bucket copy.
 *
 * Settings come from flags, then REGVAULT_* environment variables, then a
 * config file (--config, YAML or JSON with the same names in camelCase); all
 * are validated by one schema before anything runs.
 *
 * Exit codes (./outcome.ts): 0 success, 1 failed, 2 bad input or usage, 3 partial (the
 * run finished but some objects failed), 4 a restore rolled back.
 */
import { createRequire } from 'node:module';
import { Command, CommanderError } from 'commander';
import { exitCodeOf, hintOf, InputError, messageOf } from '../functions/commons/errors.ts';
import { run } from './context.ts';
import { ExitCode } from './outcome.ts';

export { ExitCode } from './outcome.ts';

/**
 * One module per command under ./commands/, loaded only when its command
 * runs (or for help on every command): the SDKs and the cluster client load
 * with the command that needs them, so the CLI starts fast.
 */
const COMMANDS = {
  backup: async () => (await import('./commands/backup.ts')).backupCommand,
  restore: async () => (await import('./commands/restore.ts')).restoreCommand,
  verify: async () => (await import('./commands/verify.ts')).verifyCommand,
  snapshots: async () => (await import('./commands/snapshots.ts')).snapshotsCommand,
  fsck: async () => (await import('./commands/fsck.ts')).fsckCommand,
  plan: async () => (await import('./commands/plan.ts')).planCommand,
  copy: async () => (await import('./commands/copy.ts')).copyCommand,
  export: async () => (await import('./commands/export.ts')).exportCommand,
  import: async () => (await import('./commands/export.ts')).importCommand,
  approve: async () => (await import('./commands/approve.ts')).approveCommand,
  reject: async () => (await import('./commands/approve.ts')).rejectCommand,
} as const satisfies Record<string, () => Promise<(program: Command) => void>>;

/** What to do about a usage error (an unknown command or flag, a missing value): commander says which. */
const USAGE_HINT = 'run `regvault --help`, or the command with --help, for what it takes';

/** The program with the commands `argv` can reach: the one it names, else all (for help). */
export async function buildProgram(argv: readonly string[] = []): Promise<Command> {
  const program = new Command()
    .name('regvault')
    .description('back up and recover a container registry whose data lives in S3')
    .version(REGVAULT_VERSION)
    .exitOverride()
    // Commands inherit it: each usage error ends with what to do.
    .showHelpAfterError(`(${USAGE_HINT})`);
  const named = argv.find((arg) => !arg.startsWith('-'));
  const onlyVersion =
    named === undefined && argv.some((arg) => arg === '--version' || arg === '-V');
  const wanted = onlyVersion
    ? []
    : named !== undefined && named in COMMANDS
      ? [named as keyof typeof COMMANDS]
      : (Object.keys(COMMANDS) as Array<keyof typeof COMMANDS>);
  for (const add of await Promise.all(wanted.map((name) => COMMANDS[name]()))) add(program);
  return program;
}

/** The package version: package.json is one folder up from bin/ and from the compiled dist/. */
const REGVAULT_VERSION = String(
  (createRequire(import.meta.url)('../package.json') as { version?: unknown }).version ?? '0.0.0',
);

/** Whether the command line asks for --json (before a `--`), for errors raised before the settings resolve. */
function asksForJson(argv: readonly string[]): boolean {
  const end = argv.indexOf('--');
  return (end === -1 ? argv : argv.slice(0, end)).includes('--json');
}

/**
 * Runs the CLI and returns the exit code. Errors are printed to stderr, never
 * thrown; with --json the last stdout line is still the result object.
 */
export async function runCli(argv: readonly string[]): Promise<number> {
  run.exitCode = ExitCode.Ok;
  run.json = asksForJson(argv);
  run.resultWritten = false;
  const program = await buildProgram(argv);
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return run.exitCode;
  } catch (err) {
    // Commander has printed its own message (and --help its text, which is not an error).
    if (err instanceof CommanderError && err.exitCode === 0) return ExitCode.Ok;
    // Judged by the error's name: every error regvault names carries its exit code.
    const name = err instanceof Error ? err.name : undefined;
    const code = err instanceof CommanderError ? ExitCode.BadInput : exitCodeOf(name);
    const hint = err instanceof CommanderError ? USAGE_HINT : hintOf(name);
    if (!(err instanceof CommanderError)) process.stderr.write(`regvault: ${messageOf(err)}\n`);
    if (run.json && !run.resultWritten)
      process.stdout.write(
        `${JSON.stringify({
          event: 'result',
          ok: false,
          error: err instanceof InputError ? err.message.split('\n')[0] : messageOf(err),
          ...(err instanceof InputError ? { issues: err.issues } : {}),
          ...(hint === undefined ? {} : { hint }),
          exitCode: code,
        })}\n`,
      );
    return code;
  }
}

if (
  import.meta.url === `file://${process.argv[1]}` ||
  process.argv[1]?.endsWith('regvault.ts') === true ||
  process.argv[1]?.endsWith('regvault.mjs') === true
) {
  runCli(process.argv.slice(2)).then((code) => process.exit(code));
}
