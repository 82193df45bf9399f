/**
 * `regvault export`: repositories of a snapshot as an OCI image layout (a
 * folder or a tar file) for a site with no way to the vault
 * (workflows/export.ts); `regvault import` pushes one into a registry.
 */
import type { Command } from 'commander';
import { InputError } from '../../functions/commons/errors.ts';
import { importLayout } from '../../functions/commons/registry/oci-import.ts';
import { exportLayout } from '../../functions/commons/workflows/export.ts';
import { commandWithSettings, type Flags, reporter, run, settingsOf } from '../context.ts';
import { depsFor, registryAnswers } from '../deps.ts';
import { checkSnapshotId, repeatable, snapshotNamed } from '../flags.ts';
import { folderSink, isTar, layoutSource, tarSink } from '../oci-files.ts';
import { settingLabel } from '../settings.ts';
import { FlagNames } from '../workflow-flags.ts';

/** Which flags set the export's fields. */
const EXPORT_FIELDS = {
  repositories: { flag: '--repository' },
  tags: { flag: '--tag' },
  repository: { flag: '--repository' },
} as const;

/** Adds `export` to the program. */
export function exportCommand(program: Command): void {
  commandWithSettings(
    program,
    'export',
    'write repositories of a snapshot as an OCI image layout (a folder, or a .tar file) for an air-gapped site',
  )
    .option('--snapshot <id>', 'snapshot id, or latest', 'latest')
    .option(
      '--repository <name|glob>',
      'the repositories to export (repeat it; team/* within one level, ** for all)',
      repeatable,
      [],
    )
    .option('--tag <tag|glob>', 'only these tags and what they need (repeat it)', repeatable, [])
    .requiredOption('--to <dir|file.tar>', 'a folder (made if missing) or a .tar file to write')
    .action(async (flags: Flags) => {
      const settings = await settingsOf(flags);
      const snapshotId = checkSnapshotId(String(flags['snapshot']), '--snapshot');
      const repositories = flags['repository'] as string[];
      const tags = flags['tag'] as string[];
      if (repositories.length === 0)
        throw new InputError('export needs the repositories to write', [
          "--repository: a repository name, or a glob (team/*, '**' for every one)",
        ]);
      const to = String(flags['to']);
      const names = new FlagNames(EXPORT_FIELDS, run.origins);
      const out = reporter(settings);
      const deps = depsFor(settings);
      try {
        const snapshot = await snapshotNamed(deps.vault, snapshotId, '--snapshot');
        const tar = isTar(to) ? tarSink(to) : undefined;
        const sink = tar ?? folderSink(to);
        try {
          const result = await exportLayout(
            { snapshot, repositories, ...(tags.length > 0 ? { tags } : {}) },
            deps,
            sink,
          );
          await tar?.close();
          out.result(
            { export: { ...result, to } },
            `exported ${result.refs.length} tags of ${result.repositories.join(', ')} from snapshot ${snapshot.id} into ${to}: ${result.blobs} blobs, ${result.bytes} bytes, each checked against its digest`,
          );
        } catch (err) {
          await tar?.abort();
          throw names.rethrown(err);
        }
      } finally {
        deps.close();
      }
    });
}

/** Adds `import` to the program. */
export function importCommand(program: Command): void {
  commandWithSettings(
    program,
    'import',
    'push an OCI image layout (a folder, or a .tar file, as export writes it) into a registry',
  )
    .requiredOption('--from <dir|file.tar>', 'the layout to read')
    .option(
      '--repository <name>',
      'push every image of the layout into this repository (for a layout named by bare tags)',
    )
    .action(async (flags: Flags) => {
      const settings = await settingsOf(flags);
      if (settings.registryUrl === undefined)
        throw new InputError('import needs the registry', [
          `${settingLabel('registryUrl', run.origins.registryUrl)}: where the registry answers, e.g. https://registry.example.com`,
        ]);
      const source = await layoutSource(String(flags['from']));
      const names = new FlagNames(EXPORT_FIELDS, run.origins);
      const out = reporter(settings);
      const deps = depsFor(settings);
      try {
        await registryAnswers(deps);
        const registry = deps.registry();
        if (registry === undefined) return;
        const result = await importLayout(
          registry,
          source,
          typeof flags['repository'] === 'string' ? { repository: flags['repository'] } : {},
        ).catch((err: unknown) => {
          throw names.rethrown(err);
        });
        out.result(
          { import: result },
          `imported ${result.refs.length} tags into ${registry.baseUrl}: ${result.manifests} manifests, ${result.blobsUploaded} blobs uploaded (${result.bytesUploaded} bytes), ${result.blobsPresent} already there`,
        );
      } finally {
        deps.close();
      }
    });
}
