/**
 * The copy queue the workflows' enqueue step sends shards to, its dead-letter
 * queue, and how the copy workers and the dead-letter function drain them.
 * How many shards copy at once is decided here, by the event source's
 * maximum concurrency (`copyWorkers`), not by the state machines.
 */
import { Duration, type Stack } from 'aws-cdk-lib';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import { Queue, QueueEncryption } from 'aws-cdk-lib/aws-sqs';
import { copyTiming } from '../functions/commons/workflows/copy-timing.ts';
import { FUNCTIONS } from './function-specs.ts';
import type { HouseFunction } from './house-function.ts';

/** The function that fills the queue, and the ones that drain it and its dead letters. */
export interface CopyWorkersConnection {
  readonly enqueue: HouseFunction;
  readonly worker: HouseFunction;
  readonly deadLetter: HouseFunction;
  /** At most this many workers at once (`copyWorkers`, 2-1000: the event source's range). */
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

  /** `workerTimeoutSeconds`: the copy worker's timeout, the stack's `copyWorkerTimeoutSeconds`. */
  constructor(stack: Stack, workerTimeoutSeconds: number) {
    // SQS-managed encryption: the messages carry run and shard ids and a
    // cursor, no data or keys, and a CMK would add a KMS call to every copy
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
      // A message must not come back while a worker still runs it (six worker timeouts).
      visibilityTimeout: Duration.seconds(
        copyTiming(workerTimeoutSeconds).visibilityTimeoutSeconds,
      ),
      retentionPeriod: Duration.days(4),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: 5 },
    });
  }

  /** Lets the enqueue step send, and feeds the copy messages to the workers and the dead letters to their function. */
  connect({ enqueue, worker, deadLetter, maxWorkers }: CopyWorkersConnection): void {
    this.queue.grantSendMessages(enqueue.function);
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
  }
}
