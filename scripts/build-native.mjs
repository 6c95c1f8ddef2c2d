#!/usr/bin/env node
// Builds the Rust post-processing core (native/) into a Node addon with napi-rs.
// Runs from `npm install`, so a fresh clone is usable after one command.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cargo = spawnSync('cargo', ['--version'], { encoding: 'utf8' });
if (cargo.status !== 0) {
  console.error('qkd-node: cargo (Rust >= 1.80) is required to build the native core in native/. ' +
    'Install Rust with rustup (https://rustup.rs), then run `npm install` again.');
  process.exit(1);
}
const napi = join(root, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js');
if (!existsSync(napi)) {
  console.error('qkd-node: @napi-rs/cli is missing; run `npm install` (with dev dependencies) first.');
  process.exit(1);
}
console.error('qkd-node: building the native core (cargo, release profile) ...');
const args = [napi, 'build', '--release', '--platform', '--cwd', join(root, 'native', 'node'),
  '--package-json-path', 'package.json', '--manifest-path', 'Cargo.toml', '--output-dir', '.',
  '--js', 'index.cjs', '--dts', 'index.d.cts'];
const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
if (r.status !== 0) {
  console.error('qkd-node: the native build failed (see cargo output above).');
  process.exit(r.status ?? 1);
}
