/**
 * A minimal Docker token server (the bearer flow of the distribution spec) so
 * the registry client is tested against a real `docker-registry` in token
 * mode. It checks a basic-auth user, then signs an ES256 JWT whose `x5c`
 * header carries a self-signed certificate the registry trusts.
 *
 * Certificates come from the `openssl` CLI because node:crypto makes keys but
 * not X.509 certificates.
 */
import { execFile } from 'node:child_process';
import { createPrivateKey, randomUUID, sign, X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { LOOPBACK } from '../process.ts';

const run = promisify(execFile);

export interface TokenServer {
  readonly realm: string;
  readonly service: string;
  readonly issuer: string;
  /** PEM for the registry's `auth.token.rootcertbundle`. */
  readonly rootCertificate: string;
  /** Tokens issued so far. */
  issued(): number;
  stop(): Promise<void>;
}

const base64url = (data: Buffer | string): string => Buffer.from(data).toString('base64url');

/** Starts a token server on 127.0.0.1 that grants every requested action to `username`. */
export async function startTokenServer(options: {
  username: string;
  password: string;
}): Promise<TokenServer> {
  const dir = await mkdtemp(join(tmpdir(), 'regvault-token-'));
  try {
    await run('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-subj',
      '/CN=regvault-sandbox-token',
      '-days',
      '2',
      '-keyout',
      join(dir, 'key.pem'),
      '-out',
      join(dir, 'cert.pem'),
    ]);
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(
      `openssl could not make the token signing certificate: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  const rootCertificate = await readFile(join(dir, 'cert.pem'), 'utf8');
  const key = createPrivateKey(await readFile(join(dir, 'key.pem'), 'utf8'));
  await rm(dir, { recursive: true, force: true });
  const certificateDer = new X509Certificate(rootCertificate).raw.toString('base64');
  const service = 'regvault-sandbox-registry';
  const issuer = 'regvault-sandbox-token-server';
  let issued = 0;
  const expectedBasic = `Basic ${Buffer.from(`${options.username}:${options.password}`).toString('base64')}`;

  const server: Server = createServer((request, response) => {
    const url = new URL(request.url ?? '/', `http://${LOOPBACK}`);
    if (url.pathname !== '/token') {
      response.writeHead(404).end();
      return;
    }
    if (request.headers.authorization !== expectedBasic) {
      response
        .writeHead(401, { 'content-type': 'application/json' })
        .end(JSON.stringify({ details: 'wrong username or password' }));
      return;
    }
    const access = url.searchParams.getAll('scope').flatMap((scope) => {
      const [type, ...rest] = scope.split(':');
      const actions = rest.pop() ?? '';
      return type === undefined
        ? []
        : [{ type, name: rest.join(':'), actions: actions.split(',').filter(Boolean) }];
    });
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: 'JWT', alg: 'ES256', x5c: [certificateDer] };
    const claims = {
      iss: issuer,
      sub: options.username,
      aud: service,
      exp: now + 300,
      nbf: now - 10,
      iat: now,
      jti: randomUUID(),
      access,
    };
    const signingInput = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
    const signature = sign('sha256', Buffer.from(signingInput), { key, dsaEncoding: 'ieee-p1363' });
    issued += 1;
    const token = `${signingInput}.${base64url(signature)}`;
    response.writeHead(200, { 'content-type': 'application/json' }).end(
      JSON.stringify({
        token,
        access_token: token,
        expires_in: 300,
        issued_at: new Date().toISOString(),
      }),
    );
  });
  server.listen(0, LOOPBACK);
  await once(server, 'listening');
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return {
    realm: `http://${LOOPBACK}:${port}/token`,
    service,
    issuer,
    rootCertificate,
    issued: () => issued,
    async stop() {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}
