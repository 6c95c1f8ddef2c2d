/** Development PKI for tests: see src/delivery/pki.ts (the run uses it too). */
export { makePki, type Identity, type Pki } from '../delivery/pki.ts';
