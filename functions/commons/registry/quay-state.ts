/**
 * What the `quay` profile does beyond pointing a registry at a bucket: stop
 * Quay's writers so the database and the blobs agree (3.7 and later: the
 * QuayRegistry's overrides with the HPA unmanaged; before: the operator's
 * Deployment, then the components' Deployments, scaled to 0), resume exactly
 * what was stopped, dump the database through the postgres pod, and restore
 * the registry itself from a snapshot (its Secrets and QuayRegistry, quiesced;
 * its database through psql; its storage; then resumed).
 */
import type { V1Secret } from '@kubernetes/client-node';
import { parse } from 'yaml';
import { type PodTarget, podText, runInPod } from '../cluster/exec.ts';
import { ClusterError } from '../errors.ts';
import {
  type CapturedFile,
  type DatabaseDump,
  type DiscoveredRegistry,
  NO_STORAGE,
  type PodState,
  type QuiesceRecord,
  RegistryMissingError,
  type RegistryProfile,
  type RegistryRestore,
  type StorageKeys,
  type StorageRef,
  type SwitchResult,
} from './profile.ts';
import {
  execTarget,
  isAvailable,
  isReady,
  type QuayCluster,
  type QuayComponent,
  type QuayRegistryObject,
  readyPodConfig,
} from './quay-cluster.ts';
import { databaseOf, parseQuayConfig } from './quay-config.ts';
import { loadDump, postgresDatabase } from './quay-database.ts';
import { readLiveTags } from './quay-live-tags.ts';

/** The components the runbook scales to 0 (as QuayRegistry kinds), and their pods' component labels. */
const STOPPED = { quay: 'quay-app', clair: 'clair-app', mirror: 'quay-mirror' } as const;

/** How a quiesce was done and what it changed: the QuayRegistry's components, or Deployments' replicas. */
type QuayUndo =
  | { readonly mode: 'overrides'; readonly name: string; readonly components: QuayComponent[] }
  | {
      readonly mode: 'scale';
      readonly name: string;
      readonly operator: ReadonlyArray<{ namespace: string; name: string; replicas: number }>;
      readonly deployments: ReadonlyArray<{ name: string; replicas: number }>;
    };

type ScaleUndo = Extract<QuayUndo, { mode: 'scale' }>;

/** True for versions before 3.7 (`3.6.4`, `v3.5.1`). */
export function before37(version: string): boolean {
  const [major = 0, minor = 0] = version.replace(/^v/, '').split('.').map(Number);
  return major < 3 || (major === 3 && minor < 7);
}

/** The components with quay, clair and mirror at 0 replicas and the HPA unmanaged (runbook 15.1.2). */
export function quiescedComponents(components: readonly QuayComponent[]): QuayComponent[] {
  const out = components.map((c): QuayComponent => {
    if (c.kind === 'horizontalpodautoscaler') return { ...c, managed: false };
    if (c.kind in STOPPED && c.managed !== false)
      return { ...c, overrides: { ...(c.overrides ?? {}), replicas: 0 } };
    return c;
  });
  if (!out.some((c) => c.kind === 'horizontalpodautoscaler'))
    out.push({ kind: 'horizontalpodautoscaler', managed: false });
  return out;
}

/** The components with `objectstorage` managed (the operator's bucket claim) or not (the bundle's storage). */
export function withObjectStorage(
  components: readonly QuayComponent[],
  managed: boolean,
): QuayComponent[] {
  const out = components.map((c) => (c.kind === 'objectstorage' ? { ...c, managed } : c));
  if (!out.some((c) => c.kind === 'objectstorage')) out.push({ kind: 'objectstorage', managed });
  return out;
}

interface ProfileParts {
  discover(): Promise<DiscoveredRegistry>;
  readStorageKeys(secretName: string): Promise<StorageKeys>;
  switchStorage(next: StorageRef): Promise<SwitchResult>;
  quayAppPods(): Promise<PodState[]>;
  /** The NooBaa claim's bucket in the namespace (managed object storage), if any. */
  claimBucket(): Promise<string | undefined>;
}

type Hooks = Required<
  Pick<
    RegistryProfile,
    | 'planQuiesce'
    | 'quiesce'
    | 'unquiesce'
    | 'dumpDatabase'
    | 'databaseTags'
    | 'restoreRegistry'
    | 'loadDatabase'
  >
>;

/** The hooks of the quay profile over its cluster calls. */
export function quayStateHooks(cluster: QuayCluster, parts: ProfileParts): Hooks {
  const { namespace, settings } = cluster;
  const undoOf = (plan: QuiesceRecord) => plan.undo as QuayUndo;

  /** The running postgres pod (`quay-component=postgres`, the runbook's selector). */
  const postgresPod = async (): Promise<PodTarget> => {
    const pod = (await cluster.pods('postgres')).find((p) => p.status?.phase === 'Running');
    if (pod === undefined)
      throw new ClusterError(
        `no running pod labelled quay-component=postgres in namespace ${namespace}: Quay's database is not one the operator manages (component postgres managed: false?); back an external database up with its own tools`,
      );
    return execTarget(pod);
  };

  /** The database's name: DB_URI of the running config, then of the managed keys, then the operator's default. */
  const databaseName = async (registry: QuayRegistryObject): Promise<string> => {
    const name = registry.metadata?.name ?? '';
    const read = await readyPodConfig(cluster);
    if (read !== undefined) {
      const found = databaseOf(
        parseQuayConfig(read.text, `/conf/stack/config.yaml of ${read.pod.metadata?.name}`),
      );
      if (found !== undefined) return found;
    }
    const keys = await cluster.secret(`${name}-quay-registry-managed-secret-keys`);
    const uri = keys?.data?.['DB_URI'];
    const fromKeys =
      uri === undefined
        ? undefined
        : databaseOf({ DB_URI: Buffer.from(uri, 'base64').toString('utf8') });
    return fromKeys ?? `${name}-quay-database`;
  };

  /** Stopped: no pod of quay-app, clair-app or quay-mirror left, not even one still terminating. */
  const stopped = async () => {
    for (const component of Object.values(STOPPED))
      if ((await cluster.pods(component, { terminating: true })).length > 0) return false;
    return true;
  };

  /** Serving: Available=True and a ready quay-app pod (an operator that was down leaves its old status). */
  const serving = async () =>
    isAvailable(await cluster.registry()) && (await cluster.pods('quay-app')).some(isReady);

  /** Puts back what `undo` recorded (components, or the Deployments then the operator). */
  const putBack = async (undo: QuayUndo) => {
    if (undo.mode === 'overrides')
      await cluster.patchRegistry(undo.name, { spec: { components: undo.components } });
    else {
      for (const d of undo.deployments) await cluster.scale(namespace, d.name, d.replicas);
      for (const o of undo.operator) await cluster.scale(o.namespace, o.name, o.replicas);
    }
  };

  const resume = async (undo: QuayUndo) => {
    await putBack(undo);
    await cluster.until(
      `QuayRegistry ${namespace}/${undo.name} Available=True with a ready quay-app pod`,
      serving,
    );
  };

  /** Stops what `undo` names (the components by overrides, or the operator then the Deployments) and waits. */
  const stop = async (undo: QuayUndo) => {
    if (undo.mode === 'overrides')
      await cluster.patchRegistry(undo.name, {
        spec: { components: quiescedComponents(undo.components) },
      });
    else {
      // The operator first, or it scales the components straight back.
      for (const o of undo.operator) await cluster.scale(o.namespace, o.name, 0);
      for (const d of undo.deployments) await cluster.scale(namespace, d.name, 0);
    }
    await cluster.until(
      `the quay-app, clair-app and quay-mirror pods of ${namespace} to be gone`,
      stopped,
    );
  };

  /** Before 3.7: the running operator Deployment and the components' Deployments, with their replicas. */
  const scaleUndo = async (name: string, version: string | undefined): Promise<ScaleUndo> => {
    const operator = (await cluster.deployments(settings.operatorNamespace))
      .filter((d) => d.name.startsWith('quay-operator') && d.replicas > 0)
      .map((d) => ({ namespace: settings.operatorNamespace, ...d }));
    if (operator.length === 0)
      throw new ClusterError(
        `Quay ${version ?? 'before 3.7'} is quiesced by scaling its operator to 0, and namespace ${settings.operatorNamespace} has no running quay-operator Deployment; set the quay profile's operatorNamespace`,
      );
    // The runbook's awk patterns: quay-app, quay-mirror, clair-app.
    const deployments = (await cluster.deployments(namespace)).filter(
      (d) => d.replicas > 0 && Object.values(STOPPED).some((c) => d.name.includes(c)),
    );
    return { mode: 'scale', name, operator, deployments };
  };

  const planQuiesce = async () => {
    const registry = await cluster.registry();
    const name = registry.metadata?.name ?? '';
    // Everything the dump needs is checked before anything is stopped.
    await podText(cluster.kc, await postgresPod(), ['pg_dump', '--version']);
    await databaseName(registry);
    const version = registry.status?.currentVersion;
    const older =
      version === undefined
        ? (await cluster.secret(`${name}-quay-registry-managed-secret-keys`)) === undefined
        : before37(version);
    if (!older) {
      const undo: QuayUndo = {
        mode: 'overrides',
        name,
        components: registry.spec?.components ?? [],
      };
      return {
        summary: `QuayRegistry ${namespace}/${name}: HPA unmanaged, quay, clair and mirror overridden to 0 replicas`,
        undo,
      };
    }
    const undo = await scaleUndo(name, version);
    return {
      summary: `Quay ${version ?? 'before 3.7'}: operator ${undo.operator.map((o) => o.name).join(', ')} and ${undo.deployments.map((d) => d.name).join(', ')} scaled to 0`,
      undo,
    };
  };

  return {
    planQuiesce,

    async quiesce(plan) {
      await stop(undoOf(plan));
    },

    async unquiesce(plan) {
      await resume(undoOf(plan));
      return `put back as recorded before: ${plan.summary}`;
    },

    async loadDatabase(database, open) {
      // As a backup quiesces: no Quay writer runs while the database is replaced.
      const { undo } = await planQuiesce();
      await stop(undo);
      try {
        await loadDump(cluster, database, { open }, postgresPod);
      } finally {
        await resume(undo);
      }
    },

    async dumpDatabase(): Promise<DatabaseDump> {
      const registry = await cluster.registry();
      const database = await databaseName(registry);
      const run = runInPod(cluster.kc, await postgresPod(), ['pg_dump', '-C', database]);
      return { database, stream: run.stdout, finished: run.finished };
    },

    async databaseTags() {
      const database = await databaseName(await cluster.registry());
      return readLiveTags(cluster.kc, await postgresPod(), database);
    },

    async restoreRegistry(restore: RegistryRestore): Promise<SwitchResult> {
      const file = (prefix: string) => restore.files.find((f) => f.name.startsWith(prefix));
      const quayFile = file('quayregistry-');
      if (quayFile === undefined)
        throw new ClusterError(
          'the snapshot holds no quayregistry-*.yaml; it was not taken with the quay profile',
        );
      const captured = parse(quayFile.yaml) as QuayRegistryObject;
      const name = settings.name ?? captured.metadata?.name ?? '';
      const capturedBundle = captured.spec?.configBundleSecret ?? '';
      const existing = await cluster.registry().catch((err: unknown) => {
        if (err instanceof RegistryMissingError) return undefined;
        throw err;
      });
      const previous = existing === undefined ? NO_STORAGE : (await parts.discover()).storage;
      const podsBefore = (await parts.quayAppPods()).map((p) => p.name);
      // The target's version decides how to quiesce: the running operator's, else the snapshot's.
      const version = existing?.status?.currentVersion ?? capturedVersion(restore.files);
      const older =
        version === undefined
          ? file(`secret-${name}-quay-registry-managed-secret-keys`) === undefined
          : before37(version);
      // The Secrets: managed keys as captured (they decrypt the database); the bundle under its name when free.
      for (const f of restore.files.filter((x) => x.name.startsWith('secret-'))) {
        const secret = parse(f.yaml) as V1Secret;
        const secretName = secret.metadata?.name ?? '';
        if (secretName === capturedBundle && (await cluster.secret(secretName)) !== undefined)
          continue;
        await cluster.putSecret({
          ...secret,
          metadata: { name: secretName, labels: secret.metadata?.labels ?? {} },
        });
      }
      // Managed object storage stays only when the target is the claim's bucket; any other
      // bucket is named in the config bundle (switchStorage), which the operator allows only
      // with objectstorage unmanaged.
      const capturedComponents = captured.spec?.components ?? [];
      const onManaged = capturedComponents.some(
        (c) => c.kind === 'objectstorage' && c.managed !== false,
      );
      const components =
        onManaged && restore.storage.bucket !== (await parts.claimBucket())
          ? withObjectStorage(capturedComponents, false)
          : capturedComponents;
      // 3.7 and later: applied with its components quiesced; before, as captured (no overrides
      // then), and quiesced once the operator has made its Deployments, by scaling them.
      const applied = {
        ...(captured.spec ?? {}),
        components: older ? components : quiescedComponents(components),
      };
      if (existing === undefined)
        await cluster.createRegistry({
          apiVersion: 'quay.redhat.com/v1',
          kind: 'QuayRegistry',
          metadata: {
            name,
            ...(captured.metadata?.['labels'] === undefined
              ? {}
              : { labels: captured.metadata['labels'] }),
          },
          spec: applied,
        });
      else await cluster.patchRegistry(name, { spec: applied });
      let undo: QuayUndo = { mode: 'overrides', name, components };
      if (older) {
        await cluster.until(
          `the Quay operator to make the quay-app Deployment of ${namespace}/${name}`,
          async () =>
            (await cluster.deployments(namespace)).some((d) => d.name.includes('quay-app')),
        );
        undo = await scaleUndo(name, version);
      }
      await stop(undo);
      try {
        await loadDump(
          cluster,
          await postgresDatabase(restore.files, name),
          { open: restore.openDump, save: restore.saveDatabase },
          postgresPod,
        );
        // Storage: the bundle pointed at the target (a new bundle; the one before stays for a rollback).
        const switched = await parts.switchStorage(restore.storage);
        await putBack(undo);
        return { ...switched, changed: true, previous, podsBefore };
      } catch (err) {
        // Quay is not left stopped, nor resumed on a database the failed load
        // dropped: the one kept before goes back first, then what was stopped.
        await restore
          .putBackDatabase?.((database, open) => loadDump(cluster, database, { open }, postgresPod))
          .catch(() => undefined);
        await putBack(undo).catch(() => undefined);
        throw err;
      }
    },
  };
}

/** The Quay version the snapshot's notes recorded, when known. */
function capturedVersion(files: readonly CapturedFile[]): string | undefined {
  const notes = files.find((f) => f.name === 'quay-notes.yaml');
  const version =
    notes === undefined ? undefined : (parse(notes.yaml) as { version?: unknown }).version;
  return typeof version === 'string' && version !== 'unknown' ? version : undefined;
}
