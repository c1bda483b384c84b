#!/usr/bin/env node
// Keeps the bundled dependencies' tests, benchmarks, type declarations, TypeScript sources and
// source maps out of the tarball. npm packs a bundled dependency by its own package.json "files"
// only (npm-packlist applies neither our .npmignore nor our "files" inside node_modules), so
// prepack moves those files aside for the duration of the pack and postpack puts them back: the
// development tree (tsc needs @types/node) is whole again as soon as the pack ends.
//
//   node scripts/prune-bundle.js stash     (prepack)
//   node scripts/prune-bundle.js restore   (postpack, prebuild: heals an interrupted pack)
//
// @types/node and undici-types are bundled because protobufjs lists @types/node among its
// dependencies (for its .d.ts); nothing requires them at run time, so they are left out whole.
// npm installs a bundled tree as packed and does not fetch what it lacks: `npm install -g
// --offline` of the tarball succeeds without them (test/e2e/package.test.ts installs it so).
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const NM = path.join(ROOT, 'node_modules');
const STASH = path.join(NM, '.cgwatchdog-pack-stash');
const TEST_DIRS = new Set(['test', 'tests', '__tests__', 'spec', 'specs', 'bench', 'benchmark', 'benchmarks']);
const DEV_FILE = /\.(ts|mts|cts|map)$/; // .d.ts, .d.mts, .d.cts, .ts sources and source maps
const TYPES_ONLY = (name) => name.startsWith('@types/') || name === 'undici-types';

function readJson(file) {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

/** Where node would resolve `name` from package directory `from`, as npm laid the tree out. */
function resolvePackage(name, from) {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'node_modules', name);
    if (fs.existsSync(path.join(candidate, 'package.json'))) return candidate;
    if (dir === ROOT || dir === path.dirname(dir)) return undefined;
  }
}

/** The bundled packages: bundleDependencies and, transitively, their dependencies (npm-packlist's rule). */
function bundledPackages() {
  const out = new Map(); // directory -> package name
  const queue = readJson(path.join(ROOT, 'package.json')).bundleDependencies.map((n) => [n, ROOT]);
  while (queue.length) {
    const [name, from] = queue.shift();
    const dir = resolvePackage(name, from);
    if (!dir || out.has(dir)) continue;
    out.set(dir, name);
    const pkg = readJson(path.join(dir, 'package.json'));
    for (const dep of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies })) queue.push([dep, dir]);
  }
  return out;
}

/** The paths to move aside within one package directory (not descending into its node_modules). */
function prunable(dir, name) {
  if (TYPES_ONLY(name)) return [dir];
  const found = [];
  const walk = (d, top) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.name === 'node_modules' && top) continue; // its own bundled children are walked as packages
      if (e.isDirectory()) {
        if (TEST_DIRS.has(e.name)) found.push(p);
        else walk(p, false);
      } else if (DEV_FILE.test(e.name)) {
        found.push(p);
      }
    }
  };
  walk(dir, true);
  return found;
}

function stash() {
  restore(); // a previous pack interrupted before postpack
  let files = 0;
  for (const [dir, name] of bundledPackages()) {
    for (const p of prunable(dir, name)) {
      if (!fs.existsSync(p)) continue; // inside a directory already moved whole
      const to = path.join(STASH, path.relative(NM, p));
      fs.mkdirSync(path.dirname(to), { recursive: true });
      fs.renameSync(p, to);
      files++;
    }
  }
  // stderr: stdout is `npm pack --json`'s.
  process.stderr.write(`prune-bundle: moved ${files} test, benchmark, type, source and map paths of bundled packages aside for the pack\n`);
}

function restore() {
  if (!fs.existsSync(STASH)) return;
  // A stashed path is a whole directory or a file; directories both sides share are descended.
  const back = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      const to = path.join(NM, path.relative(STASH, p));
      if (e.isDirectory() && fs.existsSync(to)) back(p);
      else fs.renameSync(p, to);
    }
  };
  back(STASH);
  fs.rmSync(STASH, { recursive: true, force: true });
}

const cmd = process.argv[2];
if (cmd === 'stash') stash();
else if (cmd === 'restore') restore();
else {
  process.stderr.write('usage: prune-bundle.js stash|restore\n');
  process.exit(2);
}
