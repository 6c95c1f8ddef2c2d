/**
 * HTTP(S) plumbing shared by the node side and the KMS: mutual-TLS 1.3 servers whose handlers see
 * the verified client identity (certificate CN), and a JSON client that binds the server to a
 * configured identity. Plain HTTP exists only behind an explicit `insecure: true`.
 *
 * Why `http.request` and not `fetch`: ETSI 004 get-key is a GET with a JSON body, which fetch
 * refuses; and a 204 never has a body, so the client does not try to parse one.
 */
import http from 'node:http';
import https from 'node:https';
import type { TLSSocket, PeerCertificate } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { ConfigError, ProtocolError, SecurityError, TimeoutError, TransportError } from '../errors.ts';

/** PEM material of one party: its CA bundle (trust anchors for peers), certificate and key. */
export interface TlsConfig {
  ca: string | Buffer;
  cert: string | Buffer;
  key: string | Buffer;
}

/** Who we talk to: base URL and the identity (certificate CN) it must present. */
export interface Endpoint {
  url: string;
  id: string;
}

export interface Transport {
  /** Mutual TLS 1.3 material. Required unless `insecure` is true. */
  tls?: TlsConfig;
  /** Plain HTTP, no authentication. Only for local experiments; never the default. */
  insecure?: boolean;
}

export interface Req {
  method: string;
  path: string;
  query: URLSearchParams;
  body: unknown;
  /** Verified client certificate CN, or null on an insecure server. */
  clientId: string | null;
}
export interface Res {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
  /** Drop the connection instead of answering (test proxies simulate a lost answer with it). */
  abort?: boolean;
}
export type Handler = (req: Req) => Promise<Res>;

const MAX_BODY = 1 << 20;

export function checkTransport(t: Transport, what: string): void {
  if (!t.insecure && !t.tls) {
    throw new ConfigError('DELIVERY_TLS_REQUIRED', `${what}: mutual TLS material (tls: {ca, cert, key}) is ` +
      'required; pass insecure: true only for a local experiment without authentication.');
  }
}

const cnCache = new WeakMap<TLSSocket, string | null>();

/** The verified peer CN of a TLS socket, cached per connection (keep-alive reuses sockets). */
function peerCn(sock: TLSSocket): string | null {
  const hit = cnCache.get(sock);
  if (hit !== undefined) return hit;
  const cn = readCn(sock);
  cnCache.set(sock, cn);
  return cn;
}

function readCn(sock: TLSSocket): string | null {
  const c: PeerCertificate = sock.getPeerCertificate();
  const cn = c?.subject?.CN;
  return typeof cn === 'string' ? cn : Array.isArray(cn) ? String(cn[0]) : null;
}

export interface Server {
  url: string;
  port: number;
  close(): Promise<void>;
}

/**
 * Starts a server on host:port (port 0 = any free port). `onError` receives handler failures
 * (the client gets a 500 with no detail). Requests without a verified client certificate never
 * reach the handler when TLS is on (the handshake fails).
 */
export async function startServer(opts: Transport & { host?: string; port?: number; name: string },
  handler: Handler, onError: (err: unknown) => void): Promise<Server> {
  checkTransport(opts, opts.name);
  const listener = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        res.writeHead(413).end();
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      let body: unknown = undefined;
      let bad = false;
      if (raw.length) {
        try {
          body = JSON.parse(raw.toString('utf8'));
        } catch {
          bad = true;
        }
      }
      // Why zero the raw body: a key-material push carries key bytes (base64) in it.
      for (const c of chunks) c.fill(0);
      raw.fill(0);
      const u = new URL(req.url ?? '/', 'http://x');
      const clientId = opts.insecure ? null : peerCn(req.socket as TLSSocket);
      const send = (r: Res) => {
        if (res.headersSent) return;
        if (r.abort) {
          req.socket.destroy();
          return;
        }
        const headers: Record<string, string> = { ...(r.headers ?? {}) };
        if (r.status === 204 || r.body === undefined) {
          res.writeHead(r.status, headers).end();
        } else {
          const out = Buffer.from(JSON.stringify(r.body));
          headers['content-type'] = 'application/json';
          headers['content-length'] = String(out.length);
          // Why wiped after the write: an ETSI 014 key response carries key bytes (base64).
          res.writeHead(r.status, headers).end(out, () => out.fill(0));
        }
      };
      if (bad) {
        send({ status: 400, body: { status: 0, message: 'request body is not valid JSON' } });
        return;
      }
      handler({ method: req.method ?? 'GET', path: u.pathname, query: u.searchParams, body, clientId })
        .then(send, (err: unknown) => {
          onError(err);
          send({ status: 500, body: { status: 0, message: 'internal error; see the server log' } });
        });
    });
  };
  const server: http.Server = opts.insecure
    ? http.createServer(listener)
    : https.createServer({ ...opts.tls!, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' },
      listener);
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const host = opts.host ?? '127.0.0.1';
  return {
    url: `${opts.insecure ? 'http' : 'https'}://${host.includes(':') ? `[${host}]` : host}:${port}`,
    port,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}

export interface ClientResponse {
  status: number;
  body: any;
  headers: http.IncomingHttpHeaders;
}

/**
 * A JSON client bound to one endpoint: TLS 1.3 with our certificate, the server must chain to
 * our CA and present `endpoint.id` as its CN (hostname checks are replaced by this binding,
 * since nodes are addressed by IP in labs). Keep-alive connections are reused.
 */
export class JsonClient {
  endpoint: Endpoint;
  private readonly agent: http.Agent;
  private readonly secure: boolean;

  constructor(endpoint: Endpoint, t: Transport) {
    checkTransport(t, `client of ${endpoint.id}`);
    this.endpoint = endpoint;
    this.secure = !t.insecure;
    const id = endpoint.id;
    this.agent = t.insecure
      ? new http.Agent({ keepAlive: true, maxSockets: 32 })
      : new https.Agent({
        keepAlive: true, maxSockets: 32, ...t.tls!, minVersion: 'TLSv1.3',
        checkServerIdentity: (_host, cert) => cert.subject?.CN === id ? undefined
          : new SecurityError('DELIVERY_PEER_IDENTITY', `server presented identity '${String(cert.subject?.CN)}', ` +
            `expected '${id}'; check the configured peer id and its certificate`),
      });
  }

  /** Sends `body` (JSON, also for GET) and resolves with status and parsed body (null if none). */
  request(method: string, path: string, body?: unknown, timeoutMs = 10_000): Promise<ClientResponse> {
    const url = new URL(path, this.endpoint.url);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const mod = this.secure ? https : http;
    return new Promise((resolve, reject) => {
      const req = mod.request(url, {
        method, agent: this.agent,
        headers: payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {},
      }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          clearTimeout(timer);
          const raw = Buffer.concat(chunks);
          let parsed: unknown = null;
          if (raw.length && res.statusCode !== 204) {
            try {
              parsed = JSON.parse(raw.toString('utf8'));
            } catch {
              reject(new ProtocolError('DELIVERY_BAD_RESPONSE', `${method} ${url.pathname} on ${this.endpoint.id} ` +
                `answered ${res.statusCode} with a body that is not JSON`));
              return;
            } finally {
              // Why: 014 responses carry keys.
              for (const c of chunks) c.fill(0);
              raw.fill(0);
            }
          }
          resolve({ status: res.statusCode ?? 0, body: parsed, headers: res.headers });
        });
        res.on('error', (e) => reject(new TransportError('DELIVERY_CONNECTION', `reading the answer of ` +
          `${this.endpoint.id} failed: ${e.message}`, { cause: e })));
      });
      const timer = setTimeout(() => {
        req.destroy(new TimeoutError('DELIVERY_TIMEOUT', `${method} ${url.pathname} on ${this.endpoint.id} ` +
          `did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      req.on('error', (e) => {
        clearTimeout(timer);
        if (e instanceof TimeoutError || e instanceof SecurityError) reject(e);
        else reject(new TransportError('DELIVERY_CONNECTION', `${method} ${url.pathname} on ${this.endpoint.id} ` +
          `(${this.endpoint.url}) failed: ${(e as Error).message}`, { cause: e }));
      });
      // Why payload.fill(0) after end: the key-material body holds key bytes in base64.
      req.end(payload, () => payload?.fill(0));
    });
  }

  /** Points the client at a new base URL of the same identity (a peer that moved port). */
  retarget(url: string): void {
    this.endpoint = { ...this.endpoint, url };
  }

  close(): void {
    this.agent.destroy();
  }
}

/** Percentiles of a sample (nearest rank). */
export function percentiles(xs: number[]): { p50: number; p90: number; p99: number; count: number } {
  if (!xs.length) return { p50: 0, p90: 0, p99: 0, count: 0 };
  const s = [...xs].sort((a, b) => a - b);
  const at = (p: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))];
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), count: s.length };
}

/** A bounded reservoir of recent samples (the last `cap`), a ring: a push is O(1). */
export class Recent {
  private readonly buf: number[] = [];
  private next = 0;
  constructor(private readonly cap = 4096) {}
  push(x: number): void {
    if (this.buf.length < this.cap) this.buf.push(x);
    else this.buf[this.next] = x;
    this.next = (this.next + 1) % this.cap;
  }
  /** The samples, oldest first. */
  values(): number[] {
    return this.buf.length < this.cap ? this.buf.slice() : [...this.buf.slice(this.next), ...this.buf.slice(0, this.next)];
  }
}
