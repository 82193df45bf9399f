/**
 * How long a copy worker works on one message, and every time that follows
 * from it, on AWS and on one machine alike. The one setting is the copy
 * worker's timeout (the stack's `copyWorkerTimeoutSeconds`; the local
 * runner's option of the same name); the rest is derived here, and only here:
 *
 * - the message's work budget: the timeout less a margin kept back to write
 *   the message's records and send its continuation, so a worker hands on
 *   before Lambda stops it;
 * - the copy queue's visibility timeout: six times the timeout (AWS's advice
 *   for an SQS event source: a message must not come back while a worker may
 *   still run it, counting the event source's own retries).
 *
 * Plain data and arithmetic: the stack (infra/) reads it too, so the queue,
 * the function and the workers cannot disagree.
 */

/** The copy worker's timeout when nothing else is set: Lambda's longest, 15 minutes. */
export const COPY_WORKER_TIMEOUT_SECONDS = 900;

/** The range the setting accepts: a worker must have time to list a page and copy it. */
export const COPY_WORKER_TIMEOUT_RANGE = { min: 60, max: 900 } as const;

/** What the copy worker's timeout makes of the copy's other times. */
export interface CopyTiming {
  /** The copy worker Lambda's timeout (s). */
  readonly timeoutSeconds: number;
  /** Kept back from the timeout to write records and send the continuation (ms). */
  readonly handOffMarginMs: number;
  /** How long one message is worked before the rest is handed on (ms). */
  readonly messageBudgetMs: number;
  /** The copy queue's visibility timeout (s): six worker timeouts. */
  readonly visibilityTimeoutSeconds: number;
}

/** The copy's times for a copy worker timeout of `timeoutSeconds`. */
export function copyTiming(timeoutSeconds: number = COPY_WORKER_TIMEOUT_SECONDS): CopyTiming {
  // A tenth of the time, at most 90 s (what 15 minutes kept back before this was one setting).
  const handOffMarginMs = Math.min(90_000, Math.round(timeoutSeconds * 100));
  return {
    timeoutSeconds,
    handOffMarginMs,
    messageBudgetMs: timeoutSeconds * 1000 - handOffMarginMs,
    visibilityTimeoutSeconds: 6 * timeoutSeconds,
  };
}
