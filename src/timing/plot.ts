/**
 * Plots of calibration results: an SVG file (self-contained, no dependencies) and a compact
 * terminal rendering, from one PlotSpec. Pure string functions; the CLI writes and prints them.
 */
export interface PlotSeries {
  name: string;
  x: number[];
  y: number[];
}

export interface PlotSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  series: PlotSeries[];
  logY?: boolean;
  /** Draw the first series as bars (categorical x). */
  bars?: boolean;
  /** Vertical marks (e.g. the chosen gate edges). */
  marks?: { x: number; label: string }[];
}

const COLOURS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function bounds(spec: PlotSpec): { x0: number; x1: number; y0: number; y1: number } {
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const s of spec.series) {
    for (let i = 0; i < s.x.length; i++) {
      const y = spec.logY ? Math.log10(Math.max(s.y[i], 0.5)) : s.y[i];
      if (!Number.isFinite(y)) continue;
      x0 = Math.min(x0, s.x[i]); x1 = Math.max(x1, s.x[i]);
      y0 = Math.min(y0, y); y1 = Math.max(y1, y);
    }
  }
  if (!Number.isFinite(x0)) { x0 = 0; x1 = 1; y0 = 0; y1 = 1; }
  if (!spec.logY) y0 = Math.min(y0, 0);
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) y1 = y0 + 1;
  if (spec.bars) { x0 -= 0.5; x1 += 0.5; }
  return { x0, x1, y0, y1 };
}

function fmt(v: number): string {
  const a = Math.abs(v);
  return a !== 0 && (a >= 1e5 || a < 1e-2) ? v.toExponential(1) : String(Math.round(v * 100) / 100);
}

/** An SVG document (640 x 400) of the spec. */
export function svgPlot(spec: PlotSpec): string {
  const W = 640, H = 400, L = 70, R = 20, T = 40, B = 50;
  const { x0, x1, y0, y1 } = bounds(spec);
  const sx = (x: number) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y: number) => H - B - (((spec.logY ? Math.log10(Math.max(y, 0.5)) : y) - y0) / (y1 - y0)) * (H - T - B);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="13">${esc(spec.title)}</text>`,
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`,
    `<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">${esc(spec.xLabel)}</text>`,
    `<text x="16" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 16 ${(T + H - B) / 2})">${esc(spec.yLabel)}${spec.logY ? ' (log)' : ''}</text>`,
  ];
  for (let k = 0; k <= 4; k++) {
    const xv = x0 + ((x1 - x0) * k) / 4;
    const yv = y0 + ((y1 - y0) * k) / 4;
    out.push(`<text x="${sx(xv)}" y="${H - B + 14}" text-anchor="middle">${fmt(xv)}</text>`);
    const yl = spec.logY ? 10 ** yv : yv;
    const ypix = H - B - ((yv - y0) / (y1 - y0)) * (H - T - B);
    out.push(`<text x="${L - 4}" y="${ypix + 4}" text-anchor="end">${fmt(yl)}</text>`);
  }
  spec.series.forEach((s, k) => {
    const col = COLOURS[k % COLOURS.length];
    if (spec.bars && k === 0) {
      const bw = ((W - L - R) / (x1 - x0)) * 0.6;
      s.x.forEach((x, i) => {
        const top = sy(s.y[i]);
        out.push(`<rect x="${sx(x) - bw / 2}" y="${top}" width="${bw}" height="${Math.max(H - B - top, 0)}" fill="${col}"/>`);
      });
    } else {
      const pts = s.x.map((x, i) => `${sx(x).toFixed(1)},${sy(s.y[i]).toFixed(1)}`).join(' ');
      out.push(`<polyline fill="none" stroke="${col}" stroke-width="1.2" points="${pts}"/>`);
    }
    out.push(`<text x="${W - R - 4}" y="${T + 12 + 14 * k}" text-anchor="end" fill="${col}">${esc(s.name)}</text>`);
  });
  for (const m of spec.marks ?? []) {
    out.push(`<line x1="${sx(m.x)}" y1="${T}" x2="${sx(m.x)}" y2="${H - B}" stroke="#555" stroke-dasharray="4 3"/>`);
    out.push(`<text x="${sx(m.x) + 3}" y="${T + 10}" fill="#555">${esc(m.label)}</text>`);
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/**
 * Compact terminal plot: `width` columns by `height` rows of block characters, one glyph per series
 * (the first series drawn last so it stays on top), with the axis ranges printed underneath.
 */
export function terminalPlot(spec: PlotSpec, width = 64, height = 12): string {
  const { x0, x1, y0, y1 } = bounds(spec);
  const grid: string[][] = Array.from({ length: height }, () => Array<string>(width).fill(' '));
  const glyphs = ['#', '*', '+', 'o', 'x', '%'];
  for (let k = spec.series.length - 1; k >= 0; k--) {
    const s = spec.series[k];
    // Per column keep the maximum value (a histogram's peak must not vanish between columns).
    const colMax = new Array<number>(width).fill(-Infinity);
    for (let i = 0; i < s.x.length; i++) {
      const c = Math.min(width - 1, Math.max(0, Math.floor(((s.x[i] - x0) / (x1 - x0)) * width)));
      const y = spec.logY ? Math.log10(Math.max(s.y[i], 0.5)) : s.y[i];
      if (y > colMax[c]) colMax[c] = y;
    }
    for (let c = 0; c < width; c++) {
      if (colMax[c] === -Infinity) continue;
      const level = Math.round(((colMax[c] - y0) / (y1 - y0)) * (height - 1));
      for (let r = 0; r <= level; r++) grid[height - 1 - r][c] = glyphs[k % glyphs.length];
    }
  }
  for (const m of spec.marks ?? []) {
    const c = Math.min(width - 1, Math.max(0, Math.floor(((m.x - x0) / (x1 - x0)) * width)));
    for (let r = 0; r < height; r++) if (grid[r][c] === ' ') grid[r][c] = '|';
  }
  const yTop = spec.logY ? 10 ** y1 : y1, yBot = spec.logY ? 10 ** y0 : y0;
  const lines = [spec.title];
  grid.forEach((row, r) => lines.push(`${r === 0 ? fmt(yTop).padStart(8) : r === height - 1 ? fmt(yBot).padStart(8) : ''.padStart(8)} |${row.join('')}`));
  lines.push(`${''.padStart(8)} +${'-'.repeat(width)}`);
  lines.push(`${''.padStart(9)} ${fmt(x0)}${spec.xLabel.padStart(Math.max(1, Math.floor(width / 2) - fmt(x0).length) + Math.floor(spec.xLabel.length / 2))}  ${fmt(x1)}`.trimEnd());
  if (spec.series.length > 1) lines.push(''.padStart(10) + spec.series.map((s, k) => `${glyphs[k % glyphs.length]} ${s.name}`).join('   '));
  return lines.join('\n') + '\n';
}
