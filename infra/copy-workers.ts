/**
 * The copy queue the workflows send shards to, its dead-letter queue, and how
 * the copy workers and the dead-letter function drain them and answer the
 * workflow tasks waiting on each message.
 */
import { Duration, type Stack } from 'aws-cdk-lib';
import { Policy, PolicyStatement } from 'aws-cdk-lib/aws-iam';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import { Queue, QueueEncryption } from 'aws-cdk-lib/aws-sqs';
import type { StateMachine } from 'aws-cdk-lib/aws-stepfunctions';
import { FUNCTIONS } from './function-specs.ts';
import type { HouseFunction } from './house-function.ts';

/** The functions that drain the queues, and the state machines whose tasks they answer. */
export interface CopyWorkersConnection {
  readonly worker: HouseFunction;
  readonly deadLetter: HouseFunction;
  readonly stateMachines: readonly StateMachine[];
  /** At most this many workers at once (`copyWorkers`). */
  readonly maxWorkers: number;
}

/**
 * The copy queues, made in the stack's own scope so their logical ids stay the
 * deployed ones. The queues come first (every function is given the queue's
 * URL); `connect` adds their consumers once the functions and workflows exist.
 */
export class CopyWorkers {
  readonly queue: Queue;
  readonly deadLetterQueue: Queue;
  readonly #stack: Stack;

  constructor(stack: Stack) {
    this.#stack = stack;
    // SQS-managed encryption: the messages carry run and shard ids and a task
    // token, no data or keys, and a CMK would add a KMS call to every copy
    // message and a key policy the queue's users must be let into.
    this.deadLetterQueue = new Queue(stack, 'CopyDeadLetterQueue', {
      encryption: QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
      // Six times the dead-letter function's timeout, as for the copy queue.
      visibilityTimeout: Duration.seconds(FUNCTIONS['dead-letter'].timeout.toSeconds() * 6),
    });
    this.queue = new Queue(stack, 'CopyQueue', {
      encryption: QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      // A message must not come back while a worker still runs it (AWS: six times the function timeout).
      visibilityTimeout: Duration.seconds(FUNCTIONS['copy-worker'].timeout.toSeconds() * 6),
      retentionPeriod: Duration.days(4),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: 5 },
    });
  }

  /** Feeds the copy messages to the workers and the dead letters to their function, both of which answer the waiting tasks. */
  connect({ worker, deadLetter, stateMachines, maxWorkers }: CopyWorkersConnection): void {
    worker.function.addEventSource(
      new SqsEventSource(this.queue, {
        batchSize: 1,
        maxConcurrency: maxWorkers,
        reportBatchItemFailures: true,
      }),
    );
    // Continuations: a worker hands the rest of its shard on as a new message.
    this.queue.grantSendMessages(worker.function);
    deadLetter.function.addEventSource(new SqsEventSource(this.deadLetterQueue, { batchSize: 10 }));
    // A separate policy, not the roles' default one: the state machines already
    // depend on the functions, and the functions on their default policies.
    new Policy(this.#stack, 'CopyTaskCallbacks', {
      roles: [worker.role, deadLetter.role],
      statements: [
        new PolicyStatement({
          actions: ['states:SendTaskSuccess', 'states:SendTaskFailure', 'states:SendTaskHeartbeat'],
          resources: stateMachines.map((machine) => machine.stateMachineArn),
        }),
      ],
    });
  }
}
