/**
 * S3 and network failures in words a person can act on. An SDK error says
 * `The specified bucket does not exist.` or `connect ECONNREFUSED 127.0.0.1:9`
 * and nothing else; what the person needs is which bucket, at which
 * endpoint, signed with whose keys, and what to change. A client made with a
 * role (createS3Client's `role`) has every failed call explained here, once,
 * after the SDK's own retries.
 *
 * What the person got wrong (a bucket that does not exist, keys S3 does not
 * know, a wrong region, no keys at all) becomes an InputError, so the CLI
 * exits 2 and a workflow ends in InputError; it keeps the S3 error's `Code`
 * and `$metadata`, so code that judges S3 errors by code judges it the same.
 * Any other failure keeps its class and name, and only its message changes;
 * so do all failures of the copy's own calls around the SDK.
 */
import { InputError, messageOf } from '../errors.ts';

/** What a client's location is to regvault, and whose keys sign its requests. */
export interface S3Role {
  /** What the bucket is, for a client that serves one bucket: `the vault`. */
  readonly what?: string;
  /** Where the bucket, endpoint and region are set, for the fix: `--vault-bucket (from REGVAULT_VAULT_BUCKET)`. */
  readonly settings?: {
    readonly bucket: string;
    readonly endpoint: string;
    readonly region: string;
  };
  /** Whose keys sign the requests: `the vault's keys (AWS_ACCESS_KEY_ID)`, `the keys in Secret ns/name`. */
  readonly keys: string;
  /** How to give keys S3 accepts. */
  readonly fixKeys: string;
}

/** The call that failed, as the client saw it. */
export interface S3Call {
  /** `ListObjectsV2`, `HeadBucket`, ... */
  readonly operation: string;
  readonly bucket?: string | undefined;
  readonly key?: string | undefined;
  /** The endpoint URL; undefined for AWS S3. */
  readonly endpoint?: string | undefined;
  readonly region: string;
}

/** The S3 permission each operation needs, for an AccessDenied fix. */
const PERMISSION: Readonly<Record<string, string>> = {
  ListObjectsV2: 's3:ListBucket',
  ListObjects: 's3:ListBucket',
  HeadBucket: 's3:ListBucket',
  GetObject: 's3:GetObject',
  HeadObject: 's3:GetObject',
  PutObject: 's3:PutObject',
  CopyObject: 's3:PutObject (and s3:GetObject on the source)',
  UploadPart: 's3:PutObject',
  UploadPartCopy: 's3:PutObject (and s3:GetObject on the source)',
  CreateMultipartUpload: 's3:PutObject',
  CompleteMultipartUpload: 's3:PutObject',
  AbortMultipartUpload: 's3:AbortMultipartUpload',
  ListMultipartUploads: 's3:ListBucketMultipartUploads',
  DeleteObject: 's3:DeleteObject',
  DeleteObjects: 's3:DeleteObject',
};

/** Network failures by their Node.js code: what happened, and what to check. */
const NETWORK: Readonly<Record<string, { readonly what: string; readonly check: string }>> = {
  ECONNREFUSED: {
    what: 'nothing answers there (connection refused)',
    check: 'the S3 server there is running',
  },
  ENOTFOUND: {
    what: 'its host name is not known (DNS lookup failed)',
    check: 'the host name is spelled right',
  },
  EAI_AGAIN: {
    what: 'its host name could not be looked up (DNS did not answer)',
    check: 'DNS works from this machine',
  },
  ETIMEDOUT: {
    what: 'the connection timed out',
    check: 'a firewall or proxy lets this machine reach it',
  },
  ECONNRESET: {
    what: 'the connection was reset, on every attempt',
    check: 'the scheme (http or https) and port are the server’s',
  },
  EPIPE: {
    what: 'the connection was closed while sending',
    check: 'the scheme (http or https) and port are the server’s',
  },
  EPROTO: {
    what: 'the TLS handshake failed',
    check: 'the scheme is right (an http port answered https, or the reverse)',
  },
  ERR_SSL_WRONG_VERSION_NUMBER: {
    what: 'the TLS handshake failed',
    check: 'the scheme is right (an http port answered https, or the reverse)',
  },
  DEPTH_ZERO_SELF_SIGNED_CERT: {
    what: 'its TLS certificate is self-signed',
    check: 'NODE_EXTRA_CA_CERTS names a file with the CA that signed it',
  },
  SELF_SIGNED_CERT_IN_CHAIN: {
    what: 'its TLS certificate chain ends in an unknown CA',
    check: 'NODE_EXTRA_CA_CERTS names a file with that CA',
  },
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: {
    what: 'its TLS certificate cannot be verified',
    check: 'NODE_EXTRA_CA_CERTS names a file with the CA that signed it',
  },
  CERT_HAS_EXPIRED: {
    what: 'its TLS certificate has expired',
    check: 'the server has a current certificate',
  },
  ERR_TLS_CERT_ALTNAME_INVALID: {
    what: 'its TLS certificate is for another host name',
    check: 'the endpoint uses the host name the certificate names',
  },
};

/** Codes that mean the bucket is in another region than the one asked. */
const WRONG_REGION = new Set([
  'PermanentRedirect',
  'AuthorizationHeaderMalformed',
  'IllegalLocationConstraintException',
  'IncorrectEndpoint',
]);

/** Marks an error this module has explained, so a second pass leaves it alone. */
const EXPLAINED = Symbol.for('regvault.s3.explained');

const field = (value: unknown, name: string | symbol): unknown =>
  typeof value === 'object' && value !== null ? Reflect.get(value, name) : undefined;

/** The S3 error code (`Code`, else the SDK's `name`), the HTTP status and the network code of a thrown value. */
function codesOf(err: unknown): { code: string; status: number | undefined; network: string } {
  const code = field(err, 'Code') ?? field(err, 'name');
  const status = field(field(err, '$metadata'), 'httpStatusCode');
  // The SDK's network errors carry Node's code, sometimes only on their cause, and
  // only in their text when the SDK wrapped an error of another realm (a VM context).
  const network =
    field(err, 'code') ??
    field(field(err, 'cause'), 'code') ??
    Object.keys(NETWORK).find((known) => messageOf(err).includes(known));
  return {
    code: typeof code === 'string' ? code : 'Error',
    status: typeof status === 'number' ? status : undefined,
    network: typeof network === 'string' ? network : '',
  };
}

/** `http://127.0.0.1:9000 (region us-east-1)`, or `AWS S3 in us-east-1`. */
export function endpointText(call: Pick<S3Call, 'endpoint' | 'region'>): string {
  return call.endpoint === undefined
    ? `AWS S3 in ${call.region}`
    : `${call.endpoint} (region ${call.region})`;
}

/** What a failed S3 call means: the sentence, the fix, and whether the input was wrong. */
export interface S3Failure {
  readonly message: string;
  /** `subject: what to change`, for failures of the input. */
  readonly fix?: string;
  /** The user's input was wrong (a bucket that does not exist, keys S3 does not know). */
  readonly badInput: boolean;
}

/**
 * What a failed S3 call means to whoever runs regvault: which bucket, where,
 * whose keys, what went wrong and what to change. Undefined for a failure it
 * has no words for (an object-level error such as NoSuchKey).
 */
export function describeS3Failure(err: unknown, call: S3Call, role: S3Role): S3Failure | undefined {
  const { code, status, network } = codesOf(err);
  const where = endpointText(call);
  const bucket = call.bucket === undefined ? 'the bucket' : `s3://${call.bucket}`;
  const named = `${role.what === undefined ? 'the bucket' : `${role.what} bucket`} ${bucket}`;
  const subject = call.bucket === undefined ? (role.what ?? 'the bucket') : bucket;
  const settings = role.settings ?? {
    bucket: 'the bucket name',
    endpoint: 'the endpoint',
    region: 'the region',
  };
  const done = `${call.operation}${call.key === undefined ? '' : ` of ${call.key}`}`;
  const input = (message: string, fix: string): S3Failure => ({ message, fix, badInput: true });
  const keysFix = `${role.keys}: ${role.fixKeys}`;

  if (code === 'NoSuchBucket' || (call.operation === 'HeadBucket' && status === 404))
    return input(
      `${named} does not exist at ${where}`,
      `${subject}: create the bucket, or fix ${settings.bucket} (or ${settings.endpoint} and ${settings.region}, where it is looked for)`,
    );
  if (code === 'InvalidBucketName')
    return input(
      `${named} is not a name S3 at ${where} accepts`,
      `${subject}: fix ${settings.bucket}`,
    );
  if (WRONG_REGION.has(code) || status === 301)
    return input(
      `${named} is not in region ${call.region} (${code}: ${messageOf(err)})`,
      `${subject}: give the bucket's own region in ${settings.region}`,
    );
  if (code === 'InvalidAccessKeyId')
    return input(
      `S3 at ${where} does not know the access key ID of ${role.keys} (InvalidAccessKeyId, on ${done} in ${bucket})`,
      keysFix,
    );
  if (code === 'SignatureDoesNotMatch')
    return input(
      `S3 at ${where} refused the signature of ${role.keys}: the secret access key does not belong to the access key ID (SignatureDoesNotMatch, on ${done} in ${bucket})`,
      keysFix,
    );
  if (code === 'CredentialsProviderError')
    return input(
      `regvault has no keys to ${done} in ${bucket} at ${where}: ${role.keys} are not set`,
      keysFix,
    );
  if (code === 'AccessDenied' || code === 'AllAccessDisabled' || status === 403)
    return {
      message: `${role.keys} may not ${done} in ${bucket} at ${where} (${code}): grant ${PERMISSION[call.operation] ?? `the permission ${call.operation} needs`} on the bucket to whoever owns these keys, or ${role.fixKeys}`,
      badInput: false,
    };
  const net = NETWORK[network];
  if (net !== undefined)
    return {
      message: `cannot reach ${role.what ?? 'S3'} at ${where} for ${bucket}: ${net.what} (${network}); check ${settings.endpoint}, and that ${net.check}`,
      badInput: false,
    };
  if (code === 'TimeoutError' || code === 'RequestTimeout')
    return {
      message: `${done} in ${bucket} at ${where} timed out after every retry (${code}); check the network path to it, and run again`,
      badInput: false,
    };
  if (status !== undefined && status >= 500)
    return {
      message: `S3 at ${where} failed ${done} in ${bucket} after every retry (${code}, HTTP ${status}: ${messageOf(err)}); run again later, and check the server's health if it persists`,
      badInput: false,
    };
  return undefined;
}

/** What a failure says in words, unless it has no words or was put in words before. */
function unexplained(err: unknown, call: S3Call, role: S3Role): S3Failure | undefined {
  return field(err, EXPLAINED) === true ? undefined : describeS3Failure(err, call, role);
}

/** The same error with its message in words; its class, name and code stay. */
function reworded(err: unknown, message: string): unknown {
  if (!(err instanceof Error)) return new Error(message, { cause: err });
  err.message = message;
  Reflect.set(err, EXPLAINED, true);
  return err;
}

/**
 * The error to throw for a failed S3 call (./client.ts calls it for every
 * call through the SDK): bad input becomes an InputError that keeps the S3
 * error's `Code` and `$metadata`; any other failure it has words for keeps
 * its class and gets the words as its message. Errors it has no words for
 * come back unchanged, and so does one it explained before.
 */
export function explainS3Error(err: unknown, call: S3Call, role: S3Role): unknown {
  const failure = unexplained(err, call, role);
  if (failure === undefined) return err;
  if (!failure.badInput || failure.fix === undefined) return reworded(err, failure.message);
  const error = new InputError(failure.message, [failure.fix], { cause: err });
  Object.assign(error, { Code: codesOf(err).code, $metadata: field(err, '$metadata') ?? {} });
  Reflect.set(error, EXPLAINED, true);
  return error;
}

/**
 * The same failure explained in words without changing what it is (class,
 * name, code, retryability): for calls made around the SDK in the copy's hot
 * path (./fast-copy.ts), whose callers judge failures by code.
 */
export function rewordS3Error(err: unknown, call: S3Call, role: S3Role): unknown {
  const failure = unexplained(err, call, role);
  if (failure === undefined) return err;
  return reworded(
    err,
    failure.fix === undefined ? failure.message : `${failure.message}; ${failure.fix}`,
  );
}
