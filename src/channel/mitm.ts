/**
 * Fault-injection relay for tests: sits between Alice and Bob on the classical channel and lets
 * a test drop, delay, alter, replay or reorder whole messages, i.e. plays the active adversary
 * (and the lossy network) the MAC and the retry logic must withstand. Not for production.
 *
 * Alice connects to `aliceSide` (bound here); the relay connects to Bob's bound endpoint.
 */
import { Dealer } from 'zeromq';

export type Direction = 'toBob' | 'toAlice';
/** Return the frames to forward (possibly changed), an array of messages, or null to drop. */
export type Tamper = (frames: Buffer[], dir: Direction, index: number) => Buffer[] | Buffer[][] | null;

export class Relay {
  readonly #a: Dealer;
  readonly #b: Dealer;
  tamper: Tamper | null = null;
  readonly seen: Record<Direction, Buffer[][]> = { toBob: [], toAlice: [] };
  #closed = false;

  private constructor(a: Dealer, b: Dealer) {
    this.#a = a;
    this.#b = b;
  }

  static async open(bobEndpoint: string, aliceSide = 'tcp://127.0.0.1:*'): Promise<Relay> {
    const a = new Dealer({ linger: 0 });
    await a.bind(aliceSide);
    const b = new Dealer({ linger: 0, immediate: true });
    b.connect(bobEndpoint);
    const r = new Relay(a, b);
    void r.#pump(a, b, 'toBob');
    void r.#pump(b, a, 'toAlice');
    return r;
  }

  get aliceEndpoint(): string {
    return this.#a.lastEndpoint ?? '';
  }

  /** Sends raw frames as if they came from the network (replay / injection). */
  async inject(dir: Direction, frames: Buffer[]): Promise<void> {
    await (dir === 'toBob' ? this.#b : this.#a).send(frames);
  }

  async #pump(from: Dealer, to: Dealer, dir: Direction): Promise<void> {
    while (!this.#closed) {
      let frames: Buffer[];
      try {
        frames = await from.receive();
      } catch {
        return;
      }
      const index = this.seen[dir].length;
      this.seen[dir].push(frames.map((f) => Buffer.from(f)));
      const out = this.tamper ? this.tamper(frames, dir, index) : frames;
      if (!out) continue;
      const msgs = Array.isArray(out[0]) ? (out as Buffer[][]) : [out as Buffer[]];
      for (const m of msgs) {
        try {
          await to.send(m);
        } catch {
          return;
        }
      }
    }
  }

  close(): void {
    this.#closed = true;
    this.#a.close();
    this.#b.close();
  }
}
