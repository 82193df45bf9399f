import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { processExists, spawnManaged, typeScriptCommand } from '../../sandbox/process.ts';

const processModule = fileURLToPath(new URL('../../sandbox/process.ts', import.meta.url));

async function gone(pid: number, timeoutMs = 5_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!processExists(pid)) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return false;
}

describe('sandbox processes', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'regvault-process-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('stops a service so that its process is gone from the system, not just from our list', async () => {
    // Prepare
    const service = spawnManaged({ name: 'sleeper', command: 'sleep', args: ['300'] });
    const pid = service.child.pid ?? -1;
    expect(processExists(pid)).toBe(true);
    // Act
    await service.stop();
    // Assess
    expect(await gone(pid)).toBe(true);
  });

  it('takes a service down with it when the process that started it dies without stopping it', async () => {
    // Prepare: a parent that starts a service, prints its pid and is then killed.
    const script = join(dir, 'parent.ts');
    await writeFile(
      script,
      [
        `import { spawnManaged } from ${JSON.stringify(processModule)};`,
        "const service = spawnManaged({ name: 'orphan-candidate', command: 'sleep', args: ['300'] });",
        "process.stdout.write(String(service.child.pid) + '\\n');",
        'setInterval(() => undefined, 1_000);',
      ].join('\n'),
    );
    const { command, args } = typeScriptCommand(script);
    const parent = execFile(command, args);
    const pid = await new Promise<number>((resolve) => {
      parent.stdout?.once('data', (chunk: Buffer) => resolve(Number(chunk.toString().trim())));
    });
    expect(processExists(pid)).toBe(true);
    // Act
    parent.kill('SIGKILL');
    // Assess
    expect(await gone(pid)).toBe(true);
  });
});
