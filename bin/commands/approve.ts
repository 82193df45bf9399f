/**
 * `regvault approve` and `regvault reject`: the answer to a restore that waits
 * for approval before it switches the registry (the stack's `restoreApproval`;
 * the notice on the alarm topic carries the task token). They call Step
 * Functions' SendTaskSuccess or SendTaskFailure with the caller's own AWS
 * credentials, which the stack's `RestoreApproverPolicyArn` allows.
 */
import {
  InvalidToken,
  SendTaskFailureCommand,
  SendTaskSuccessCommand,
  SFNClient,
  TaskDoesNotExist,
  TaskTimedOut,
} from '@aws-sdk/client-sfn';
import type { Command } from 'commander';
import { InputError } from '../../functions/commons/errors.ts';
import { type Flags, run } from '../context.ts';

/** The error a rejected restore's approval state receives (its Catch sends it down the failure path). */
export const REJECTED = 'RestoreRejected';

/** Adds `approve`: the restore goes on to its switch. */
export function approveCommand(program: Command): void {
  answerCommand(program, 'approve', 'let a restore waiting for approval switch the registry')
    .option('--note <text>', 'a note kept in the execution (who, why)')
    .action(async (flags: Flags) => {
      const note = typeof flags['note'] === 'string' ? { note: flags['note'] } : {};
      const output = JSON.stringify({ approved: true, at: new Date().toISOString(), ...note });
      await answer(flags, (taskToken) => new SendTaskSuccessCommand({ taskToken, output }));
      print(flags, { approved: true }, 'approved: the restore goes on to switch the registry');
    });
}

/** Adds `reject`: the restore ends unswitched. */
export function rejectCommand(program: Command): void {
  answerCommand(program, 'reject', 'end a restore waiting for approval without switching')
    .option('--reason <text>', 'why, kept as the failure cause', 'rejected by the approver')
    .action(async (flags: Flags) => {
      const cause = String(flags['reason']);
      await answer(
        flags,
        (taskToken) => new SendTaskFailureCommand({ taskToken, error: REJECTED, cause }),
      );
      print(
        flags,
        { approved: false },
        'rejected: the restore ends as RestoreNotApproved, the registry unchanged',
      );
    });
}

function answerCommand(program: Command, name: string, description: string): Command {
  return program
    .command(name)
    .description(description)
    .requiredOption('--task-token <token>', 'the taskToken of the approval notice')
    .option('--region <region>', 'the stack region (default: AWS_REGION, the AWS profile)')
    .option('--endpoint <url>', 'a Step Functions endpoint other than AWS (a VPC endpoint)')
    .option('--json', 'print one JSON result line');
}

type Answer = SendTaskSuccessCommand | SendTaskFailureCommand;

/** Sends the answer; a token that no longer waits is said plainly, with why it may be. */
async function answer(flags: Flags, command: (taskToken: string) => Answer): Promise<void> {
  const taskToken = String(flags['taskToken']).trim();
  if (taskToken === '')
    throw new InputError('no task token', [
      '--task-token: the taskToken field of the approval notice',
    ]);
  const client = new SFNClient({
    ...(typeof flags['region'] === 'string' ? { region: flags['region'] } : {}),
    ...(typeof flags['endpoint'] === 'string' ? { endpoint: flags['endpoint'] } : {}),
  });
  try {
    const sent = command(taskToken);
    // One call per command type: the client's overloads take each, not their union.
    await (sent instanceof SendTaskSuccessCommand ? client.send(sent) : client.send(sent));
  } catch (err) {
    if (err instanceof InvalidToken)
      throw new InputError('Step Functions does not accept this task token', [
        `--task-token: copy the whole taskToken of the approval notice (${err.message})`,
      ]);
    if (err instanceof TaskTimedOut || err instanceof TaskDoesNotExist)
      throw new Error(
        `this restore no longer waits for an answer: it was answered already, its approval timed out, or the execution ended (${err.name}); see the execution's history`,
        { cause: err },
      );
    throw err;
  } finally {
    client.destroy();
  }
}

function print(flags: Flags, value: Record<string, unknown>, text: string): void {
  run.resultWritten = true;
  process.stdout.write(
    flags['json'] === true
      ? `${JSON.stringify({ event: 'result', ok: true, ...value, exitCode: 0 })}\n`
      : `${text}\n`,
  );
}
