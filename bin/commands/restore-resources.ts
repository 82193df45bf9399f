/**
 * `regvault restore --resources`: the snapshot's cluster objects applied to
 * the cluster `--kubeconfig`/`--context` name, with mappings and resource
 * modifiers (docs/resources.md). Everything the user typed is checked before
 * the cluster is touched: the mappings, the existing-object policy, the
 * modifiers (a file, or a ConfigMap in the target cluster), the snapshot.
 */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { z } from 'zod';
import type { ApiType, ResourceApi } from '../../functions/commons/cluster/resources-api.ts';
import { parseMappings } from '../../functions/commons/cluster/resources-mappings.ts';
import {
  type ModifierRule,
  parseResourceModifiers,
} from '../../functions/commons/cluster/resources-modifiers.ts';
import { ExitCode, hintOf, InputError } from '../../functions/commons/errors.ts';
import {
  EXISTING_POLICIES,
  type ExistingPolicy,
  type ObjectOutcome,
  restoreResources,
} from '../../functions/commons/workflows/resources-restore.ts';
import { type Flags, reporter, run } from '../context.ts';
import { depsFor, findKubeconfig, requireCluster } from '../deps.ts';
import { checkSnapshotId, snapshotNamed } from '../flags.ts';
import { collectList } from '../resource-flags.ts';
import { numberFrom, type Settings } from '../settings.ts';

/** The flags that only `--resources` takes, by commander's name for each. */
const RESOURCE_ONLY = {
  existing: '--existing',
  namespaceMapping: '--namespace-mapping',
  storageClassMapping: '--storage-class-mapping',
  imageRegistryMapping: '--image-registry-mapping',
  resourceModifiers: '--resource-modifiers',
  dryRun: '--dry-run',
  readyTimeout: '--ready-timeout',
} as const;

/** Adds `restore`'s `--resources` flags. */
export function withResourceRestoreFlags(command: Command): Command {
  return (
    command
      .option(
        '--resources',
        "apply the snapshot's cluster objects (backup --resources) to the cluster --kubeconfig/--context name, instead of restoring the registry's data",
      )
      .option(
        '--existing <policy>',
        'an object that exists already: skip it, or update it (skip|update)',
      )
      .option(
        '--namespace-mapping <old=new>',
        'restore namespace old as new (repeat, or comma-separate)',
        collectList,
      )
      .option(
        '--storage-class-mapping <old=new>',
        'claims of storage class old get new',
        collectList,
      )
      .option(
        '--image-registry-mapping <old=new>',
        'images under prefix old (registry[/path]) pull from new instead',
        collectList,
      )
      .option(
        '--resource-modifiers <file|configmap:ns/name>',
        'resource modifier rules (version v1, resourceModifierRules), from a file or a ConfigMap in the target cluster',
      )
      // --dry-run is declared once, with the selective restore's flags (restore-repository.ts).
      .option(
        '--ready-timeout <seconds>',
        'how long restored workloads may take to be Ready (default 120)',
      )
  );
}

/** Usage errors of a restore without `--resources`: its flags given alone. */
export function resourceFlagsWithoutResources(flags: Flags): string[] {
  return Object.entries(RESOURCE_ONLY)
    .filter(([key]) => flags[key] !== undefined)
    .map(
      ([, flag]) =>
        `${flag}: only \`restore --resources\` takes it; add --resources, or leave it out`,
    );
}

/** `--resource-modifiers`: the rules, from a file or a ConfigMap's one data key. */
async function modifiersFrom(
  value: string,
  api: () => Promise<ResourceApi>,
): Promise<ModifierRule[]> {
  const configMap = /^configmap:([a-z0-9-]+)\/([a-z0-9.-]+)$/.exec(value);
  if (configMap === null) {
    let text: string;
    try {
      text = await readFile(value, 'utf8');
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      throw new InputError('the resource modifiers cannot be read', [
        `--resource-modifiers: ${value} cannot be read (${String(code ?? 'error')}); give a YAML file, or configmap:<namespace>/<name> for a ConfigMap in the target cluster`,
      ]);
    }
    return parseResourceModifiers(text, value);
  }
  const [, namespace = '', name = ''] = configMap;
  const configMaps: ApiType = {
    group: '',
    version: 'v1',
    resource: 'configmaps',
    kind: 'ConfigMap',
    namespaced: true,
    verbs: [],
    shortNames: [],
  };
  const found = await (await api()).get(configMaps, namespace, name);
  const data = found?.['data'];
  const values = typeof data === 'object' && data !== null ? Object.values(data) : [];
  if (found === undefined || values.length !== 1 || typeof values[0] !== 'string')
    throw new InputError('the resource modifiers cannot be read', [
      `--resource-modifiers: ${found === undefined ? `there is no ConfigMap ${namespace}/${name} in the target cluster` : `ConfigMap ${namespace}/${name} has ${values.length} data keys`}; create it with one key holding the rules (kubectl -n ${namespace} create configmap ${name} --from-file=modifiers.yaml)`,
    ]);
  return parseResourceModifiers(values[0], `ConfigMap ${namespace}/${name}`);
}

/** One outcome as a line (and, in a dry run, its YAML). */
function outcomeText(o: ObjectOutcome): string {
  const where = `${o.namespace === undefined ? '' : `${o.namespace}/`}${o.name}`;
  const rules = o.rules.length === 0 ? '' : ` (modifier rules ${o.rules.join(', ')})`;
  const note = o.note === undefined ? '' : `: ${o.note}`;
  const line = `${o.action.padEnd(6)} ${o.groupResource} ${where}${rules}${note}`;
  return o.yaml === undefined ? line : `${line}\n---\n${o.yaml.trimEnd()}`;
}

/** Runs `restore --resources` with the settings' vault and cluster. */
export async function restoreResourcesNow(flags: Flags, settings: Settings): Promise<void> {
  const existing = flags['existing'] ?? 'skip';
  const issues: string[] = [];
  if (flags['targetBucket'] !== undefined)
    issues.push(
      '--target-bucket: restore --resources applies cluster objects only; restore the data with a run of its own (restore --target-bucket ... without --resources)',
    );
  if (!EXISTING_POLICIES.includes(existing as ExistingPolicy))
    issues.push(
      `--existing: ${JSON.stringify(existing)} is not a policy; give skip (the default) or update`,
    );
  const timeout = numberFrom(z.number().int().min(0).max(86_400)).safeParse(
    flags['readyTimeout'] ?? '120',
  );
  if (!timeout.success)
    issues.push(
      `--ready-timeout: ${JSON.stringify(flags['readyTimeout'])} is not a number of seconds (0 to 86400)`,
    );
  if (issues.length > 0) throw new InputError('the flags are not valid', issues);
  const list = (key: string) => (Array.isArray(flags[key]) ? (flags[key] as string[]) : []);
  const mappings = parseMappings({
    namespaces: list('namespaceMapping'),
    storageClasses: list('storageClassMapping'),
    imageRegistries: list('imageRegistryMapping'),
  });
  const snapshot = checkSnapshotId(String(flags['snapshot'] ?? 'latest'), '--snapshot');
  const kubeconfig = findKubeconfig(settings);
  requireCluster(kubeconfig, 'restore --resources');
  const out = reporter(settings);
  const deps = depsFor(settings, kubeconfig);
  try {
    const modifiers =
      typeof flags['resourceModifiers'] === 'string'
        ? await modifiersFrom(flags['resourceModifiers'], deps.resources)
        : [];
    const manifest = await snapshotNamed(deps.vault, snapshot, '--snapshot');
    const dryRun = flags['dryRun'] === true;
    const result = await restoreResources({
      vault: deps.vault,
      api: await deps.resources(),
      snapshotId: manifest.id,
      mappings,
      modifiers,
      existing: existing as ExistingPolicy,
      dryRun,
      readyTimeoutMs: (timeout.data ?? 120) * 1000,
      log: deps.log,
      onObject: (o) =>
        settings.json
          ? out.event('resource', '', { ...o })
          : process.stdout.write(`${outcomeText(o)}\n`),
    });
    const notReady = result.workloads.filter((w) => !w.ready);
    const problems = [
      ...(result.counts.failed > 0 ? [`${result.counts.failed} objects failed`] : []),
      ...result.mismatches,
      ...notReady.map(
        (w) => `${w.groupResource} ${w.namespace}/${w.name} not Ready: ${w.reason ?? ''}`,
      ),
    ];
    run.exitCode = problems.length === 0 ? ExitCode.Ok : ExitCode.Partial;
    const { create, update, skip, failed } = result.counts;
    const summary = `${dryRun ? 'dry run, nothing written: would create' : 'created'} ${create}, ${dryRun ? 'update' : 'updated'} ${update}, ${dryRun ? 'skip' : 'skipped'} ${skip}, failed ${failed} at ${result.server} from snapshot ${manifest.id}`;
    const ready = result.workloads.filter((w) => w.ready).length;
    out.result(
      {
        status: problems.length === 0 ? 'SUCCEEDED' : 'PARTIAL',
        resources: result,
        ...(problems.length === 0
          ? {}
          : { error: problems.join('; '), hint: hintOf('ObjectsFailed') }),
      },
      [
        summary,
        ...(dryRun ? [] : [`workloads Ready: ${ready} of ${result.workloads.length}`]),
        ...problems.map((p) => `  - ${p}`),
      ].join('\n'),
    );
  } finally {
    deps.close();
  }
}
