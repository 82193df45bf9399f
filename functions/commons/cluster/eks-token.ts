/**
 * Short-lived cluster credentials on EKS, as aws-iam-authenticator (and
 * `aws eks get-token`) makes them: a presigned STS GetCallerIdentity URL
 * whose signature covers the cluster's name in the `x-k8s-aws-id` header,
 * base64url-encoded behind `k8s-aws-v1.`. The cluster calls that URL and maps
 * the identity STS answers (here a function's role) to Kubernetes groups
 * through its access entries, so no long-lived token is stored anywhere.
 * EKS accepts a token for 15 minutes from its signing time.
 */
import type { User } from '@kubernetes/client-node';
import { SignatureV4 } from '@smithy/signature-v4';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@smithy/types';
import { NodeSha256 } from '../sha256.ts';

export const EKS_TOKEN_PREFIX = 'k8s-aws-v1.';
/** The header whose signed value binds a token to one cluster. */
export const CLUSTER_ID_HEADER = 'x-k8s-aws-id';
/** EKS honours a token this long after its X-Amz-Date, whatever X-Amz-Expires says. */
export const EKS_TOKEN_LIFETIME_MS = 15 * 60_000;
/** Tokens are made again this long before EKS would refuse them (a request in flight, clock skew). */
const RENEW_MARGIN_MS = 5 * 60_000;

export interface EksIdentity {
  /** The EKS cluster's name, as `aws eks describe-cluster --name` takes it. */
  readonly clusterName: string;
  /** The region whose STS endpoint signs (the cluster's). */
  readonly region: string;
  /** Whose identity the token carries: the function's role on Lambda. */
  readonly credentials: AwsCredentialIdentityProvider | AwsCredentialIdentity;
}

/** A token and when EKS stops accepting it. */
export interface EksToken {
  readonly token: string;
  readonly expiresAt: Date;
}

/** A bearer token for the EKS cluster, signed now (or at `now`) with the identity's credentials. */
export async function eksToken(identity: EksIdentity, now: Date = new Date()): Promise<EksToken> {
  const hostname = `sts.${identity.region}.amazonaws.com`;
  const signer = new SignatureV4({
    credentials: identity.credentials,
    region: identity.region,
    service: 'sts',
    sha256: NodeSha256,
  });
  const presigned = await signer.presign(
    {
      method: 'GET',
      protocol: 'https:',
      hostname,
      path: '/',
      query: { Action: 'GetCallerIdentity', Version: '2011-06-15' },
      headers: { host: hostname, [CLUSTER_ID_HEADER]: identity.clusterName },
    },
    // Ignored by STS, which honours 15 minutes; older authenticators check 0-60.
    { expiresIn: 60, signingDate: now },
  );
  const query = Object.entries(presigned.query ?? {})
    .flatMap(([name, value]) =>
      (Array.isArray(value) ? value : [value]).map(
        (item) => `${encodeURIComponent(name)}=${encodeURIComponent(String(item))}`,
      ),
    )
    .join('&');
  const url = `https://${hostname}/?${query}`;
  return {
    token: `${EKS_TOKEN_PREFIX}${Buffer.from(url).toString('base64url')}`,
    expiresAt: new Date(now.getTime() + EKS_TOKEN_LIFETIME_MS),
  };
}

/**
 * Authenticates the kubeconfig's user `userName` with EKS tokens, made on
 * the first request and again five minutes before each expires, so a
 * container that lives for hours never sends an expired one. The shape of
 * client-node's `Authenticator`, which its package does not export.
 */
export class EksTokenAuthenticator {
  readonly #identity: EksIdentity;
  readonly #userName: string;
  readonly #clock: () => Date;
  #current: Promise<EksToken> | undefined;

  constructor(identity: EksIdentity, userName: string, clock: () => Date = () => new Date()) {
    this.#identity = identity;
    this.#userName = userName;
    this.#clock = clock;
  }

  isAuthProvider(user: User): boolean {
    return user.name === this.#userName;
  }

  async applyAuthentication(
    _user: User,
    opts: { headers?: Record<string, string | string[] | number | undefined> },
  ): Promise<void> {
    const now = this.#clock();
    let current =
      this.#current === undefined ? undefined : await this.#current.catch(() => undefined);
    if (current === undefined || current.expiresAt.getTime() - now.getTime() < RENEW_MARGIN_MS) {
      this.#current = eksToken(this.#identity, now);
      current = await this.#current;
    }
    opts.headers = { ...opts.headers, Authorization: `Bearer ${current.token}` };
  }
}
