#!/usr/bin/env node
// The `qkd` command. TypeScript sources run through tsx (esbuild) so there is no separate build.
import { register } from 'tsx/esm/api';
register();
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
