/**
 * The one retry policy of every S3 and SQS call: how many attempts, how long
 * to wait between them (exponential backoff with full jitter, a longer base
 * for throttling), and which failures are worth another attempt (throttling,
 * 5xx, connection resets, broken pipes, timeouts, a body cut short). The SDK
 * clients get it as their retry strategy (`sdkRetryConfig`); the calls the
 * SDK does not retry use the same policy through `withRetries`: reading a
 * response body after the SDK returned its headers (./get-object.ts), and
 * the lean requests of ./fast-copy.ts.
 *
 * Every retry is counted: in the process (`retriesSoFar`) and in the sink of
 * the caller it was made for (a shard run's tally), so a run's record says
 * how many retries it took. The sink is passed, not found in an
 * AsyncLocalStorage: one of those turns on promise hooks for the whole
 * process, which cost every await of a backup about 14 µs a copy.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import type { RetryErrorInfo, RetryStrategyV2, RetryToken } from '@smithy/types';

/** How often and how patiently a call is tried. */
export interface RetryPolicy {
  /** Attempts per call, the first included. */
  readonly maxAttempts: number;
  /** Ceiling of the first retry's wait (ms); it doubles with each retry. */
  readonly baseDelayMs: number;
  /** The same for throttling (503 SlowDown, 429): S3 asks to slow down, so wait longer. */
  readonly throttlingBaseDelayMs: number;
  /** No wait is longer than this (ms). */
  readonly maxDelayMs: number;
}

/**
 * The policy of every call. Six attempts: at 5% throttling plus 3% resets
 * (test/faults) a call fails for good with odds of about 0.08^6 = 3e-7, one
 * in a few hundred backups of 5,000 objects; a refused connection still gives
 * up within a second or two (expected wait 50 ms x 31 / 2).
 */
export const RETRY_POLICY: RetryPolicy = Object.freeze({
  maxAttempts: 6,
  baseDelayMs: 50,
  throttlingBaseDelayMs: 500,
  maxDelayMs: 20_000,
});

const THROTTLING_CODES = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'ThrottledException',
  'TooManyRequestsException',
  'RequestLimitExceeded',
  'RequestThrottled',
  'RequestThrottledException',
  'BandwidthLimitExceeded',
  'ProvisionedThroughputExceededException',
  'PriorRequestNotComplete',
]);

const TRANSIENT_CODES = new Set([
  'InternalError',
  'ServiceUnavailable',
  'RequestTimeout',
  'RequestTimeoutException',
  'TimeoutError',
  'RequestTimeTooSkewed',
  'NetworkError',
  'BodyCutShort',
]);

/** Node's codes of a connection that broke, timed out or could not be made. */
const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'ESOCKETTIMEDOUT',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'ERR_STREAM_PREMATURE_CLOSE',
  'UND_ERR_SOCKET',
]);

interface ErrorShape {
  readonly name?: unknown;
  readonly Code?: unknown;
  readonly code?: unknown;
  readonly message?: unknown;
  readonly cause?: unknown;
  readonly $retryable?: unknown;
  readonly $metadata?: { readonly httpStatusCode?: number; readonly clockSkewCorrected?: boolean };
}

const shapeOf = (err: unknown): ErrorShape | undefined =>
  typeof err === 'object' && err !== null ? (err as ErrorShape) : undefined;

const codeOf = (e: ErrorShape) =>
  typeof e.Code === 'string' ? e.Code : typeof e.name === 'string' ? e.name : '';

/** S3 or SQS asked the caller to slow down. */
export function isThrottling(err: unknown): boolean {
  const e = shapeOf(err);
  if (e === undefined) return false;
  return e.$metadata?.httpStatusCode === 429 || THROTTLING_CODES.has(codeOf(e));
}

/**
 * A failure another attempt may not meet: throttling, any 5xx, a reset,
 * refused or timed-out connection ("socket hang up" is an ECONNRESET), a
 * body cut short, or an error the service marked retryable. Never a 4xx
 * answer (a missing key, refused keys), and never an abort by the caller.
 */
export function isRetryable(err: unknown, depth = 0): boolean {
  const e = shapeOf(err);
  if (e === undefined) return false;
  if (e.name === 'AbortError') return false;
  if (isThrottling(e)) return true;
  const status = e.$metadata?.httpStatusCode;
  if (status !== undefined && status >= 500) return true;
  if (e.$retryable === true || (typeof e.$retryable === 'object' && e.$retryable !== null))
    return true;
  if (e.$metadata?.clockSkewCorrected === true) return true;
  if (TRANSIENT_CODES.has(codeOf(e))) return true;
  if (typeof e.code === 'string' && NETWORK_CODES.has(e.code)) return true;
  if (typeof e.message === 'string' && /socket hang up|aborted|premature close/i.test(e.message))
    return status === undefined || status < 400;
  return depth < 5 && e.cause !== undefined && isRetryable(e.cause, depth + 1);
}

/** How long to wait before retry number `retry` (1 for the first): full jitter under an exponential ceiling. */
export function backoffMs(retry: number, throttling: boolean, policy = RETRY_POLICY): number {
  const base = throttling ? policy.throttlingBaseDelayMs : policy.baseDelayMs;
  return Math.floor(Math.random() * Math.min(policy.maxDelayMs, base * 2 ** (retry - 1)));
}

/** Where a caller counts the retries made on its behalf (a shard run's tally). */
export type RetrySink = () => void;

let processRetries = 0;

/** Counts one retry: in the process, and in `sink`, if any. */
export function noteRetry(sink?: RetrySink): void {
  processRetries++;
  sink?.();
}

/** Retries made by this process so far (every client, every sink). */
export function retriesSoFar(): number {
  return processRetries;
}

/** Retries the SDK made for a call that answered, or failed, with `$metadata.attempts`. */
function sdkRetriesOf(answer: unknown): number {
  const attempts = (answer as { $metadata?: { attempts?: unknown } } | undefined)?.$metadata
    ?.attempts;
  return typeof attempts === 'number' && attempts > 1 ? attempts - 1 : 0;
}

/** Each `countingRetries` view: the client it calls, and the sink it reports to. */
const views = new WeakMap<object, { readonly client: S3Client; readonly sink: RetrySink }>();

/**
 * A view of `client` whose calls report the SDK's retries to `sink` (read
 * from each answer's `$metadata` once the call ends; the process count is
 * the retry strategy's). Everything else is the client's own. Without a
 * sink, `client` itself.
 */
export function countingRetries(client: S3Client, sink: RetrySink | undefined): S3Client {
  if (sink === undefined) return client;
  const report = (answer: unknown) => {
    for (let n = sdkRetriesOf(answer); n > 0; n--) sink();
  };
  const send = async (...args: Parameters<S3Client['send']>) => {
    try {
      const answer = await client.send(...args);
      report(answer);
      return answer;
    } catch (err) {
      report(err);
      throw err;
    }
  };
  const view = new Proxy(client, {
    get: (target, property) => (property === 'send' ? send : Reflect.get(target, property, target)),
  });
  views.set(view, { client, sink });
  return view;
}

/** The client a `countingRetries` view calls (for what is kept by client: its role, its lean path); else `client`. */
export function clientBehind(client: S3Client): S3Client {
  return views.get(client)?.client ?? client;
}

/** The sink a `countingRetries` view reports to: for the retries made around its calls. */
export function retrySinkOf(client: S3Client): RetrySink | undefined {
  return views.get(client)?.sink;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Runs `attempt` until it succeeds, fails with what `retryable` does not
 * accept, or has been tried `policy.maxAttempts` times; waits between
 * attempts as the policy says and counts each retry (in `sink` too). The last failure is
 * thrown as it is.
 */
export async function withRetries<T>(
  attempt: (n: number) => Promise<T>,
  retryable: (err: unknown) => boolean = isRetryable,
  policy = RETRY_POLICY,
  sink?: RetrySink,
): Promise<T> {
  for (let n = 1; ; n++) {
    try {
      return await attempt(n);
    } catch (err) {
      if (n >= policy.maxAttempts || !retryable(err)) throw err;
      noteRetry(sink);
      await sleep(backoffMs(n, isThrottling(err), policy));
    }
  }
}

const token = (retries: number, delay: number): RetryToken => ({
  getRetryCount: () => retries,
  getRetryDelay: () => delay,
});

/**
 * The policy as the SDK's retry strategy. Unlike the SDK's standard mode it
 * keeps no retry quota per client: a backup's client makes thousands of
 * calls at once, and a quota drained by a burst of throttling would fail
 * calls that one more wait would have saved; backoff is what slows it down.
 */
export function sdkRetryStrategy(policy = RETRY_POLICY): RetryStrategyV2 {
  return {
    async acquireInitialRetryToken() {
      return token(0, 0);
    },
    async refreshRetryTokenForRetry(previous: RetryToken, info: RetryErrorInfo) {
      const retries = previous.getRetryCount() + 1;
      const retryable =
        isRetryable(info.error) ||
        info.errorType === 'THROTTLING' ||
        info.errorType === 'TRANSIENT';
      if (retries >= policy.maxAttempts || !retryable) throw new Error('no retry');
      noteRetry();
      const throttling = info.errorType === 'THROTTLING' || isThrottling(info.error);
      let delay = backoffMs(retries, throttling, policy);
      const hint = info.retryAfterHint;
      if (hint instanceof Date)
        delay = Math.max(delay, Math.min(hint.getTime() - Date.now(), policy.maxDelayMs));
      return token(retries, delay);
    },
    recordSuccess() {},
  };
}

/** What an SDK client's configuration takes to retry by the policy (S3Client, SQSClient). */
export function sdkRetryConfig(policy = RETRY_POLICY): {
  maxAttempts: number;
  retryStrategy: RetryStrategyV2;
} {
  return { maxAttempts: policy.maxAttempts, retryStrategy: sdkRetryStrategy(policy) };
}
