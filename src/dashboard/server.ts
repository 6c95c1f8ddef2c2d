/**
 * The operator's live dashboard: a small HTTP server (node:http, no framework) serving
 *   GET /              the page (static/index.html + app.js + style.css, no build step, no CDN)
 *   GET /api/state     the current DashboardState as JSON
 *   GET /api/events    Server-Sent Events: `event: state` with the same JSON every `pushIntervalMs`
 *   GET /metrics       Prometheus text exposition (when a registry or render function is given)
 *   GET /runbook       docs/runbook.md rendered to HTML (alarm links point at its anchors);
 *   GET /operations    docs/operations.md likewise
 *   GET /healthz       200 "ok"
 *
 * Binds to 127.0.0.1 by default: the dashboard has no authentication, so exposing it beyond the
 * host is a deliberate choice (`host: '0.0.0.0'`, behind a reverse proxy with auth). Strict CSP:
 * the page loads only its own script and style. Read-only: no route changes node state.
 *
 * Concurrency: `getState` may be called concurrently by several clients; it should be cheap (build
 * the state from counters already kept), or cache. `close()` ends SSE streams and stops listening.
 */
import { createServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import { TransportError } from '../errors.ts';
import { PROMETHEUS_CONTENT_TYPE, type MetricsRegistry } from '../telemetry/metrics.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { DashboardState } from './types.ts';
import { renderMarkdown } from './markdown.ts';

const here = dirname(fileURLToPath(import.meta.url));
const STATIC_DIR = join(here, 'static');
const DOCS: Record<string, { file: string; title: string }> = {
  '/runbook': { file: join(here, '..', '..', 'docs', 'runbook.md'), title: 'QKD node runbook' },
  '/operations': { file: join(here, '..', '..', 'docs', 'operations.md'), title: 'QKD node operations' },
};

const STATIC: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/index.html': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
  '/favicon.svg': { file: 'favicon.svg', type: 'image/svg+xml' },
  // Browsers ask for /favicon.ico regardless; answer with the SVG rather than a 404.
  '/favicon.ico': { file: 'favicon.svg', type: 'image/svg+xml' },
};

const SECURITY_HEADERS: Record<string, string> = {
  'Content-Security-Policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
};

export interface DashboardOptions {
  /** TCP port; 0 picks a free one (read it back from the result). */
  port: number;
  /** Interface to bind; default 127.0.0.1 (see the module comment before changing it). */
  host?: string;
  getState: () => DashboardState | Promise<DashboardState>;
  /** Served at /metrics: a registry, or a function returning exposition text. */
  metrics?: MetricsRegistry | (() => string | Promise<string>);
  /** SSE push period (default 1000 ms). */
  pushIntervalMs?: number;
  logger?: Logger;
}

export interface Dashboard {
  /** e.g. http://127.0.0.1:8080/ */
  url: string;
  port: number;
  server: Server;
  /** Ends SSE streams and closes the server. Idempotent. */
  close(): Promise<void>;
}

function send(res: ServerResponse, status: number, type: string, body: string | Buffer, extra: Record<string, string> = {}): void {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), ...SECURITY_HEADERS, ...extra });
  res.end(body);
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  send(res, status, 'application/json; charset=utf-8', JSON.stringify(value), { 'Cache-Control': 'no-store' });
}

/** Starts the dashboard. Rejects with TransportError DASHBOARD_LISTEN when the port is taken. */
export async function startDashboard(opts: DashboardOptions): Promise<Dashboard> {
  const host = opts.host ?? '127.0.0.1';
  const pushMs = opts.pushIntervalMs ?? 1000;
  const staticCache = new Map<string, Buffer>();
  const readStatic = (file: string): Buffer => {
    let b = staticCache.get(file);
    if (!b) staticCache.set(file, (b = readFileSync(join(STATIC_DIR, file))));
    return b;
  };
  const sseClients = new Set<ServerResponse>();
  let closed = false;

  // Several SSE clients (and pollers) in the same push period share one serialised state.
  let cached: { atMs: number; json: Promise<string> } | undefined;
  const stateJson = (): Promise<string> => {
    const now = Date.now();
    if (!cached || now - cached.atMs >= pushMs / 2) {
      const json = (async () => JSON.stringify(await opts.getState()))();
      cached = { atMs: now, json };
      json.catch(() => {
        if (cached?.json === json) cached = undefined; // do not cache a failure
      });
    }
    return cached.json;
  };

  const renderMetrics = async (): Promise<string | undefined> => {
    const m = opts.metrics;
    if (!m) return undefined;
    return typeof m === 'function' ? await m() : m.render();
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://dashboard');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(res, 405, 'text/plain; charset=utf-8', 'the dashboard is read-only: use GET\n', { Allow: 'GET, HEAD' });
      return;
    }
    const path = url.pathname;
    const st = STATIC[path];
    if (st) {
      send(res, 200, st.type, readStatic(st.file), { 'Cache-Control': 'no-cache' });
      return;
    }
    switch (path) {
      case '/api/state':
        send(res, 200, 'application/json; charset=utf-8', await stateJson(), { 'Cache-Control': 'no-store' });
        return;
      case '/metrics': {
        const text = await renderMetrics();
        if (text === undefined) send(res, 404, 'text/plain; charset=utf-8', 'no metrics registry attached to this dashboard\n');
        else send(res, 200, PROMETHEUS_CONTENT_TYPE, text, { 'Cache-Control': 'no-store' });
        return;
      }
      case '/runbook':
      case '/operations': {
        const doc = DOCS[path];
        let md: string;
        try {
          md = readFileSync(doc.file, 'utf8');
        } catch {
          send(res, 404, 'text/plain; charset=utf-8', `docs${path}.md not found next to the package\n`);
          return;
        }
        const html = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${doc.title}</title>
<link rel="stylesheet" href="/style.css"></head><body class="runbook"><main>${renderMarkdown(md)}</main></body></html>`;
        send(res, 200, 'text/html; charset=utf-8', html, { 'Cache-Control': 'no-cache' });
        return;
      }
      case '/healthz':
        send(res, 200, 'text/plain; charset=utf-8', 'ok\n');
        return;
      case '/api/events': {
        res.writeHead(200, {
          'Content-Type': 'text/event-stream; charset=utf-8',
          'Cache-Control': 'no-store',
          Connection: 'keep-alive',
          ...SECURITY_HEADERS,
        });
        res.write(`retry: ${Math.max(1000, pushMs)}\n\n`);
        sseClients.add(res);
        let busy = false;
        const push = async () => {
          // A slow getState must not pile up pushes: skip a tick while one is in flight.
          if (busy) return;
          busy = true;
          try {
            res.write(`event: state\ndata: ${await stateJson()}\n\n`);
          } catch (err) {
            opts.logger?.warn('dashboard state for SSE failed', { err });
            res.write(`event: failure\ndata: ${JSON.stringify({ error: 'state unavailable' })}\n\n`);
          } finally {
            busy = false;
          }
        };
        await push();
        const timer = setInterval(() => void push(), pushMs);
        const done = () => {
          clearInterval(timer);
          sseClients.delete(res);
        };
        req.on('close', done);
        res.on('close', done);
        return;
      }
      default:
        send(res, 404, 'text/plain; charset=utf-8', `no such page: ${path}\n`);
    }
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      opts.logger?.error('dashboard request failed', { err, path: req.url });
      if (!res.headersSent) sendJson(res, 500, { error: 'dashboard state unavailable; see the node log' });
      else res.end();
    });
  });
  // SSE responses stay open: no request timeout for them, but keep headers timeout for slowloris.
  server.requestTimeout = 0;

  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) =>
      reject(new TransportError('DASHBOARD_LISTEN', `dashboard cannot listen on ${host}:${opts.port} (${err.code ?? err.message}); choose another port (qkd run --dashboard-port N, or 0 for any free port)`, { cause: err }));
    server.once('error', onError);
    server.listen(opts.port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const shownHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  opts.logger?.info('dashboard listening', { url: `http://${shownHost}:${port}/` });

  return {
    url: `http://${shownHost}:${port}/`,
    port,
    server,
    close: async () => {
      if (closed) return;
      closed = true;
      for (const c of sseClients) c.end();
      sseClients.clear();
      server.closeAllConnections?.();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
