// Compiles the CLI to dist/ (ES modules, code split per command) so it starts
// without compiling TypeScript at run time: `npm run build:cli`, run by
// `npm install` through the prepare script.
import { rename, rm } from 'node:fs/promises';
import { build } from 'esbuild';

// Built aside and swapped in, so a CLI that another process started from
// dist/ (tests and benchmarks build while others run it) finds its chunks
// but for the instant of the swap; chunk names carry content hashes, and the
// swap drops the last build's so none linger.
const staging = `dist.building-${process.pid}`;
await rm(staging, { recursive: true, force: true });

await build({
  entryPoints: { regvault: 'bin/regvault.ts' },
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node22',
  outdir: staging,
  outExtension: { '.js': '.mjs' },
  chunkNames: 'chunks/[name]-[hash]',
  // Some dependencies still call require(); give the bundle one, and keep
  // V8's compiled code between runs (Node 22's module compile cache).
  banner: {
    js: [
      "import { createRequire as __regvaultRequire } from 'node:module';",
      'const require = __regvaultRequire(import.meta.url);',
      "try { (await import('node:module')).enableCompileCache?.(); } catch {}",
    ].join('\n'),
  },
  logLevel: 'warning',
});

const previous = `dist.previous-${process.pid}`;
await rename('dist', previous).catch(() => undefined);
// Another build may have swapped its dist/ in meanwhile: the same sources, the same files.
await rename(staging, 'dist').catch(async (err) => {
  if (err?.code !== 'ENOTEMPTY' && err?.code !== 'EEXIST') throw err;
  await rm(staging, { recursive: true, force: true });
});
await rm(previous, { recursive: true, force: true });
