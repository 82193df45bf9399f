/**
 * Waiting for a registry's storage switch to roll out (failing fast on
 * storage errors in the new pods' logs) and rolling it back. The restore
 * workflow (workflows/restore.ts, which the CLI runs through the local
 * runner too) judges one rollout status per poll with `judgeRollout` and
 * `describeRolloutFailure` inside the state machine's Wait/Choice loop, and
 * its rollback step calls `rollBackStorage`, which waits here for the
 * rollback's own rollout. `switchVerifyRollback` (switch, wait, verify, roll
 * back in one call) has no caller outside the tests.
 */
import { ClusterError, messageOf } from '../errors.ts';
import type { RegistryProfile, RolloutStatus, StorageRef, SwitchResult } from './profile.ts';
import type { VerifyReport } from './verify.ts';

/** The rollout did not finish: it timed out or the new pods logged storage errors. */
export class RolloutError extends ClusterError {
  readonly status: RolloutStatus | undefined;
  readonly kind: 'timeout' | 'storage-errors';

  constructor(message: string, kind: 'timeout' | 'storage-errors', status?: RolloutStatus) {
    super(message);
    this.kind = kind;
    this.status = status;
  }
}

export interface WaitOptions {
  readonly timeoutMs?: number;
  readonly intervalMs?: number;
  readonly onProgress?: (status: RolloutStatus) => void;
  readonly sleep?: (ms: number) => Promise<void>;
  readonly now?: () => number;
}

/** Decides from one status whether to stop waiting and why (shared with the Step Functions poll). */
export function judgeRollout(status: RolloutStatus): 'done' | 'failed' | 'waiting' {
  if (status.done) return 'done';
  if (status.storageErrors.length > 0) return 'failed';
  return 'waiting';
}

/** Explains a failed rollout, quoting the log lines that show the storage error. */
export function describeRolloutFailure(status: RolloutStatus): string {
  const lines = status.storageErrors.slice(0, 5).map((e) => `  ${e.pod}: ${e.line}`);
  return `the new registry pods report storage errors (${status.message}):\n${lines.join('\n')}\nCheck the bucket, endpoint, region and the keys in the Secret.`;
}

/** Polls until the rollout is done; throws RolloutError on storage errors or timeout. */
export async function waitForRollout(
  profile: RegistryProfile,
  switched: Pick<SwitchResult, 'podsBefore'>,
  options: WaitOptions = {},
): Promise<RolloutStatus> {
  const now = options.now ?? Date.now;
  const sleep =
    options.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  const deadline = now() + (options.timeoutMs ?? 300_000);
  let last: RolloutStatus | undefined;
  for (;;) {
    last = await profile.rolloutStatus(switched);
    options.onProgress?.(last);
    const verdict = judgeRollout(last);
    if (verdict === 'done') return last;
    if (verdict === 'failed')
      throw new RolloutError(describeRolloutFailure(last), 'storage-errors', last);
    if (now() >= deadline) {
      throw new RolloutError(
        `the registry rollout did not finish within ${Math.round((options.timeoutMs ?? 300_000) / 1000)} s; last seen: ${last.message}`,
        'timeout',
        last,
      );
    }
    await sleep(options.intervalMs ?? 2_000);
  }
}

/**
 * Re-applies the storage a switch replaced and waits for that rollout. The
 * pods to wait out are the ones the failed switch created: a Deployment
 * rolled back to its previous template keeps the old pods that are still
 * running (as `kubectl rollout undo` does), so those count as the rollout's
 * result, not as pods to replace.
 */
export async function rollBackStorage(
  profile: RegistryProfile,
  switched: Pick<SwitchResult, 'previous' | 'podsBefore'>,
  options: WaitOptions = {},
): Promise<{ switched: SwitchResult; rollout: RolloutStatus | undefined }> {
  const before = new Set(switched.podsBefore);
  const now = await profile.rolloutStatus({ podsBefore: [] });
  const createdBySwitch = now.newPods.map((pod) => pod.name).filter((name) => !before.has(name));
  const back = await profile.switchStorage(switched.previous);
  const rollout = back.changed
    ? await waitForRollout(profile, { podsBefore: createdBySwitch }, options)
    : undefined;
  return { switched: back, rollout };
}

export interface SwitchOutcome {
  readonly ok: boolean;
  readonly switched?: SwitchResult | undefined;
  readonly rollout?: RolloutStatus | undefined;
  readonly verify?: VerifyReport | undefined;
  readonly error?: string | undefined;
  readonly rollback?: {
    readonly ok: boolean;
    readonly restored: StorageRef;
    readonly rollout?: RolloutStatus;
    readonly verify?: VerifyReport;
    readonly error?: string;
  };
}

export interface SwitchOptions extends WaitOptions {
  readonly rollbackOnFailure: boolean;
  /** Verifies the registry after a rollout (against the snapshot after the switch). */
  readonly verify: () => Promise<VerifyReport>;
  /** Verifies the registry after a rollback (against what it served before); optional. */
  readonly verifyAfterRollback?: () => Promise<VerifyReport>;
}

/** Switch, wait, verify; on failure roll back when asked and report both outcomes. */
export async function switchVerifyRollback(
  profile: RegistryProfile,
  next: StorageRef,
  options: SwitchOptions,
): Promise<SwitchOutcome> {
  const switched = await profile.switchStorage(next);
  let rollout: RolloutStatus | undefined;
  let verify: VerifyReport | undefined;
  let error: string | undefined;
  try {
    rollout = switched.changed
      ? await waitForRollout(profile, switched, options)
      : await profile.rolloutStatus({ podsBefore: [] });
    verify = await options.verify();
    if (!verify.ok) error = `verification failed: ${verify.problems.slice(0, 5).join('; ')}`;
  } catch (err) {
    error = messageOf(err);
    if (err instanceof RolloutError && err.status !== undefined) rollout = err.status;
  }
  if (error === undefined) return { ok: true, switched, rollout, verify };
  const failed = {
    ok: false,
    switched,
    ...(rollout === undefined ? {} : { rollout }),
    ...(verify === undefined ? {} : { verify }),
    error,
  };
  if (!options.rollbackOnFailure || !switched.changed) return failed;
  let rollback: SwitchOutcome['rollback'];
  try {
    const { rollout: backRollout } = await rollBackStorage(profile, switched, options);
    const backVerify =
      options.verifyAfterRollback === undefined ? undefined : await options.verifyAfterRollback();
    rollback = {
      ok: backVerify === undefined || backVerify.ok,
      restored: switched.previous,
      ...(backRollout === undefined ? {} : { rollout: backRollout }),
      ...(backVerify === undefined ? {} : { verify: backVerify }),
    };
  } catch (err) {
    rollback = { ok: false, restored: switched.previous, error: messageOf(err) };
  }
  return { ...failed, rollback };
}
