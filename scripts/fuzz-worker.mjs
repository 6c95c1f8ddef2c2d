// Worker entry: registers the TypeScript loader in this thread, then runs scripts/fuzz-worker.ts
// (Node 20 does not apply the parent's --import hooks to a worker's first module).
import { register } from 'tsx/esm/api';

register();
await import('./fuzz-worker.ts');
