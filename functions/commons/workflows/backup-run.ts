/**
 * What every step of a backup run shares: its state after discovery, the
 * run lease it holds on its source (renewed, released), where the vault is,
 * and the running manifest discovery writes and finalize completes.
 */
import { emptyTotals, type Location } from '../copy/model.ts';
import type { SourceLayout } from '../registry/blob-layout.ts';
import type { RepositorySelection } from '../registry/selection.ts';
import {
  type DatabaseDumpRecord,
  type SnapshotManifest,
  SnapshotStatus,
  selectionOf,
  VAULT_FORMAT_VERSION,
} from '../vault/format.ts';
import {
  type LeaseSource,
  RunLeaseLostError,
  releaseRunLease,
  renewRunLease,
} from '../vault/run-lease.ts';
import { readManifest } from '../vault/store.ts';
import { Access, type WorkflowDeps } from './deps.ts';
import type { CaptureSummary } from './resources-capture.ts';

/** The workflow state after discovery: references and names, no keys. */
export interface BackupState {
  readonly runId: string;
  readonly snapshotId: string;
  readonly startedAt: string;
  readonly layout: SourceLayout;
  readonly source: Location;
  readonly profile: string;
  readonly resourceName?: string;
  readonly rootDirectory: string;
  readonly previousSnapshotId?: string;
  readonly targetObjectsPerShard: number;
  readonly concurrency: number;
  readonly clusterFiles: readonly string[];
  /** What the capture of cluster objects took, when the input asked for one. */
  readonly resources?: CaptureSummary;
  /** From the input's `ttlDays`, counted from `startedAt`. */
  readonly expiresAt?: string;
  /** A partial backup's repositories (absent: the whole registry). */
  readonly selection?: RepositorySelection;
  /** The registry's database, dumped while it was quiesced (quay). */
  readonly database?: DatabaseDumpRecord;
  /** Discover quiesced the registry (its undo record is in the run's files). */
  readonly quiesced?: true;
}

/** The source a backup's run lease guards. */
export function leaseSourceOf(source: Location): LeaseSource {
  return {
    ...(source.endpoint === undefined ? {} : { endpoint: source.endpoint }),
    bucket: source.bucket,
    prefix: source.prefix,
  };
}

/**
 * Renews the run's lease. A run whose lease another run took over, or whose
 * snapshot was marked failed when its lease was released, must stop
 * (RunLeaseLost). A lease that is simply not there while the snapshot still
 * runs (a run started by a version without leases) lets it go on.
 * `unlessFresh`: nothing is sent while this process renewed it less than a
 * quarter of its life ago (vault/run-lease.ts).
 */
export async function renewBackupLease(
  run: { runId: string; snapshotId: string; source: Location },
  deps: WorkflowDeps,
  options: { readonly unlessFresh?: boolean } = {},
): Promise<void> {
  try {
    await renewRunLease(
      deps.vault,
      { runId: run.runId, source: leaseSourceOf(run.source) },
      deps.lease,
      deps.now(),
      options,
    );
  } catch (err) {
    if (!(err instanceof RunLeaseLostError && err.gone)) throw err;
    const manifest = await readManifest(deps.vault, run.snapshotId);
    if (manifest !== undefined && manifest.status !== SnapshotStatus.Running) throw err;
    deps.log.warn('the run has no lease; it goes on', { runId: run.runId });
  }
}

/** Lets the next backup of the source in, once the run's manifest is final. */
export async function releaseBackupLease(state: BackupState, deps: WorkflowDeps): Promise<void> {
  await releaseRunLease(
    deps.vault,
    { runId: state.runId, source: leaseSourceOf(state.source) },
    deps.lease,
    deps.now(),
  );
}

export function vaultLocation(deps: WorkflowDeps): Location {
  return { ...deps.vault.location, access: Access.Vault };
}

export function baseManifest(state: BackupState, deps: WorkflowDeps): SnapshotManifest {
  return {
    formatVersion: VAULT_FORMAT_VERSION,
    id: state.snapshotId,
    status: SnapshotStatus.Running,
    startedAt: state.startedAt,
    ...(state.expiresAt === undefined ? {} : { expiresAt: state.expiresAt }),
    ...(state.selection === undefined ? {} : { selection: selectionOf(state.selection) }),
    toolVersion: deps.toolVersion,
    layout: state.layout,
    runId: state.runId,
    leased: true,
    source: {
      profile: state.profile,
      ...(state.resourceName === undefined ? {} : { resourceName: state.resourceName }),
      bucket: state.source.bucket,
      ...(state.source.endpoint === undefined ? {} : { endpoint: state.source.endpoint }),
      region: state.source.region,
      prefix: state.source.prefix,
      rootDirectory: state.rootDirectory,
    },
    counts: { objects: 0, blobs: 0, repositories: 0, tags: 0 },
    bytes: 0,
    totals: emptyTotals(),
    uploadsSkipped: [],
    checks: {},
    failures: { count: 0, sample: [] },
    clusterFiles: [...state.clusterFiles],
    ...(state.database === undefined ? {} : { database: state.database }),
    ...(state.resources === undefined ? {} : { resources: state.resources }),
    inventory: { records: 0, parts: [] },
  };
}
