import { native } from '../../core/native.ts';

export const summary = 'print the versions of the node and its native core';
export const usage = 'qkd version\n\nPrints the package version and the native core version.';

export async function run(): Promise<number> {
  const { createRequire } = await import('node:module');
  const pkg = createRequire(import.meta.url)('../../../package.json') as { version: string };
  process.stdout.write(`qkd-node ${pkg.version}, native core ${native().coreVersion()}\n`);
  return 0;
}
