// Choice bytes packed two per byte for the source's read-back (src/protocol/choices.ts): the
// pair-at-a-time loops equal the obvious one-nibble-at-a-time ones on random lengths and bytes.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { packChoiceNibbles, unpackChoiceNibbles } from '../../src/protocol/choices.ts';

function packSlow(choices: Uint8Array): Uint8Array {
  const out = new Uint8Array((choices.length + 1) >> 1);
  for (let i = 0; i < choices.length; i++) out[i >> 1] |= (choices[i] & 15) << ((i & 1) * 4);
  return out;
}

function unpackSlow(packed: Uint8Array, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (packed[i >> 1] >> ((i & 1) * 4)) & 15;
  return out;
}

t.test('packing and unpacking equal the one-nibble-at-a-time loops, odd lengths included', async (t) => {
  for (let trial = 0; trial < 300; trial++) {
    const n = trial < 8 ? trial : Math.floor(Math.random() * 5000);
    const c = randomBytes(n); // high nibbles set too: they must be dropped
    const packed = packChoiceNibbles(c);
    const want = packSlow(c);
    if (!Buffer.from(packed).equals(Buffer.from(want))) return t.fail(`pack, length ${n}`);
    const back = unpackChoiceNibbles(packed, n);
    if (!Buffer.from(back).equals(Buffer.from(unpackSlow(packed, n)))) return t.fail(`unpack, length ${n}`);
    if (back.some((v, i) => v !== (c[i] & 15))) return t.fail(`round trip, length ${n}`);
  }
  t.same([...packChoiceNibbles(Uint8Array.of(1, 2, 3))], [0x21, 3], 'low nibble first; a lone last choice in the low nibble');
  t.same([...unpackChoiceNibbles(Uint8Array.of(0x21, 0x03), 3)], [1, 2, 3]);
});
