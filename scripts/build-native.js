#!/usr/bin/env node
// postbuild: the native hook client (native/hook-client.c) as a static binary in dist/native/.
// No gcc is not an error: install-hooks then installs the Node hook and wrapper, as before.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const src = path.join(root, 'native', 'hook-client.c');
const outDir = path.join(root, 'dist', 'native');
const out = path.join(outDir, 'cgwatchdog-hook');
fs.mkdirSync(outDir, { recursive: true });
const tmp = `${out}.${process.pid}.tmp`;
const r = spawnSync('gcc', ['-O2', '-Wall', '-static', '-s', '-o', tmp, src], { stdio: ['ignore', 'inherit', 'inherit'] });
if (r.error || r.status !== 0) {
  fs.rmSync(tmp, { force: true });
  const why = r.error ? (r.error.code === 'ENOENT' ? 'no gcc' : r.error.message) : `gcc exited ${r.status}`;
  console.log(`cgwatchdog: the native hook client was not built (${why}): install-hooks will use the Node hook and wrapper`);
  process.exit(0);
}
fs.renameSync(tmp, out);
