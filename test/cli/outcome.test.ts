import { describe, expect, it } from '@jest/globals';
import {
  ExitCode,
  RESTORE_ROLLED_BACK,
  restoreOutcome,
  type WorkflowResult,
  workflowExitCode,
} from '../../bin/outcome.ts';
import { emptyTotals } from '../../functions/commons/copy/model.ts';
import {
  ClusterError,
  exitCodeOf,
  FAILURES,
  hintOf,
  InputError,
  ObjectsFailedError,
  VaultError,
} from '../../functions/commons/errors.ts';

const failed = (error: string, cause: string, failedObjects = 0): WorkflowResult => ({
  status: 'FAILED',
  error,
  cause,
  totals: { ...emptyTotals(), failed: failedObjects },
});

describe('the exit code of a workflow run', () => {
  it.each([
    {
      case: 'a run that succeeded',
      result: { status: 'SUCCEEDED', totals: emptyTotals() } as WorkflowResult,
      code: ExitCode.Ok,
    },
    {
      case: 'a restore that rolled back',
      result: failed(
        RESTORE_ROLLED_BACK,
        'restore failed: verification: team-0/app-0:v1 is missing; rolled back: the registry serves s3://registry again',
      ),
      code: ExitCode.RolledBack,
    },
    {
      // The name decides, not the text: a rollback whose reason mentions failed objects is still 4.
      case: 'a rolled-back restore whose reason mentions failed objects',
      result: failed(RESTORE_ROLLED_BACK, 'verification: 3 objects failed; rolled back', 3),
      code: ExitCode.RolledBack,
    },
    {
      case: 'a rollback described in words but ending in RestoreFailed',
      result: failed('RestoreFailed', 'restore failed: x; rolled back: the registry serves s3://a'),
      code: ExitCode.Failed,
    },
    {
      // The workflow's Error names the step's failure (ErrorPath of its Fail state).
      case: 'a step that refused its input',
      result: failed('InputError', 'the restore input is not valid'),
      code: ExitCode.BadInput,
    },
    {
      case: 'a run whose copy failed on objects',
      result: failed('ObjectsFailed', 'snapshot x could not be proven', 1),
      code: ExitCode.Partial,
    },
    {
      case: 'a copy that lost objects and then failed under another name',
      result: failed('RestoreFailed', 'the copy failed', 2),
      code: ExitCode.Partial,
    },
    {
      case: 'a failure that merely quotes an InputError in its message',
      result: failed('RestoreFailed', 'restore failed: InputError: the restore input is not valid'),
      code: ExitCode.Failed,
    },
    {
      case: 'a failure that merely speaks of failed objects in its message',
      result: failed(
        'BackupFailed',
        'snapshot x FAILED: objects: 3 objects failed; failed objects: a (CopyObject AccessDenied)',
      ),
      code: ExitCode.Failed,
    },
    {
      case: 'a failure regvault does not name, whatever its text',
      result: failed('States.Runtime', 'InputError ObjectsFailed RestoreRolledBack failed objects'),
      code: ExitCode.Failed,
    },
  ])('is $code for $case', ({ result, code }) => {
    // Act
    const exit = workflowExitCode(result);
    // Assess
    expect(exit).toBe(code);
  });
});

describe('the exit code of each failure name', () => {
  it.each([
    { name: 'InputError', code: ExitCode.BadInput },
    { name: 'ObjectsFailed', code: ExitCode.Partial },
    { name: 'RestoreRolledBack', code: ExitCode.RolledBack },
    { name: 'ClusterError', code: ExitCode.Failed },
    { name: 'VaultError', code: ExitCode.Failed },
    { name: 'RunLocked', code: ExitCode.Failed },
    { name: 'BackupFailed', code: ExitCode.Failed },
    { name: 'RestoreFailed', code: ExitCode.Failed },
    { name: 'RestoreNotApproved', code: ExitCode.Failed },
    { name: 'Error', code: ExitCode.Failed },
    { name: 'TypeError', code: ExitCode.Failed },
    { name: 'States.TaskFailed', code: ExitCode.Failed },
    { name: 'CopyWorkerGaveUp', code: ExitCode.Failed },
    { name: 'inputerror', code: ExitCode.Failed },
    { name: 'constructor', code: ExitCode.Failed },
  ])('is $code for a run that ended in $name', ({ name, code }) => {
    // Act
    const exit = workflowExitCode(failed(name, 'some text'));
    // Assess
    expect(exit).toBe(code);
  });

  it('covers every name regvault gives, each with a hint', () => {
    // Assess: a new failure name needs its row above
    expect(Object.keys(FAILURES).sort()).toEqual(
      [
        'BackupFailed',
        'ClusterError',
        'InputError',
        'ObjectsFailed',
        'RestoreFailed',
        'RestoreNotApproved',
        'RestoreRolledBack',
        'RunLocked',
        'VaultError',
      ].sort(),
    );
    for (const failure of Object.values(FAILURES)) expect(failure.hint).not.toBe('');
  });

  it.each([
    { error: new InputError('bad', ['--x: bad']), code: ExitCode.BadInput },
    { error: new ObjectsFailedError('2 objects failed'), code: ExitCode.Partial },
    { error: new ClusterError('no cluster'), code: ExitCode.Failed },
    { error: new VaultError('no vault'), code: ExitCode.Failed },
  ])("is the $error.name class's own code after the error is serialised", ({ error, code }) => {
    // Prepare: what Lambda and Step Functions keep of an error
    const serialised = JSON.parse(JSON.stringify({ Error: error.name, Cause: error.message })) as {
      Error: string;
    };
    // Act
    const exit = exitCodeOf(serialised.Error);
    // Assess
    expect(exit).toBe(code);
    expect(error.exitCode).toBe(code);
    expect(hintOf(serialised.Error)).toBe(error.hint);
  });

  it('keeps the cause an error was made with', () => {
    // Prepare
    const cause = new Error('socket hang up');
    // Act
    const error = new ClusterError('the cluster API did not answer', { cause });
    // Assess
    expect(error.cause).toBe(cause);
  });
});

describe("a restore's result", () => {
  it('says it rolled back, and why, in its fields and its text', () => {
    // Prepare
    const cause =
      'restore failed: verification: allowNonEmptyTarget; rolled back: the registry serves s3://registry again';
    // Act
    const outcome = restoreOutcome(
      { ...failed(RESTORE_ROLLED_BACK, cause), output: undefined },
      (text) => text.replace('allowNonEmptyTarget', '--allow-non-empty'),
    );
    // Assess
    const said = cause.replace('allowNonEmptyTarget', '--allow-non-empty');
    expect(outcome.fields).toMatchObject({
      status: 'FAILED',
      rolledBack: true,
      reason: said,
      error: said,
    });
    expect(outcome.text).toBe(`restore ROLLED BACK: ${said}`);
  });

  it('says a failed restore did not roll back', () => {
    // Act
    const outcome = restoreOutcome({ ...failed('RestoreFailed', 'boom'), output: undefined });
    // Assess
    expect(outcome.fields).toMatchObject({ rolledBack: false, error: 'boom' });
    expect(outcome.fields).not.toHaveProperty('reason');
    expect(outcome.text).toBe('restore FAILED: boom');
  });

  it('carries no rollback fields when the restore succeeded', () => {
    // Act
    const outcome = restoreOutcome({
      status: 'SUCCEEDED',
      output: { status: 'succeeded' },
      totals: emptyTotals(),
    });
    // Assess
    expect(outcome.fields).not.toHaveProperty('rolledBack');
    expect(outcome.fields).toMatchObject({ restore: { status: 'succeeded' } });
  });
});
