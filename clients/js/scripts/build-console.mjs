#!/usr/bin/env node
// Builds the console page from clients/console/src (and the client in
// clients/js/src, which it imports) into the files the server embeds:
//   node scripts/build-console.mjs --out ../../src/console     write them
//   node scripts/build-console.mjs --check ../../src/console   fail if they differ
// The output depends only on the sources and the pinned esbuild version, so the
// committed copy can be checked byte for byte.
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const consoleDir = resolve(here, '../../console');
const HEADER = 'Built from clients/console/src and clients/js/src by clients/js/scripts/build-console.mjs (make console). Do not edit.';

const [mode, target] = process.argv.slice(2);
if (!['--out', '--check'].includes(mode) || !target) {
  console.error('usage: build-console.mjs --out DIR | --check DIR');
  process.exit(2);
}
const outDir = resolve(process.cwd(), target);

const bundle = await build({
  entryPoints: [join(consoleDir, 'src/app.ts')],
  absWorkingDir: consoleDir,
  bundle: true,
  format: 'esm',
  target: 'es2022',
  platform: 'browser',
  charset: 'utf8',
  legalComments: 'none',
  minify: false,
  sourcemap: false,
  write: false,
  logLevel: 'warning',
  banner: { js: `// ${HEADER}` },
});
const js = bundle.outputFiles[0]?.text;
if (!js) throw new Error('esbuild produced no output');

const html = await readFile(join(consoleDir, 'src/index.html'), 'utf8');
const files = {
  'index.html': html.replace('<!doctype html>\n', `<!doctype html>\n<!-- ${HEADER} -->\n`),
  'app.js': js,
  'app.css': `/* ${HEADER} */\n${await readFile(join(consoleDir, 'src/app.css'), 'utf8')}`,
  'favicon.svg': await readFile(join(consoleDir, 'src/favicon.svg'), 'utf8'),
};

if (mode === '--out') {
  await mkdir(outDir, { recursive: true });
  for (const [name, text] of Object.entries(files)) await writeFile(join(outDir, name), text);
  console.log(`console built into ${outDir}: ${Object.keys(files).join(', ')}`);
} else {
  const stale = [];
  for (const [name, text] of Object.entries(files)) {
    let committed = null;
    try {
      committed = await readFile(join(outDir, name), 'utf8');
    } catch {
      // missing counts as stale
    }
    if (committed !== text) stale.push(name);
  }
  if (stale.length > 0) {
    console.error(`console-check: ${stale.join(', ')} in ${outDir} differ from a fresh build of clients/console: run \`make console\` and commit the result`);
    process.exit(1);
  }
  console.log(`console-check: ${outDir} is up to date (${Object.keys(files).length} files)`);
}
