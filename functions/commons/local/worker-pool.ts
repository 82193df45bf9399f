/**
 * The local runner's copy workers: a pool of loops, each working one message
 * at a time with the copy worker's own code (processShardRecords), from an
 * in-process queue or a real SQS queue. The in-process queue delivers each
 * message once, to this process, which works every message of the run.
 */
import { randomUUID } from 'node:crypto';
import {
  DeleteMessageCommand,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  SendMessageCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import { addTotals, emptyTotals, type Totals } from '../copy/model.ts';
import { messageOf } from '../errors.ts';
import type { ShardMessage } from '../vault/runs.ts';
import type { WorkflowDeps } from '../workflows/deps.ts';
import { processShardRecords } from '../workflows/sqs-worker.ts';
import { type MessageSender, sqsDelay } from '../workflows/worker.ts';

export type Transport =
  | { readonly kind: 'memory' }
  | { readonly kind: 'sqs'; readonly client: SQSClient; readonly queueUrl: string };

/** A message as a worker receives it; `firstDelivery` only from the memory queue. */
interface Delivered {
  readonly messageId: string;
  readonly body: string;
  readonly receipt?: string;
  readonly firstDelivery?: boolean;
}

/** Works the run's copy messages: the local stand-in for the copy queue and its workers. */
export class WorkerPool implements MessageSender {
  messages = 0;
  /** Messages sent and not yet worked to an end (sent by this pool; a retried one stays). */
  #outstanding = 0;
  readonly #deps: WorkflowDeps;
  readonly #transport: Transport;
  readonly #workers: number;
  readonly #budgetMs: number;
  readonly #visibilitySeconds: number;
  readonly #memoryQueue: ShardMessage[] = [];
  /** Memory-queue messages put back after a failure: the next delivery is not the first. */
  readonly #again = new WeakSet<ShardMessage>();
  /** Idle workers waiting for a message (each looks again after 200 ms anyway). */
  readonly #idle = new Set<() => void>();
  #running = true;
  readonly #loops: Array<Promise<void>> = [];

  /** Totals of every message worked on so far (copied, skipped, failed, bytes). */
  totals: Totals = emptyTotals();
  /** The running totals of the messages being worked on now. */
  readonly #inFlight = new Map<string, Totals>();

  #report(): void {
    let sum = this.totals;
    for (const running of this.#inFlight.values()) sum = addTotals(sum, running);
    this.#onProgress?.(sum);
  }
  readonly #onProgress: ((totals: Totals) => void) | undefined;

  constructor(
    deps: WorkflowDeps,
    transport: Transport,
    workers: number,
    timing: { budgetMs: number; visibilitySeconds: number },
    onProgress?: (totals: Totals) => void,
  ) {
    this.#onProgress = onProgress;
    this.#deps = deps;
    this.#transport = transport;
    this.#workers = workers;
    this.#budgetMs = timing.budgetMs;
    this.#visibilitySeconds = timing.visibilitySeconds;
    for (let i = 0; i < workers; i++) this.#loops.push(this.#loop());
  }

  async send(message: ShardMessage, options: { delayMs?: number } = {}): Promise<void> {
    this.#outstanding++;
    if (this.#transport.kind === 'sqs') {
      await this.#transport.client.send(
        new SendMessageCommand({
          QueueUrl: this.#transport.queueUrl,
          MessageBody: JSON.stringify(message),
          ...sqsDelay(options.delayMs),
        }),
      );
      return;
    }
    const enqueue = () => {
      this.#memoryQueue.push(message);
      const [first] = this.#idle;
      first?.();
    };
    if (options.delayMs === undefined) enqueue();
    else setTimeout(enqueue, options.delayMs);
  }

  async sendBatch(messages: readonly ShardMessage[]): Promise<void> {
    if (this.#transport.kind === 'memory') {
      for (const message of messages) await this.send(message);
      return;
    }
    this.#outstanding += messages.length;
    const answer = await this.#transport.client.send(
      new SendMessageBatchCommand({
        QueueUrl: this.#transport.queueUrl,
        Entries: messages.map((message, index) => ({
          Id: String(index),
          MessageBody: JSON.stringify(message),
        })),
      }),
    );
    const refused = answer.Failed ?? [];
    if (refused.length > 0)
      throw new Error(
        `the local SQS queue refused ${refused.length} copy messages (${refused[0]?.Code}: ${refused[0]?.Message})`,
      );
  }

  /**
   * Resolves once every message this pool sent has been worked to an end,
   * or after `maxMs`: when the local count of finished shards looks.
   */
  async whenIdle(maxMs: number): Promise<void> {
    const until = Date.now() + maxMs;
    while (this.#outstanding > 0 && Date.now() < until)
      await new Promise((resolve) => setTimeout(resolve, 10));
  }

  async #next(): Promise<Delivered[]> {
    if (this.#transport.kind === 'sqs') {
      const received = await this.#transport.client.send(
        new ReceiveMessageCommand({
          QueueUrl: this.#transport.queueUrl,
          MaxNumberOfMessages: 1,
          WaitTimeSeconds: 1,
          VisibilityTimeout: this.#visibilitySeconds,
        }),
      );
      return (received.Messages ?? []).map((m) => ({
        messageId: m.MessageId ?? '',
        body: m.Body ?? '',
        ...(m.ReceiptHandle === undefined ? {} : { receipt: m.ReceiptHandle }),
      }));
    }
    const message = this.#memoryQueue.shift();
    if (message !== undefined)
      return [
        {
          messageId: randomUUID(),
          body: JSON.stringify(message),
          firstDelivery: !this.#again.has(message),
        },
      ];
    await new Promise<void>((resolve) => {
      const timer = setTimeout(wake, 200);
      const idle = this.#idle;
      function wake() {
        clearTimeout(timer);
        idle.delete(wake);
        resolve();
      }
      idle.add(wake);
    });
    return [];
  }

  async #loop(): Promise<void> {
    while (this.#running) {
      let batch: Delivered[];
      try {
        batch = await this.#next();
      } catch (err) {
        this.#deps.log.warn('local worker could not receive', { error: messageOf(err) });
        await new Promise((resolve) => setTimeout(resolve, 200));
        continue;
      }
      if (batch.length === 0) continue;
      this.messages += batch.length;
      const slot = randomUUID();
      const result = await processShardRecords(batch, this.#deps, {
        sender: this,
        deadline: Date.now() + this.#budgetMs,
        ...(this.#transport.kind === 'memory'
          ? { local: { firstDelivery: batch.every((record) => record.firstDelivery === true) } }
          : {}),
        // Running totals after every page, so progress moves during a long shard.
        onProgress: (running) => {
          this.#inFlight.set(slot, running);
          this.#report();
        },
      });
      this.#inFlight.delete(slot);
      this.totals = addTotals(this.totals, result.totals);
      this.#report();
      const retry = new Set(result.batchItemFailures.map((f) => f.itemIdentifier));
      this.#outstanding = Math.max(0, this.#outstanding - (batch.length - retry.size));
      for (const record of batch) {
        if (
          this.#transport.kind === 'sqs' &&
          record.receipt !== undefined &&
          !retry.has(record.messageId)
        ) {
          await this.#transport.client.send(
            new DeleteMessageCommand({
              QueueUrl: this.#transport.queueUrl,
              ReceiptHandle: record.receipt,
            }),
          );
        } else if (this.#transport.kind === 'memory' && retry.has(record.messageId)) {
          const again = JSON.parse(record.body) as ShardMessage;
          this.#again.add(again);
          this.#memoryQueue.push(again);
        }
      }
    }
  }

  async stop(): Promise<void> {
    this.#running = false;
    // Every idle worker at once: one woken at a time held a run's end up to 200 ms.
    for (const wake of [...this.#idle]) wake();
    await Promise.all(this.#loops);
  }

  get size(): number {
    return this.#workers;
  }
}
