/**
 * The reference KMS's local admin endpoint: plain HTTP on a Unix domain socket (mode 0600, beside
 * the database in the KMS's 0700 state directory), so only the KMS's own user on the same host
 * can reach it — no network port, no TLS identity to steal. `qkd kms unseal`, `qkd kms rotate-kek`
 * and `qkd kms status` talk to it (adminRequest).
 *
 *   GET  /admin/v1/status      → 200 {sealed, have, threshold, shares, kind, custody?}
 *   POST /admin/v1/unseal      body: share file content (text, ≤ 64 KiB)
 *                              → 200 {sealed, accepted, have, threshold, shares}
 *                              → 400 {code, message} share refused / shares wrong (nothing revealed)
 *   POST /admin/v1/rotate-kek  → 200 {active, rewrapped, retired, resumed, ms} when done
 *   POST /admin/v1/reshare     body {shares, threshold, outDir} → 200 {files}: new master key,
 *                              new share files written by the KMS into outDir, old shares revoked
 *
 * The unseal body is read into a Buffer that is zeroed once the native side has copied it; it
 * never becomes a JavaScript string and is never logged.
 */
import { chmodSync, existsSync, rmSync } from 'node:fs';
import http from 'node:http';
import { QkdError, TransportError } from '../errors.ts';
import type { Kms } from './kms.ts';

const MAX_BODY = 64 * 1024;

export interface AdminServer {
  path: string;
  close(): Promise<void>;
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const b = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(b) });
  res.end(b);
}

function readBody(req: http.IncomingMessage): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let n = 0;
    req.on('data', (d: Buffer) => {
      n += d.length;
      if (n > MAX_BODY) {
        for (const p of parts) p.fill(0);
        d.fill(0);
        parts.length = 0;
        resolve(null);
        req.destroy();
        return;
      }
      parts.push(d);
    });
    req.on('end', () => {
      const b = Buffer.concat(parts);
      for (const p of parts) p.fill(0);
      resolve(b);
    });
    req.on('error', reject);
  });
}

export async function startAdmin(kms: Kms, path: string): Promise<AdminServer> {
  // A socket file left by a crashed KMS would make listen fail with EADDRINUSE.
  if (existsSync(path)) rmSync(path, { force: true });
  const server = http.createServer((req, res) => {
    void (async () => {
      const url = req.url ?? '';
      try {
        if (req.method === 'GET' && url === '/admin/v1/status') return send(res, 200, kms.sealStatus());
        if (req.method === 'POST' && url === '/admin/v1/unseal') {
          const body = await readBody(req);
          if (!body) return send(res, 413, { code: 'ADMIN_TOO_LARGE', message: `a share file is far smaller than ${MAX_BODY} bytes` });
          try {
            return send(res, 200, kms.unseal(body));
          } finally {
            body.fill(0);
          }
        }
        if (req.method === 'POST' && url === '/admin/v1/rotate-kek') return send(res, 200, await kms.rotateKek());
        if (req.method === 'POST' && url === '/admin/v1/reshare') {
          const body = await readBody(req);
          let o: { shares?: unknown; threshold?: unknown; outDir?: unknown };
          try {
            o = JSON.parse(body?.toString('utf8') ?? '');
          } catch {
            return send(res, 400, { code: 'ADMIN_BAD_BODY', message: 'reshare needs a JSON body {shares, threshold, outDir}' });
          }
          if (typeof o.outDir !== 'string' || !o.outDir.startsWith('/')) {
            return send(res, 400, { code: 'ADMIN_BAD_BODY', message: 'outDir must be an absolute path' });
          }
          return send(res, 200, { files: kms.reshare(Number(o.shares), Number(o.threshold), o.outDir) });
        }
        return send(res, 404, { message: `no route ${req.method} ${url}` });
      } catch (err) {
        const code = (err as QkdError).code ?? 'ADMIN_FAILED';
        return send(res, code === 'KMS_ROTATING' || code === 'KMS_SEALED' ? 409 : 400, { code, message: (err as Error).message });
      }
    })();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // umask for the bind: the socket is created 0600 from the start (chmod after listen would
    // leave a window in which another user could connect).
    const old = process.umask(0o177);
    try {
      server.listen(path, () => resolve());
    } finally {
      process.umask(old);
    }
  });
  chmodSync(path, 0o600);
  return {
    path,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
      rmSync(path, { force: true });
    }),
  };
}

/** One request to a KMS's admin socket; resolves status and parsed JSON body. */
export function adminRequest(path: string, method: string, route: string, body?: Buffer,
  timeoutMs = 0): Promise<{ status: number; body: Record<string, unknown> }> {
  if (!existsSync(path)) {
    return Promise.reject(new TransportError('ADMIN_NO_KMS', `no KMS is running for this configuration (admin socket ` +
      `${path} is missing): start it with \`qkd kms --config FILE\` first`));
  }
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: path, method, path: route, headers: body ? { 'content-type':
      'application/octet-stream', 'content-length': body.length } : {} }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(parts).toString('utf8') || '{}') });
        } catch (cause) {
          reject(new TransportError('ADMIN_BAD_ANSWER', 'the KMS admin endpoint answered something that is not JSON', { cause }));
        }
      });
    });
    if (timeoutMs) req.setTimeout(timeoutMs, () => req.destroy(new TransportError('ADMIN_TIMEOUT', 'the KMS admin endpoint did not answer')));
    req.on('error', (cause) => reject(new TransportError('ADMIN_UNREACHABLE', `cannot reach the KMS admin socket ${path}: ` +
      `${(cause as Error).message}`, { cause })));
    req.end(body);
  });
}
