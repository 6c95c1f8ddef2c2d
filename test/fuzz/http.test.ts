// Fuzzing of the ETSI 004/014 and KMS-peer HTTP body parsers (real servers, real mutual TLS): src/testkit/fuzz-http.ts. Each target's corpus
// (test/fuzz/corpus/TARGET/) is replayed, then random and mutated inputs for QKD_FUZZ_MS (default
// 1500) ms per target. A finding prints the input; `npm run fuzz -- TARGET` runs longer and keeps it.
import t from 'tap';
import { fuzzTests } from '../../src/testkit/fuzz.ts';
import { HTTP_TARGETS } from '../../src/testkit/fuzz-http.ts';

fuzzTests(t, HTTP_TARGETS);
