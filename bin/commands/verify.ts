/**
 * `regvault verify`: a registry against what a snapshot says it serves.
 */
import type { Command } from 'commander';
import { InputError } from '../../functions/commons/errors.ts';
import { verifyRestore } from '../../functions/commons/workflows/restore.ts';
import { commandWithSettings, type Flags, reporter, run, settingsOf } from '../context.ts';
import { depsFor, registryAnswers } from '../deps.ts';
import { checkSnapshotId, pullSampleOf, snapshotNamed } from '../flags.ts';
import { ExitCode } from '../outcome.ts';
import { stepProgressReporter } from '../progress.ts';
import { settingLabel } from '../settings.ts';
import { cliHalf } from '../workflow-flags.ts';

/** Adds the command to the program. */
export function verifyCommand(program: Command): void {
  commandWithSettings(
    program,
    'verify',
    'check a registry against what a snapshot says it should serve',
  )
    .option('--snapshot <id>', 'snapshot id, or latest', 'latest')
    .option(
      '--pull-sample <n|all>',
      'images pulled in full, every blob sha256-checked (a count, or all)',
      '3',
    )
    .option('--push-test', 'also push a test image into regvault-verify/push-test')
    .action(async (flags: Flags) => {
      const settings = await settingsOf(flags);
      const pullSample = pullSampleOf(flags['pullSample']);
      const snapshot = checkSnapshotId(String(flags['snapshot']), '--snapshot');
      const pushTest = flags['pushTest'] === true;
      if (settings.registryUrl === undefined)
        throw new InputError('verify needs the registry', [
          `${settingLabel('registryUrl', run.origins.registryUrl)}: where the registry answers, e.g. https://registry.example.com`,
        ]);
      const out = reporter(settings);
      const deps = depsFor(settings, undefined, stepProgressReporter({ json: settings.json }));
      try {
        const manifest = await snapshotNamed(deps.vault, snapshot, '--snapshot');
        await registryAnswers(deps);
        const verified = await verifyRestore(
          { snapshotId: manifest.id, pullSample, pushTest },
          deps,
        );
        const report = { ...verified, problems: verified.problems.map(cliHalf) };
        run.exitCode = report.ok ? ExitCode.Ok : ExitCode.Failed;
        // A push that fails is one of the problems, so a verification that passed pushed.
        out.result(
          { snapshotId: manifest.id, pushTest, ...report },
          report.ok
            ? `the registry serves snapshot ${manifest.id}: ${report.repositories} repositories, ${report.tags} tags, ${report.pulled} pulls checked${pushTest ? ', and it accepted a test push' : ''}`
            : `verification FAILED:\n  ${report.problems.join('\n  ')}`,
        );
      } finally {
        deps.close();
      }
    });
}
