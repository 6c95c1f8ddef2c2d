/**
 * Test helpers for src/telemetry and src/dashboard: slow, obviously correct references for the
 * randomness tests (bit strings, pattern counting by substring, closed-form incomplete gamma), the
 * binary expansions of e and π (the NIST SP 800-22 worked-example inputs), and a strict parser of
 * the Prometheus text exposition format 0.0.4 for round-trip tests.
 */

// ---------------------------------------------------------------- bits

/** '0101…' → packed bytes, MSB first (the bit order of src/telemetry/randomness.ts). */
export function packBits(s: string): Uint8Array {
  const out = new Uint8Array(Math.ceil(s.length / 8));
  for (let i = 0; i < s.length; i++) if (s[i] === '1') out[i >> 3] |= 0x80 >> (i & 7);
  return out;
}

export function unpackBits(bytes: Uint8Array, nBits = bytes.length * 8): string {
  let s = '';
  for (let i = 0; i < nBits; i++) s += (bytes[i >> 3] >> (7 - (i & 7))) & 1 ? '1' : '0';
  return s;
}

/** The first n bits of the binary expansion of e, integer part included ("10.1011…" → "101011…"). */
export function eBits(n: number): string {
  // e = Σ 1/k!, summed exactly by binary splitting until the tail is below 2^−(n+64).
  const split = (a: number, b: number): [bigint, bigint] => {
    if (b - a === 1) return [1n, BigInt(b)];
    const m = (a + b) >> 1;
    const [p1, q1] = split(a, m);
    const [p2, q2] = split(m, b);
    return [p1 * q2 + p2, q1 * q2];
  };
  let terms = 1;
  for (let lg = 0; lg < n + 64; ) lg += Math.log2(++terms);
  const [p, q] = split(0, terms);
  const v = ((q + p) << BigInt(n - 2 + 32)) / q; // (1 + p/q) · 2^(n−2+32): e has 2 integer bits
  return v.toString(2).slice(0, n);
}

/** The first n bits of π, integer part included ("11.0010…" → "110010…"), by Machin's formula. */
export function piBits(n: number): string {
  const prec = BigInt(n + 64);
  const one = 1n << prec;
  const arctanInv = (x: bigint): bigint => {
    let sum = 0n;
    let term = one / x;
    const x2 = x * x;
    for (let k = 0n; term !== 0n; k++) {
      sum += (k & 1n ? -term : term) / (2n * k + 1n);
      term /= x2;
    }
    return sum;
  };
  const pi = 4n * (4n * arctanInv(5n) - arctanInv(239n));
  return (pi >> (prec - BigInt(n - 2))).toString(2).slice(0, n);
}

// ---------------------------------------------------------------- reference statistics

/** erfc by composite Simpson integration of 2/√π·e^(−t²) over [x, x + 12] (tail beyond < 1e-60). */
export function refErfc(x: number): number {
  if (x < 0) return 2 - refErfc(-x);
  const steps = 20000;
  const h = 12 / steps;
  let s = 0;
  for (let i = 0; i <= steps; i++) {
    const t = x + i * h;
    const w = i === 0 || i === steps ? 1 : i % 2 ? 4 : 2;
    s += w * Math.exp(-t * t);
  }
  return ((s * h) / 3) * (2 / Math.sqrt(Math.PI));
}

/**
 * Q(a, x) for a a positive integer or half-integer, by the closed forms
 * Q(n, x) = e^(−x) Σ_{k<n} x^k/k! and Q(n+½, x) = erfc(√x) + e^(−x) Σ_{k<n} x^(k+½)/Γ(k+3/2).
 */
export function refIgamc(a: number, x: number): number {
  if (x <= 0) return 1; // as Cephes/NIST igamc: a statistic ≤ 0 (rounding) gives P = 1
  if (Number.isInteger(a)) {
    let term = 1;
    let s = 0;
    for (let k = 0; k < a; k++) {
      if (k > 0) term *= x / k;
      s += term;
    }
    return Math.exp(-x) * s;
  }
  if (!Number.isInteger(a - 0.5)) throw new RangeError('refIgamc handles integer and half-integer a only');
  let s = 0;
  let term = Math.sqrt(x) / (Math.sqrt(Math.PI) / 2); // x^½ / Γ(3/2)
  for (let k = 0; k < a - 0.5; k++) {
    s += term;
    term *= x / (k + 1.5);
  }
  return refErfc(Math.sqrt(x)) + Math.exp(-x) * s;
}

export function refFrequency(bits: string): number {
  let s = 0;
  for (const c of bits) s += c === '1' ? 1 : -1;
  return refErfc(Math.abs(s) / Math.sqrt(bits.length) / Math.SQRT2);
}

export function refRuns(bits: string): number {
  const n = bits.length;
  const pi = [...bits].filter((c) => c === '1').length / n;
  if (Math.abs(pi - 0.5) >= 2 / Math.sqrt(n)) return 0;
  let v = 1;
  for (let k = 0; k < n - 1; k++) if (bits[k] !== bits[k + 1]) v++;
  return refErfc(Math.abs(v - 2 * n * pi * (1 - pi)) / (2 * Math.sqrt(2 * n) * pi * (1 - pi)));
}

/** ψ²_m exactly as SP 800-22 §2.11.4 steps 1–3: augment, count every m-pattern by substring. */
export function refPsi2(bits: string, m: number): number {
  if (m <= 0) return 0;
  const n = bits.length;
  const aug = bits + bits.slice(0, m - 1);
  const counts = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const p = aug.slice(i, i + m);
    counts.set(p, (counts.get(p) ?? 0) + 1);
  }
  let s = 0;
  for (const c of counts.values()) s += c * c;
  return (2 ** m / n) * s - n;
}

export function refSerial(bits: string, m: number): [number, number] {
  const pm = refPsi2(bits, m);
  const pm1 = refPsi2(bits, m - 1);
  const pm2 = refPsi2(bits, m - 2);
  return [refIgamc(2 ** (m - 2), (pm - pm1) / 2), refIgamc(2 ** (m - 3), (pm - 2 * pm1 + pm2) / 2)];
}

/** Deterministic xorshift32 bytes for property tests (not for anything secret). */
export function pseudoRandomBytes(n: number, seed: number): Uint8Array {
  let x = seed >>> 0 || 1;
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

// ---------------------------------------------------------------- Prometheus text format parser

export interface ParsedSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
export interface ParsedFamily {
  name: string;
  help?: string;
  type?: string;
  samples: ParsedSample[];
}

function unescapeLabel(s: string): string {
  return s.replace(/\\(.)/g, (_m, c: string) => (c === 'n' ? '\n' : c));
}

function parseValue(v: string): number {
  if (v === '+Inf') return Infinity;
  if (v === '-Inf') return -Infinity;
  if (v === 'NaN') return NaN;
  if (!/^[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?)$/.test(v)) throw new Error(`bad sample value '${v}'`);
  return Number(v);
}

/**
 * Parses the text format (https://prometheus.io/docs/instrumenting/exposition_formats/) strictly:
 * throws on any line that does not fit, on a sample whose family was declared with a different
 * TYPE, and on a duplicate series. Sample names with _bucket/_sum/_count join their histogram.
 */
export function parsePrometheus(text: string): Map<string, ParsedFamily> {
  const fams = new Map<string, ParsedFamily>();
  const seen = new Set<string>();
  const fam = (name: string): ParsedFamily => {
    let f = fams.get(name);
    if (!f) fams.set(name, (f = { name, samples: [] }));
    return f;
  };
  if (text.length && !text.endsWith('\n')) throw new Error('exposition must end with a newline');
  const lines = text.split('\n');
  lines.pop();
  for (const [i, line] of lines.entries()) {
    const where = `line ${i + 1}`;
    if (line === '') continue;
    let m: RegExpMatchArray | null;
    if ((m = line.match(/^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/))) {
      const f = fam(m[1]);
      if (f.help !== undefined) throw new Error(`${where}: second HELP for ${m[1]}`);
      f.help = m[2].replace(/\\(.)/g, (_x, c: string) => (c === 'n' ? '\n' : c));
      continue;
    }
    if ((m = line.match(/^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/))) {
      const f = fam(m[1]);
      if (f.type !== undefined || f.samples.length) throw new Error(`${where}: TYPE for ${m[1]} repeated or after samples`);
      f.type = m[2];
      continue;
    }
    if (line.startsWith('#')) continue;
    m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$/);
    if (!m) throw new Error(`${where}: not a sample: ${JSON.stringify(line)}`);
    const name = m[1];
    const labels: Record<string, string> = {};
    if (m[3] !== undefined && m[3] !== '') {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"(,|$)/y;
      let pos = 0;
      const body = m[3];
      while (pos < body.length) {
        re.lastIndex = pos;
        const lm = re.exec(body);
        if (!lm) throw new Error(`${where}: bad label set {${body}}`);
        if (lm[1] in labels) throw new Error(`${where}: duplicate label ${lm[1]}`);
        labels[lm[1]] = unescapeLabel(lm[2]);
        pos = re.lastIndex;
        if (lm[3] === '' && pos < body.length) throw new Error(`${where}: bad label set {${body}}`);
      }
    }
    const value = parseValue(m[4]);
    let base = name;
    for (const suffix of ['_bucket', '_sum', '_count']) {
      const b = name.slice(0, -suffix.length);
      if (name.endsWith(suffix) && fams.get(b)?.type === 'histogram') base = b;
    }
    const f = fam(base);
    const key = name + JSON.stringify(Object.entries(labels).sort());
    if (seen.has(key)) throw new Error(`${where}: duplicate series ${key}`);
    seen.add(key);
    f.samples.push({ name, labels, value });
  }
  return fams;
}
