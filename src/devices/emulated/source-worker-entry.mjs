// Entry of the emulated source's worker thread (source-worker.ts). Node 20 gives a worker neither
// the --import loaders nor the hooks registered on the main thread, so it registers tsx itself
// (the same loader the `qkd` CLI and the tests use) before loading the TypeScript.
import { register } from 'tsx/esm/api';

register();
await import('./source-worker-thread.ts');
