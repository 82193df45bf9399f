import { describe, expect, it } from '@jest/globals';
import {
  ExitCode,
  RESTORE_ROLLED_BACK,
  restoreOutcome,
  type WorkflowResult,
  workflowExitCode,
} from '../../bin/outcome.ts';
import { emptyTotals } from '../../functions/commons/copy/model.ts';

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
      case: 'a step that refused its input',
      result: failed('RestoreFailed', 'InputError: the restore input is not valid'),
      code: ExitCode.BadInput,
    },
    {
      case: 'a copy that lost objects',
      result: failed('RestoreFailed', 'the copy failed', 2),
      code: ExitCode.Partial,
    },
  ])('is $code for $case', ({ result, code }) => {
    // Act
    const exit = workflowExitCode(result);
    // Assess
    expect(exit).toBe(code);
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
