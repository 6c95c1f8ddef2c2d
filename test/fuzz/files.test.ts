// Fuzzing of the record-file, profile and configuration parsers: src/testkit/fuzz-targets.ts. Each target's corpus
// (test/fuzz/corpus/TARGET/) is replayed, then random and mutated inputs for QKD_FUZZ_MS (default
// 1500) ms per target. A finding prints the input; `npm run fuzz -- TARGET` runs longer and keeps it.
import t from 'tap';
import { fuzzTests } from '../../src/testkit/fuzz.ts';
import { FILE_TARGETS } from '../../src/testkit/fuzz-targets.ts';

fuzzTests(t, FILE_TARGETS);
