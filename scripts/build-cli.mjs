// Compiles the CLI to dist/ (ES modules, code split per command) so it starts
// without compiling TypeScript at run time: `npm run build:cli`, run by
// `npm install` through the prepare script.
import { rm } from 'node:fs/promises';
import { build } from 'esbuild';

// Chunk names carry content hashes: clear the last build's so none linger.
await rm('dist', { recursive: true, force: true });

await build({
  entryPoints: { regvault: 'bin/regvault.ts' },
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node22',
  outdir: 'dist',
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
