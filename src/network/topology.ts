/**
 * Topology files for `qkd run --emulated --topology FILE`: the sites of a trusted-node network,
 * the QKD links between them and the SAEs (applications) each site serves. JSON:
 *
 * ```json
 * {
 *   "sites": ["A", "B", "C"],
 *   "links": [["A", "B"], {"between": ["B", "C"], "distanceKm": 30}],
 *   "saes": {"A": ["saeA"], "C": ["saeC", "saeC2"]}
 * }
 * ```
 *
 * - `sites`: names of 1..16 letters/digits starting with a letter (they name certificates,
 *   folders and processes), at least two, no duplicates.
 * - `links`: pairs of distinct known sites, each pair once; `distanceKm` (optional) overrides the
 *   link preset's fibre length for that link. Every site must be reachable from every other.
 * - `saes` (optional): SAE ids per site; a site not named gets one SAE `sae<Site>`. An SAE id is
 *   unique in the network (the site serving it is found by its id).
 *
 * Errors name the file, the entry and what to write instead.
 */
import { readFileSync } from 'node:fs';
import { ConfigError } from '../errors.ts';

export interface TopologyLink {
  /** `A-B`, the two site names in the order given (used for folders and messages). */
  id: string;
  a: string;
  b: string;
  distanceKm?: number;
}

export interface Topology {
  sites: string[];
  links: TopologyLink[];
  /** SAE ids served at each site. */
  saes: Record<string, string[]>;
}

const SITE_RE = /^[A-Za-z][A-Za-z0-9]{0,15}$/;
const SAE_RE = /^[A-Za-z0-9._-]{1,64}$/;

/** Reads and checks a topology file (see the module comment for the format). */
export function readTopology(file: string): Topology {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError('TOPOLOGY_FILE', `cannot read the topology file ${file}: ${(err as Error).message}`, { cause: err });
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new ConfigError('TOPOLOGY_FILE', `the topology file ${file} is not valid JSON (${(err as Error).message}); ` +
      'see docs/network.md for the format', { cause: err });
  }
  return parseTopology(v, file);
}

/** Checks a parsed topology document; `where` names it in errors. */
export function parseTopology(v: unknown, where = 'topology'): Topology {
  const fail = (msg: string): never => {
    throw new ConfigError('TOPOLOGY_INVALID', `${where}: ${msg} (docs/network.md, "Topology files")`);
  };
  if (!v || typeof v !== 'object' || Array.isArray(v)) fail('must be a JSON object {"sites": [...], "links": [...]}');
  const doc = v as Record<string, unknown>;
  const unknown = Object.keys(doc).filter((k) => !['sites', 'links', 'saes', 'description'].includes(k));
  if (unknown.length) fail(`unknown field(s) ${unknown.join(', ')}; the fields are sites, links, saes, description`);
  if (!Array.isArray(doc.sites) || doc.sites.length < 2) fail('"sites" must be an array of at least two site names');
  const sites = doc.sites as unknown[];
  sites.forEach((s, i) => {
    if (typeof s !== 'string' || !SITE_RE.test(s)) {
      fail(`sites[${i}] ${JSON.stringify(s)} is not a site name: 1-16 letters or digits, starting with a letter`);
    }
  });
  const names = sites as string[];
  const dup = names.find((s, i) => names.indexOf(s) !== i);
  if (dup) fail(`site ${dup} is listed twice`);
  if (!Array.isArray(doc.links) || !doc.links.length) fail('"links" must be a non-empty array of ["A", "B"] pairs');
  const links: TopologyLink[] = [];
  const seen = new Set<string>();
  (doc.links as unknown[]).forEach((l, i) => {
    let pair: unknown;
    let distanceKm: number | undefined;
    if (Array.isArray(l)) pair = l;
    else if (l && typeof l === 'object') {
      const o = l as Record<string, unknown>;
      const extra = Object.keys(o).filter((k) => k !== 'between' && k !== 'distanceKm');
      if (extra.length) fail(`links[${i}] has unknown field(s) ${extra.join(', ')}; a link is {"between": ["A", "B"], "distanceKm": 25}`);
      pair = o.between;
      if (o.distanceKm !== undefined) {
        if (typeof o.distanceKm !== 'number' || !(o.distanceKm >= 0 && o.distanceKm <= 500)) {
          fail(`links[${i}].distanceKm must be a number of kilometres 0..500, got ${JSON.stringify(o.distanceKm)}`);
        }
        distanceKm = o.distanceKm as number;
      }
    } else fail(`links[${i}] must be a pair ["A", "B"] or {"between": ["A", "B"]}`);
    if (!Array.isArray(pair) || pair.length !== 2 || !pair.every((x) => typeof x === 'string')) {
      fail(`links[${i}] must name exactly two sites, e.g. ["A", "B"]`);
    }
    const [a, b] = pair as string[];
    for (const s of [a, b]) if (!names.includes(s)) fail(`links[${i}] names site ${JSON.stringify(s)}, which is not in "sites"`);
    if (a === b) fail(`links[${i}] joins site ${a} to itself`);
    const key = [a, b].sort().join('|');
    if (seen.has(key)) fail(`links[${i}]: sites ${a} and ${b} are already linked (one link per pair of sites)`);
    seen.add(key);
    links.push({ id: `${a}-${b}`, a, b, ...(distanceKm !== undefined ? { distanceKm } : {}) });
  });
  // Every site reachable from the first: a site nobody can reach could never get a relayed key.
  const reach = new Set([names[0]]);
  for (let grew = true; grew;) {
    grew = false;
    for (const l of links) {
      if (reach.has(l.a) !== reach.has(l.b)) {
        reach.add(l.a);
        reach.add(l.b);
        grew = true;
      }
    }
  }
  const cut = names.filter((s) => !reach.has(s));
  if (cut.length) fail(`site(s) ${cut.join(', ')} have no path of links to ${names[0]}; add a link`);
  const saes: Record<string, string[]> = {};
  const given = doc.saes;
  if (given !== undefined && (!given || typeof given !== 'object' || Array.isArray(given))) {
    fail('"saes" must be an object {"A": ["saeA"], ...}');
  }
  const g = (given ?? {}) as Record<string, unknown>;
  for (const k of Object.keys(g)) if (!names.includes(k)) fail(`saes names site ${JSON.stringify(k)}, which is not in "sites"`);
  const all = new Set<string>();
  for (const s of names) {
    const list = g[s] ?? [`sae${s}`];
    if (!Array.isArray(list) || !list.length) fail(`saes.${s} must be a non-empty array of SAE ids`);
    for (const id of list as unknown[]) {
      if (typeof id !== 'string' || !SAE_RE.test(id)) fail(`saes.${s}: ${JSON.stringify(id)} is not an SAE id (letters, digits, . _ -)`);
      if (all.has(id as string)) fail(`SAE id ${id} is used twice; an SAE id names one application at one site`);
      if ((id as string).startsWith('site') || (id as string).startsWith('relay')) {
        fail(`SAE id ${id} starts with "site" or "relay", which name the KMSs themselves; choose another`);
      }
      all.add(id as string);
    }
    saes[s] = list as string[];
  }
  return { sites: names, links, saes };
}

/** The site serving SAE `sae`, or undefined. */
export function siteOfSae(t: Topology, sae: string): string | undefined {
  return t.sites.find((s) => t.saes[s].includes(sae));
}

/** The link between two sites (either order), or undefined. */
export function linkBetween(t: Topology, x: string, y: string): TopologyLink | undefined {
  return t.links.find((l) => (l.a === x && l.b === y) || (l.a === y && l.b === x));
}

/** Certificate CN of a site's KMS. */
export const siteIdentity = (site: string): string => `site${site}`;
