/**
 * The cluster-resources flags of `backup` (what to capture) and `restore`
 * (`--resources`: apply a snapshot's objects, with mappings and modifiers),
 * kept here so the commands' own files only add them (docs/resources.md).
 */
import type { Command } from 'commander';
import {
  type ResourceSelection,
  resourceSelectionSchema,
} from '../functions/commons/cluster/resources-select.ts';
import { InputError } from '../functions/commons/errors.ts';
import type { Flags } from './context.ts';
import { BACKUP_FIELDS, FlagNames } from './workflow-flags.ts';

/** Commander's parser for a list flag: comma-separated, and repeatable. */
export const collectList = (value: string, previous: string[] | undefined): string[] => [
  ...(previous ?? []),
  ...value
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== ''),
];

/** Adds `backup`'s capture flags. */
export function withCaptureFlags(command: Command): Command {
  return command
    .option(
      '--resources',
      "also capture the cluster's objects into the snapshot (every namespace unless --include-namespaces)",
    )
    .option(
      '--include-namespaces <list>',
      'capture objects in these namespaces (comma-separated; implies --resources)',
      collectList,
    )
    .option('--exclude-namespaces <list>', 'leave out objects in these namespaces', collectList)
    .option(
      '--include-resources <list>',
      'capture only these types: deployments.apps, statefulsets.apps, configmaps, ...',
      collectList,
    )
    .option('--exclude-resources <list>', 'leave out these types', collectList)
    .option('--selector <labels>', 'capture only objects with these labels (app=nginx,tier=web)');
}

/**
 * `backup`'s input for the capture (`resources`), or nothing when no capture
 * flag was given. Bad values are bad input naming their flags, before anything runs.
 */
export function captureInputOf(flags: Flags): { resources?: ResourceSelection } {
  // Commander names each value after its flag: `--selector` is the schema's labelSelector.
  const raw = Object.fromEntries(
    (Object.keys(resourceSelectionSchema.shape) as Array<keyof ResourceSelection>)
      .map((key) => [key, flags[key === 'labelSelector' ? 'selector' : key]] as const)
      .filter(([, value]) => value !== undefined),
  );
  if (flags['resources'] !== true && Object.keys(raw).length === 0) return {};
  const parsed = resourceSelectionSchema.safeParse(raw);
  if (parsed.success) return { resources: parsed.data };
  const names = new FlagNames(BACKUP_FIELDS, {});
  throw new InputError(
    'the resource selection is not valid',
    parsed.error.issues.map((issue) => {
      const [key, index] = issue.path;
      const flag = names.flag(`resources.${String(key)}`) ?? String(key);
      const list = raw[String(key)];
      const value =
        typeof index === 'number' && Array.isArray(list) ? ` (${JSON.stringify(list[index])})` : '';
      return `${flag}${value}: ${issue.message}`;
    }),
  );
}
