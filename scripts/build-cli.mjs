// Compiles the CLI to dist/ (ES modules, code split per command) so it starts
// without compiling TypeScript at run time: `npm run build:cli`, run by
// `npm install` through the prepare script.
import { rename, rm, writeFile } from 'node:fs/promises';
import { build } from 'esbuild';

// Built aside and swapped in, so a CLI that another process started from
// dist/ (tests and benchmarks build while others run it) finds its chunks
// but for the instant of the swap; chunk names carry content hashes, and the
// swap drops the last build's so none linger.
const staging = `dist.building-${process.pid}`;
await rm(staging, { recursive: true, force: true });

await build({
  entryPoints: { 'regvault-main': 'bin/regvault.ts' },
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  // The ES module builds first: the AWS SDK's are split per command, so the
  // bundle keeps the commands regvault sends and evaluates much less on start
  // (a backup's first request 0.34-0.38 s after spawn, against 0.47-0.66 s
  // with the CommonJS builds, which esbuild picks first for Node).
  mainFields: ['module', 'main'],
  target: 'node22',
  outdir: staging,
  outExtension: { '.js': '.mjs' },
  chunkNames: 'chunks/[name]-[hash]',
  // Some dependencies still call require(); give the bundle one.
  banner: {
    js: [
      "import { createRequire as __regvaultRequire } from 'node:module';",
      'const require = __regvaultRequire(import.meta.url);',
    ].join('\n'),
  },
  // node:http without its 40 ms ES module view (scripts/node-http.mjs).
  alias: { http: './scripts/node-http.mjs', 'node:http': './scripts/node-http.mjs' },
  logLevel: 'warning',
});

// The entry turns on V8's compile cache (Node 22) before it imports the CLI:
// a module's static imports load before its own code runs, so a cache turned
// on inside the bundle missed the chunks every command loads (about 75 ms of
// compiling on each start).
await writeFile(
  `${staging}/regvault.mjs`,
  [
    "import * as nodeModule from 'node:module';",
    'try {',
    '  nodeModule.enableCompileCache?.();',
    '} catch {}',
    "await import('./regvault-main.mjs');",
    '',
  ].join('\n'),
);

const previous = `dist.previous-${process.pid}`;
await rename('dist', previous).catch(() => undefined);
// Another build may have swapped its dist/ in meanwhile: the same sources, the same files.
await rename(staging, 'dist').catch(async (err) => {
  if (err?.code !== 'ENOTEMPTY' && err?.code !== 'EEXIST') throw err;
  await rm(staging, { recursive: true, force: true });
});
await rm(previous, { recursive: true, force: true });
