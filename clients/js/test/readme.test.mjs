// The README's examples are the files in examples/, which `npm test` type-checks.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');

test('the README shows the type-checked example files verbatim', () => {
  const marked = [...readme.matchAll(/<!-- (examples\/[^ ]+) -->\n```[a-z]+\n([\s\S]*?)```/g)];
  assert.deepEqual(
    marked.map((m) => m[1]),
    ['examples/react/useBistream.tsx', 'examples/react/RevenueTicker.tsx', 'examples/node-example.ts'],
  );
  for (const [, path, code] of marked) {
    assert.equal(code, readFileSync(new URL(`../${path}`, import.meta.url), 'utf8'), `${path} differs from the README`);
  }
});
