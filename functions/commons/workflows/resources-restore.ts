/**
 * `restore --resources` (docs/resources.md): the snapshot's cluster objects
 * applied to a cluster, the same or another, in dependency order, each with
 * the namespace, storage class and image mappings and then the resource
 * modifiers applied, by server-side apply as `regvault`. Every object is
 * read and transformed once before anything is written, so a modifier that
 * does not fit an object stops the restore while the cluster is untouched;
 * a dry run stops there and says what it would do. After applying, each
 * object is read back and its mapped fields checked, and workloads are
 * waited for until Ready or a reason.
 */
import { stringify } from 'yaml';
import {
  type ApiType,
  groupResourceOf,
  type KubeObject,
  type ResourceApi,
} from '../cluster/resources-api.ts';
import { ownerReferencesOf } from '../cluster/resources-clean.ts';
import { applyMappings, type Mappings, podSpecsOf } from '../cluster/resources-mappings.ts';
import { applyModifiers, type ModifierRule } from '../cluster/resources-modifiers.ts';
import { InputError, messageOf } from '../errors.ts';
import type { StepLogger } from '../log.ts';
import { type ResourceEntry, readResourceIndex, readResourceObject } from '../vault/resources.ts';
import type { Vault } from '../vault/store.ts';

export const EXISTING_POLICIES = ['skip', 'update'] as const;
export type ExistingPolicy = (typeof EXISTING_POLICIES)[number];

/**
 * The order of restore: what others need first. Types not named here come
 * after the named built-ins and before the workloads when they are built in,
 * and last when they are custom (their definitions are restored first).
 */
export const RESTORE_ORDER = [
  'namespaces',
  'customresourcedefinitions.apiextensions.k8s.io',
  'storageclasses.storage.k8s.io',
  'serviceaccounts',
  'secrets',
  'configmaps',
  'persistentvolumes',
  'persistentvolumeclaims',
  'services',
  '(other built-in types)',
  'deployments.apps',
  'statefulsets.apps',
  'daemonsets.apps',
  'replicasets.apps',
  'cronjobs.batch',
  'jobs.batch',
  'pods',
  '(custom resources)',
] as const;

const isCustomGroup = (group: string) =>
  group.includes('.') && !group.endsWith('.k8s.io') && group !== 'k8s.io';

/** An entry's place in RESTORE_ORDER. */
export function restoreRank(entry: Pick<ResourceEntry, 'group' | 'resource'>): number {
  const named = RESTORE_ORDER.indexOf(groupResourceOf(entry) as (typeof RESTORE_ORDER)[number]);
  if (named !== -1) return named;
  return RESTORE_ORDER.indexOf(
    isCustomGroup(entry.group) ? '(custom resources)' : '(other built-in types)',
  );
}

const WORKLOADS = new Set([
  'deployments.apps',
  'statefulsets.apps',
  'daemonsets.apps',
  'replicasets.apps',
]);

export type RestoreAction = 'create' | 'update' | 'skip' | 'failed';

/** What happened (or, in a dry run, would happen) to one object. */
export interface ObjectOutcome {
  readonly groupResource: string;
  readonly apiVersion: string;
  readonly kind: string;
  /** In the target, after mapping. */
  readonly namespace?: string;
  readonly name: string;
  readonly action: RestoreAction;
  /** Resource modifier rules applied to it, by index. */
  readonly rules: readonly number[];
  /** Why it failed, or why a rule was skipped. */
  readonly note?: string;
  /** Dry run: the object as it would be applied, Secret values redacted. */
  readonly yaml?: string;
}

export interface WorkloadReadiness {
  readonly groupResource: string;
  readonly namespace: string;
  readonly name: string;
  readonly ready: boolean;
  readonly readyReplicas: number;
  readonly replicas: number;
  /** Why it is not Ready: the controller's condition message, or what was not observed in time. */
  readonly reason?: string;
}

export interface ResourceRestoreReport {
  readonly snapshotId: string;
  readonly server: string;
  readonly dryRun: boolean;
  readonly counts: Readonly<Record<RestoreAction, number>>;
  /** Problems found reading back what was applied: missing objects, fields without their mapped value. */
  readonly mismatches: readonly string[];
  readonly workloads: readonly WorkloadReadiness[];
}

export interface ResourceRestoreInput {
  readonly vault: Vault;
  readonly api: ResourceApi;
  readonly snapshotId: string;
  readonly mappings: Mappings;
  readonly modifiers: readonly ModifierRule[];
  readonly existing: ExistingPolicy;
  readonly dryRun: boolean;
  /** How long workloads may take to be Ready after the apply. */
  readonly readyTimeoutMs: number;
  readonly log: StepLogger;
  /** Each object's outcome as it is decided (the CLI prints it). */
  readonly onObject?: (outcome: ObjectOutcome) => void;
}

/** The object with every Secret value replaced by its length: for printing. */
export function redactSecret(object: KubeObject): KubeObject {
  if (object.kind !== 'Secret' || object.apiVersion !== 'v1') return object;
  const redact = (values: unknown) =>
    typeof values === 'object' && values !== null
      ? Object.fromEntries(
          Object.entries(values).map(([k, v]) => [k, `(redacted, ${String(v).length} characters)`]),
        )
      : values;
  return {
    ...object,
    ...(object['data'] === undefined ? {} : { data: redact(object['data']) }),
    ...(object['stringData'] === undefined ? {} : { stringData: redact(object['stringData']) }),
  };
}

const label = (o: { groupResource: string; namespace?: string | undefined; name: string }) =>
  `${o.groupResource} ${o.namespace === undefined ? '' : `${o.namespace}/`}${o.name}`;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const field = (value: unknown, name: string): unknown =>
  typeof value === 'object' && value !== null ? Reflect.get(value, name) : undefined;

/** Images and storage classes: the fields the mappings set, as `path -> value`. */
function mappedFields(object: KubeObject): Map<string, unknown> {
  const out = new Map<string, unknown>();
  podSpecsOf(object).forEach((spec, s) => {
    for (const key of ['initContainers', 'containers']) {
      const list = spec[key];
      for (const c of Array.isArray(list) ? list : [])
        out.set(`podSpec[${s}].${key}[${String(field(c, 'name'))}].image`, field(c, 'image'));
    }
  });
  const spec = field(object, 'spec');
  if (object.kind === 'PersistentVolumeClaim')
    out.set('spec.storageClassName', field(spec, 'storageClassName'));
  const templates = field(spec, 'volumeClaimTemplates');
  for (const t of Array.isArray(templates) ? templates : [])
    out.set(
      `spec.volumeClaimTemplates[${String(field(field(t, 'metadata'), 'name'))}].spec.storageClassName`,
      field(field(t, 'spec'), 'storageClassName'),
    );
  return out;
}

/** Restores (or, dry, plans) the snapshot's objects into the cluster `input.api` reaches. */
export async function restoreResources(
  input: ResourceRestoreInput,
): Promise<ResourceRestoreReport> {
  const { api, vault, snapshotId } = input;
  const index = await readResourceIndex(vault, snapshotId);
  if (index === undefined)
    throw new InputError(`snapshot ${snapshotId} holds no cluster objects`, [
      '--resources: restore a snapshot made by `regvault backup --resources` (or with --include-namespaces and the other selection flags); this one captured none',
    ]);
  const entries = [...index.objects].sort((a, b) => restoreRank(a) - restoreRank(b));
  const served = new Set((await api.discover()).map((t) => groupResourceOf(t)));
  const definitions = new Set(
    entries.filter((e) => e.resource === 'customresourcedefinitions').map((e) => e.name),
  );
  const byKind = new Map(entries.map((e) => [`${e.group}/${e.kind}`, e] as const));
  const typeOf = (e: ResourceEntry): ApiType => ({ ...e, verbs: [], shortNames: [] });

  /** The object as it will be applied: mapped, then modified (rules match its snapshot namespace). */
  const prepare = async (entry: ResourceEntry) => {
    const captured = await readResourceObject(vault, snapshotId, entry);
    const mapped = applyMappings(captured, input.mappings);
    return applyModifiers(input.modifiers, mapped, {
      groupResource: groupResourceOf(entry),
      namespace: entry.namespace,
      name: entry.name,
      labels: captured.metadata.labels ?? {},
    });
  };

  // First pass: every object read, mapped and modified before the first write.
  const planned: Array<{ entry: ResourceEntry; action: RestoreAction; note?: string }> = [];
  const problems: string[] = [];
  for (const entry of entries) {
    let modified: Awaited<ReturnType<typeof prepare>>;
    try {
      modified = await prepare(entry);
    } catch (err) {
      if (!(err instanceof InputError)) throw err;
      problems.push(...err.issues);
      continue;
    }
    const { object } = modified;
    const groupResource = groupResourceOf(entry);
    const known = served.has(groupResource) || definitions.has(`${entry.resource}.${entry.group}`);
    const existing = known
      ? await api.get(typeOf(entry), object.metadata.namespace, object.metadata.name)
      : undefined;
    const action: RestoreAction = !known
      ? 'failed'
      : existing === undefined
        ? 'create'
        : input.existing === 'update'
          ? 'update'
          : 'skip';
    const skippedRules = modified.skipped.map((s) => `rule ${s.rule} skipped: ${s.why}`);
    const note = !known
      ? `the cluster serves no ${groupResource} and the snapshot holds no definition of it`
      : skippedRules.length > 0
        ? skippedRules.join('; ')
        : undefined;
    planned.push({ entry, action, ...(note === undefined ? {} : { note }) });
    if (input.dryRun)
      input.onObject?.({
        groupResource,
        apiVersion: object.apiVersion,
        kind: object.kind,
        ...(object.metadata.namespace === undefined
          ? {}
          : { namespace: object.metadata.namespace }),
        name: object.metadata.name,
        action,
        rules: modified.applied,
        ...(note === undefined ? {} : { note }),
        yaml: stringify(redactSecret(object)),
      });
  }
  if (problems.length > 0)
    throw new InputError(
      'the resource modifiers do not fit the snapshot; nothing was written',
      problems,
    );

  const counts: Record<RestoreAction, number> = { create: 0, update: 0, skip: 0, failed: 0 };
  const report = (extra: Partial<ResourceRestoreReport> = {}): ResourceRestoreReport => ({
    snapshotId,
    server: api.server,
    dryRun: input.dryRun,
    counts,
    mismatches: [],
    workloads: [],
    ...extra,
  });
  if (input.dryRun) {
    for (const p of planned) counts[p.action]++;
    return report();
  }

  // Second pass: apply in order, owners' new uids filled in.
  const applied: ResourceEntry[] = [];
  for (const { entry, action, note } of planned) {
    let outcome: RestoreAction = action;
    let why = note;
    const { object, applied: rules } = await prepare(entry);
    const { namespace, name } = object.metadata;
    if (action === 'create' || action === 'update') {
      try {
        await api.apply(typeOf(entry), await withOwnerUids(object), { force: action === 'update' });
        applied.push(entry);
      } catch (err) {
        outcome = 'failed';
        why = messageOf(err);
      }
    }
    counts[outcome]++;
    input.onObject?.({
      groupResource: groupResourceOf(entry),
      apiVersion: object.apiVersion,
      kind: object.kind,
      ...(namespace === undefined ? {} : { namespace }),
      name,
      action: outcome,
      rules,
      ...(why === undefined ? {} : { note: why }),
    });
  }

  /** Owner references with the restored owners' uids; those whose owner is not there go. */
  async function withOwnerUids(object: KubeObject): Promise<KubeObject> {
    const refs = ownerReferencesOf(object);
    if (refs.length === 0) return object;
    const kept = [];
    for (const ref of refs) {
      const group = ref.apiVersion.includes('/') ? (ref.apiVersion.split('/')[0] ?? '') : '';
      const owner = byKind.get(`${group}/${ref.kind}`);
      const live =
        owner === undefined
          ? undefined
          : await api.get(
              typeOf(owner),
              owner.namespaced ? object.metadata.namespace : undefined,
              ref.name,
            );
      const uid = live?.metadata['uid'];
      if (typeof uid === 'string') kept.push({ ...ref, uid });
    }
    const { ownerReferences: _old, ...metadata } = object.metadata;
    return {
      ...object,
      metadata: kept.length === 0 ? metadata : { ...metadata, ownerReferences: kept },
    };
  }

  // Read back: each applied object is there with its mapped fields; workloads Ready or why not.
  const mismatches: string[] = [];
  const workloads: WorkloadReadiness[] = [];
  const deadline = Date.now() + input.readyTimeoutMs;
  for (const entry of applied) {
    const { object } = await prepare(entry);
    const { namespace, name } = object.metadata;
    const subject = label({ groupResource: groupResourceOf(entry), namespace, name });
    let live = await api.get(typeOf(entry), namespace, name);
    if (live === undefined) {
      mismatches.push(`${subject}: not found after it was applied`);
      continue;
    }
    const found = mappedFields(live);
    for (const [path, value] of mappedFields(object))
      if (found.get(path) !== value)
        mismatches.push(
          `${subject}: ${path} is ${JSON.stringify(found.get(path))}, expected ${JSON.stringify(value)}`,
        );
    if (!WORKLOADS.has(groupResourceOf(entry))) continue;
    let state = readiness(live);
    while (!state.ready && Date.now() < deadline) {
      await sleep(250);
      live = (await api.get(typeOf(entry), namespace, name)) ?? live;
      state = readiness(live);
    }
    workloads.push({
      groupResource: groupResourceOf(entry),
      namespace: namespace ?? '',
      name,
      ...state,
    });
  }
  return report({ mismatches, workloads });
}

/** Ready when the controller saw the current spec and every replica is ready; else why not. */
function readiness(
  live: KubeObject,
): Omit<WorkloadReadiness, 'groupResource' | 'namespace' | 'name'> {
  const status = field(live, 'status');
  // A DaemonSet counts the nodes it should run on; the others count replicas.
  const daemon = live.kind === 'DaemonSet';
  const wanted = daemon
    ? field(status, 'desiredNumberScheduled')
    : field(field(live, 'spec'), 'replicas');
  const replicas = typeof wanted === 'number' ? wanted : 1;
  const readyReplicas = Number(field(status, daemon ? 'numberReady' : 'readyReplicas') ?? 0);
  const observed = field(status, 'observedGeneration');
  const current = observed !== undefined && observed === live.metadata['generation'];
  if (current && readyReplicas >= replicas) return { ready: true, readyReplicas, replicas };
  const conditions = field(status, 'conditions');
  const failing = (Array.isArray(conditions) ? conditions : []).find(
    (c) => field(c, 'status') === 'False',
  );
  const message = field(failing, 'message');
  const reason = !current
    ? 'its controller has not reported on this spec yet'
    : typeof message === 'string'
      ? message
      : `${readyReplicas} of ${replicas} replicas ready`;
  return { ready: false, readyReplicas, replicas, reason };
}
