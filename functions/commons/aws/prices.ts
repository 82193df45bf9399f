/**
 * AWS list prices the estimates use: us-east-1, on-demand, without free
 * tiers, as published on the services' pricing pages (S3 Standard requests,
 * Lambda arm64, Step Functions Standard workflows, SQS standard queues). This
 * machine cannot reach AWS; the figures were copied by hand on the date
 * below. Update them here, and only here.
 */
export const PRICES = {
  asOf: '2026-12-03',
  region: 'us-east-1',
  s3: {
    /** PUT, COPY, POST and LIST requests (UploadPart and UploadPartCopy are PUTs), per 1,000. */
    writeOrListPer1000: 0.005,
    /** GET, HEAD and other requests, per 1,000. */
    readPer1000: 0.0004,
  },
  lambda: {
    /** Duration, arm64, per GB-second (first pricing tier). */
    armPerGbSecond: 0.0000133334,
    perMillionRequests: 0.2,
  },
  stepFunctions: {
    /** Standard workflows, per 1,000 state transitions. */
    perThousandTransitions: 0.025,
  },
  sqs: {
    /** Standard queues, per million requests (a batch of up to ten is one request). */
    perMillionRequests: 0.4,
  },
} as const;
