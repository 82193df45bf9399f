/**
 * `regvault approve` and `regvault reject` answer a restore's task token with
 * Step Functions' SendTaskSuccess and SendTaskFailure. No Step Functions
 * service runs here, so the CLI (the real SDK client, in a child process)
 * talks to a listener that speaks the service's JSON protocol for those two
 * calls and records what it was sent; a token that no longer waits gets the
 * service's TaskTimedOut.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { jsonLines, runRegvault } from '../support/cli.ts';

interface Call {
  readonly target: string;
  readonly body: Record<string, unknown>;
}

const calls: Call[] = [];
let server: Server;
let endpoint = '';

beforeAll(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
      calls.push({ target: String(req.headers['x-amz-target']), body });
      res.setHeader('content-type', 'application/x-amz-json-1.0');
      if (body['taskToken'] === 'expired-token') {
        res.statusCode = 400;
        res.end(
          JSON.stringify({
            __type: 'com.amazonaws.swf.service.v2.model#TaskTimedOut',
            message: 'Task Timed Out',
          }),
        );
        return;
      }
      res.end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

const env = (): NodeJS.ProcessEnv => ({
  PATH: process.env['PATH'],
  HOME: process.env['HOME'],
  AWS_ACCESS_KEY_ID: 'approver-key',
  AWS_SECRET_ACCESS_KEY: 'approver-secret',
});

/** Runs the CLI against the listener, as an approver in eu-west-1. */
const regvault = (args: readonly string[]) =>
  runRegvault([...args, '--region', 'eu-west-1', '--endpoint', endpoint], env());

const callFor = (token: string) => calls.find((call) => call.body['taskToken'] === token);

describe('regvault approve and reject', () => {
  it('approves with SendTaskSuccess, the note in the output', async () => {
    // Act
    const run = await regvault([
      'approve',
      '--task-token',
      'token-a',
      '--note',
      'checked by ops',
      '--json',
    ]);

    // Assess
    expect(run.code).toBe(0);
    expect(jsonLines(run.stdout).at(-1)).toEqual(
      expect.objectContaining({ ok: true, approved: true }),
    );
    const call = callFor('token-a');
    expect(call?.target).toBe('AWSStepFunctions.SendTaskSuccess');
    expect(JSON.parse(String(call?.body['output']))).toEqual(
      expect.objectContaining({ approved: true, note: 'checked by ops' }),
    );
  }, 60_000);

  it('rejects with SendTaskFailure, error RestoreRejected and the reason as its cause', async () => {
    // Act
    const run = await regvault(['reject', '--task-token', 'token-r', '--reason', 'wrong snapshot']);

    // Assess
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/rejected: the restore ends as RestoreNotApproved/);
    expect(callFor('token-r')).toEqual({
      target: 'AWSStepFunctions.SendTaskFailure',
      body: { taskToken: 'token-r', error: 'RestoreRejected', cause: 'wrong snapshot' },
    });
  }, 60_000);

  it('says the restore no longer waits when the token timed out, and fails', async () => {
    // Act
    const run = await regvault(['approve', '--task-token', 'expired-token']);

    // Assess
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/no longer waits for an answer: .*timed out.*TaskTimedOut/);
  }, 60_000);

  it('refuses a run without a task token before calling anything', async () => {
    // Prepare
    const before = calls.length;

    // Act
    const run = await regvault(['approve']);

    // Assess
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/--task-token/);
    expect(calls.length).toBe(before);
  }, 60_000);
});
