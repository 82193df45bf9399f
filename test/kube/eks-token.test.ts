/**
 * EKS tokens (functions/commons/cluster/eks-token.ts) checked the way the
 * cluster side checks them: aws-iam-authenticator's format rules, and the
 * SigV4 signature computed again here from the secret key with node:crypto
 * alone, as STS would before it answers. The apiserver is the sandbox's,
 * accepting only tokens this verifier accepts, reached by client-node.
 */
import { createHash, createHmac } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { CoreV1Api } from '@kubernetes/client-node';
import {
  EKS_TOKEN_PREFIX,
  EksTokenAuthenticator,
  eksToken,
} from '../../functions/commons/cluster/eks-token.ts';
import { loadKubeConfig } from '../../functions/commons/cluster/kube.ts';
import {
  type KubeApiServer,
  kubeconfigYaml,
  startKubeApiServer,
} from '../../sandbox/kube/index.ts';

const CREDENTIALS = {
  accessKeyId: 'ASIAREGVAULTEXAMPLE1',
  secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
  sessionToken: 'IQoJb3JpZ2luX2VjEHYaCXVzLWVhc3QtMSJHMEUCIQ+session/token==',
};
const CLUSTER = 'registry-prod';
const REGION = 'eu-west-1';
const SIGNED_AT = new Date('2026-12-03T14:00:00.000Z');

/** The query parameters aws-iam-authenticator lets through (lowercase). */
const ALLOWED = new Set([
  'action',
  'version',
  'x-amz-algorithm',
  'x-amz-credential',
  'x-amz-date',
  'x-amz-expires',
  'x-amz-security-token',
  'x-amz-signature',
  'x-amz-signedheaders',
]);

const rfc3986 = (text: string) =>
  encodeURIComponent(text).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
const hex = (data: string) => createHash('sha256').update(data).digest('hex');
const hmac = (key: string | Buffer, data: string) =>
  createHmac('sha256', key).update(data).digest();

/** Why the cluster would refuse `token` for `clusterName` at `now`, or undefined when it accepts it. */
function refusal(token: string, clusterName: string, now: Date): string | undefined {
  if (token.length > 4096) return 'too large';
  if (!token.startsWith(EKS_TOKEN_PREFIX)) return 'no k8s-aws-v1. prefix';
  const encoded = token.slice(EKS_TOKEN_PREFIX.length);
  if (!/^[A-Za-z0-9_-]+$/.test(encoded)) return 'not unpadded base64url';
  const url = new URL(Buffer.from(encoded, 'base64url').toString('utf8'));
  if (url.protocol !== 'https:') return 'not https';
  if (url.host !== `sts.${REGION}.amazonaws.com`) return `host ${url.host}`;
  if (url.pathname !== '/') return 'path';
  const params = new Map<string, string>();
  for (const [name, value] of url.searchParams) {
    if (!ALLOWED.has(name.toLowerCase())) return `parameter ${name}`;
    params.set(name, value);
  }
  if (params.get('Action') !== 'GetCallerIdentity') return 'action';
  const signedHeaders = params.get('X-Amz-SignedHeaders') ?? '';
  if (!signedHeaders.split(';').includes('x-k8s-aws-id')) return 'cluster id not signed';
  const expires = Number(params.get('X-Amz-Expires'));
  if (!(expires >= 0 && expires <= 900)) return 'expires';
  const date = params.get('X-Amz-Date') ?? '';
  const signedAt = Date.parse(
    date.replace(/^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/, '$1-$2-$3T$4:$5:$6Z'),
  );
  if (!(now.getTime() <= signedAt + 15 * 60_000)) return 'expired';
  // STS's side: the signature over the request as the cluster sends it (its own cluster id header).
  const [accessKeyId, day, region, service, terminator] = (
    params.get('X-Amz-Credential') ?? ''
  ).split('/');
  if (accessKeyId !== CREDENTIALS.accessKeyId || terminator !== 'aws4_request') return 'credential';
  const query = [...params]
    .filter(([name]) => name !== 'X-Amz-Signature')
    .map(([name, value]) => `${rfc3986(name)}=${rfc3986(value)}`)
    .sort()
    .join('&');
  const headers: Record<string, string> = { host: url.host, 'x-k8s-aws-id': clusterName };
  const canonicalHeaders = signedHeaders
    .split(';')
    .map((name) => `${name}:${headers[name] ?? ''}\n`)
    .join('');
  const canonicalRequest = ['GET', '/', query, canonicalHeaders, signedHeaders, hex('')].join('\n');
  const scope = `${day}/${region}/${service}/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', date, scope, hex(canonicalRequest)].join('\n');
  let key = hmac(`AWS4${CREDENTIALS.secretAccessKey}`, day ?? '');
  for (const part of [region ?? '', service ?? '', 'aws4_request']) key = hmac(key, part);
  const signature = createHmac('sha256', key).update(stringToSign).digest('hex');
  return signature === params.get('X-Amz-Signature') ? undefined : 'signature';
}

const identity = { clusterName: CLUSTER, region: REGION, credentials: CREDENTIALS };

describe('an EKS token', () => {
  it('is a presigned GetCallerIdentity URL, base64url behind k8s-aws-v1., its cluster name signed', async () => {
    // Act
    const { token, expiresAt } = await eksToken(identity, SIGNED_AT);
    const url = new URL(Buffer.from(token.slice(EKS_TOKEN_PREFIX.length), 'base64url').toString());

    // Assess
    expect(token.startsWith('k8s-aws-v1.')).toBe(true);
    expect(token).not.toMatch(/[=+/]/);
    expect(url.origin).toBe('https://sts.eu-west-1.amazonaws.com');
    expect(Object.fromEntries(url.searchParams)).toMatchObject({
      Action: 'GetCallerIdentity',
      Version: '2011-06-15',
      'X-Amz-Algorithm': 'AWS4-HMAC-SHA256',
      'X-Amz-Credential': 'ASIAREGVAULTEXAMPLE1/20261203/eu-west-1/sts/aws4_request',
      'X-Amz-Date': '20261203T140000Z',
      'X-Amz-Expires': '60',
      'X-Amz-SignedHeaders': 'host;x-k8s-aws-id',
      'X-Amz-Security-Token': CREDENTIALS.sessionToken,
    });
    expect(expiresAt.toISOString()).toBe('2026-12-03T14:15:00.000Z');
  });

  it('carries a signature STS would accept for its cluster and for no other', async () => {
    // Prepare
    const { token } = await eksToken(identity, SIGNED_AT);
    const now = new Date(SIGNED_AT.getTime() + 60_000);

    // Act / Assess
    expect(refusal(token, CLUSTER, now)).toBeUndefined();
    expect(refusal(token, 'registry-staging', now)).toBe('signature');
    expect(refusal(token, CLUSTER, new Date(SIGNED_AT.getTime() + 16 * 60_000))).toBe('expired');
  });

  it('is made again five minutes before it expires, not on every request', async () => {
    // Prepare
    let now = SIGNED_AT;
    const authenticator = new EksTokenAuthenticator(identity, 'regvault', () => now);
    const authorization = async () => {
      const opts: { headers?: Record<string, string | string[] | number | undefined> } = {};
      await authenticator.applyAuthentication({ name: 'regvault' } as never, opts);
      return String(opts.headers?.['Authorization']);
    };

    // Act
    const first = await authorization();
    now = new Date(SIGNED_AT.getTime() + 9 * 60_000);
    const nineMinutesOn = await authorization();
    now = new Date(SIGNED_AT.getTime() + 11 * 60_000);
    const elevenMinutesOn = await authorization();

    // Assess
    expect(first.startsWith('Bearer k8s-aws-v1.')).toBe(true);
    expect(nineMinutesOn).toBe(first);
    expect(elevenMinutesOn).not.toBe(first);
    expect(refusal(elevenMinutesOn.slice('Bearer '.length), CLUSTER, now)).toBeUndefined();
  });
});

describe('a kubeconfig used with EKS tokens', () => {
  let server: KubeApiServer;
  const seen: string[] = [];

  beforeAll(async () => {
    server = await startKubeApiServer({
      authenticate: (token) => {
        seen.push(token);
        return refusal(token, CLUSTER, new Date()) === undefined;
      },
    });
  });

  afterAll(async () => {
    await server?.stop();
  });

  it('reaches the API server with a fresh token in place of the long-lived one it names', async () => {
    // Prepare
    const yaml = kubeconfigYaml({
      server: server.url,
      ...(server.caCert === undefined ? {} : { certificateAuthority: server.caCert }),
      token: 'a-long-lived-service-account-token',
    });
    const kc = loadKubeConfig({ yaml, eks: identity });

    // Act
    const pods = await kc.makeApiClient(CoreV1Api).listNamespacedPod({ namespace: 'cpaas-system' });

    // Assess
    expect(pods.items).toEqual([]);
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.every((token) => token.startsWith('k8s-aws-v1.'))).toBe(true);
  });

  it('is refused by the API server when the token is signed for another cluster', async () => {
    // Prepare
    const yaml = kubeconfigYaml({
      server: server.url,
      ...(server.caCert === undefined ? {} : { certificateAuthority: server.caCert }),
    });
    const kc = loadKubeConfig({ yaml, eks: { ...identity, clusterName: 'registry-staging' } });

    // Act
    const call = kc.makeApiClient(CoreV1Api).listNamespacedPod({ namespace: 'cpaas-system' });

    // Assess
    await expect(call).rejects.toMatchObject({ code: 401 });
  });
});
