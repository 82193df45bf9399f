/**
 * The restore's failure path (RollBackOrReportFailedSwitch and
 * DescribeRestoreFailure): say what failed and, when the registry had been
 * switched and rollback was asked for, switch it back, wait for the rollout
 * and check the registry answers again.
 */
import { type FailureName, failureNameOf, messageOf } from '../errors.ts';
import { type StorageRef, sameStorage } from '../registry/profile.ts';
import { rollBackStorage } from '../registry/rollout.ts';
import { registryBeforeKey } from '../vault/runs.ts';
import { getJson } from '../vault/store.ts';
import type { WorkflowDeps } from './deps.ts';
import { loadDatabaseBefore } from './registry-state.ts';
import {
  type RestoreState,
  type RolloutCheck,
  registryBeforeSchema,
  type SwitchOutput,
  type VerifyOutput,
} from './restore.ts';

export interface RollbackOutput {
  readonly ok: boolean;
  readonly restored: StorageRef;
  readonly message: string;
}

/**
 * The longest a rollback waits for its rollout: it runs inside one Lambda
 * invocation (15 minutes at most), unlike the forward rollout, which the state
 * machine polls.
 */
export const MAX_ROLLBACK_WAIT_SECONDS = 780;

/**
 * After a rollback: the registry answers `/v2/` and lists its catalog again.
 * Says so, or says what it answered (the rollback stands either way: the
 * previous storage is what the registry served before the restore).
 */
async function servesAgain(deps: WorkflowDeps): Promise<string> {
  const registry = deps.registry();
  if (registry === undefined) return 'was not checked (no registry URL)';
  try {
    if (!(await registry.ping())) return `does NOT answer GET ${registry.baseUrl}/v2/ with 200`;
    const repositories = await registry.catalog();
    return `serves again (${repositories.length} repositories in its catalog)`;
  } catch (err) {
    return `does NOT serve again: ${messageOf(err)}`;
  }
}

/** On failure after the switch: re-apply the previous storage, wait for that rollout, check the registry answers. */
export async function rollbackRestore(
  switched: SwitchOutput,
  timeoutSeconds: number,
  deps: WorkflowDeps,
): Promise<RollbackOutput> {
  const profile = deps.profile();
  try {
    await rollBackStorage(profile, switched, {
      timeoutMs: Math.min(timeoutSeconds, MAX_ROLLBACK_WAIT_SECONDS) * 1000,
      intervalMs: 1_000,
    });
    deps.log.warn('registry storage rolled back', { bucket: switched.previous.bucket });
    const serving = await servesAgain(deps);
    return {
      ok: true,
      restored: switched.previous,
      message: `the registry is back on s3://${switched.previous.bucket} and ${serving}`,
    };
  } catch (err) {
    return {
      ok: false,
      restored: switched.previous,
      message: `rollback to s3://${switched.previous.bucket} failed: ${messageOf(err)}`,
    };
  }
}

/** The text of a Step Functions error's cause (Lambda errors carry JSON with `errorMessage`). */
export function causeText(error: { Error?: string; Cause?: string } | null | undefined): string {
  if (error === null || error === undefined) return '';
  const cause = error.Cause ?? '';
  try {
    const parsed = JSON.parse(cause) as { errorMessage?: unknown };
    if (typeof parsed.errorMessage === 'string')
      return `${error.Error ?? 'Error'}: ${parsed.errorMessage}`;
  } catch {
    // not JSON: the cause is the message itself
  }
  return `${error.Error ?? 'Error'}: ${cause}`;
}

export interface FailedRestoreEvent {
  readonly state: RestoreState | null;
  readonly switched: SwitchOutput | null;
  readonly rollout: RolloutCheck | null;
  readonly verify: VerifyOutput | null;
  readonly error?: { Error?: string; Cause?: string } | null;
}

/**
 * A switch step that failed after its patch applied (its answer lost, say)
 * left no `switched`: the recorded storage from before the patch, compared
 * with what the registry uses now, tells whether the cluster changed.
 */
async function switchThatFailedLate(
  state: RestoreState | null,
  deps: WorkflowDeps,
): Promise<SwitchOutput | null> {
  if (state === null || !state.switchRegistry) return null;
  const recorded = await getJson(
    deps.vault,
    registryBeforeKey(deps.vault, state.runId),
    registryBeforeSchema,
  );
  if (recorded === undefined) return null;
  const before = recorded.storage;
  const now = (await deps.profile().discover()).storage;
  if (sameStorage(now, before)) return null;
  deps.log.warn('the switch step failed but the registry storage had changed', {
    runId: state.runId,
    bucket: now.bucket,
  });
  return {
    changed: true,
    previous: before,
    current: now,
    podsBefore: recorded.pods,
    switchedAt: '',
    deadline: '',
  };
}

/**
 * The failure path of a restore: says what failed and, when the registry had
 * been switched and rollback was asked for, switches it back and waits.
 */
export async function rollBackOrReport(
  event: FailedRestoreEvent,
  deps: WorkflowDeps,
): Promise<RollbackOutput & { rolledBack: boolean; error: FailureName }> {
  // The workflow's Error when it ends in RestoreFailed (its ErrorPath): what the failed step was.
  const error = failureNameOf(event.error?.Error, 'RestoreFailed');
  const reasons: string[] = [];
  if (event.error !== null && event.error !== undefined) reasons.push(causeText(event.error));
  if (event.rollout?.verdict === 'failed') reasons.push(`rollout: ${event.rollout.message}`);
  if (event.verify !== null && event.verify !== undefined && !event.verify.ok)
    reasons.push(`verification: ${event.verify.problems.slice(0, 5).join('; ')}`);
  const reason = reasons.join('; ') || 'unknown failure';
  const switched = event.switched ?? (await switchThatFailedLate(event.state, deps));
  // A database the restore replaced is put back whenever rollback was asked for.
  const databaseBack = async () =>
    event.state?.rollbackOnFailure === true
      ? await loadDatabaseBefore(event.state.runId, deps)
      : undefined;
  if (switched === null || !switched.changed) {
    const database = await databaseBack();
    return {
      ok: false,
      rolledBack: false,
      error,
      restored: switched?.previous ?? {
        bucket: '',
        regionEndpoint: '',
        region: '',
        secretName: '',
        rootDirectory: '',
      },
      message:
        database === undefined
          ? `restore failed before the registry was switched (the cluster is unchanged): ${reason}`
          : `restore failed before the registry was switched: ${reason}; ${database.detail}`,
    };
  }
  if (event.state?.rollbackOnFailure !== true) {
    return {
      ok: false,
      rolledBack: false,
      error,
      restored: switched.current,
      message: `restore failed after the registry was switched to s3://${switched.current.bucket}; it was left there because rollbackOnFailure is false: ${reason}`,
    };
  }
  const storage = await rollbackRestore(switched, event.state.rolloutTimeoutSeconds, deps);
  const database = await databaseBack();
  const rollback = {
    ...storage,
    ok: storage.ok && database?.ok !== false,
    message: database === undefined ? storage.message : `${storage.message}; ${database.detail}`,
  };
  return {
    ...rollback,
    rolledBack: rollback.ok,
    error: rollback.ok ? 'RestoreRolledBack' : error,
    message: `restore failed: ${reason}; ${rollback.ok ? `rolled back: ${rollback.message}` : rollback.message}`,
  };
}
