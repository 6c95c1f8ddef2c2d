/**
 * Loads the napi-rs addon built from native/ by `npm install` (scripts/build-native.mjs).
 * Typed facades in this folder wrap it; nothing else should import the addon directly.
 */
import { createRequire } from 'node:module';
import { QkdError } from '../errors.ts';

type Addon = typeof import('../../native/node/index.cjs');

let addon: Addon | undefined;

export function native(): Addon {
  if (addon) return addon;
  const require = createRequire(import.meta.url);
  try {
    addon = require('../../native/node/index.cjs') as Addon;
  } catch (cause) {
    throw new QkdError('NATIVE_NOT_BUILT',
      'The native post-processing core is not built or does not load. Run `npm run build:native` ' +
      '(needs cargo) and check its output.', { cause });
  }
  return addon;
}
