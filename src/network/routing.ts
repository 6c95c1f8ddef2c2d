/**
 * Source routing for the key relay: the site where a key is requested picks the whole path
 * (the hop message carries it, so no intermediate site can send a key into a loop).
 *
 * Candidate paths are the simple paths between two sites, fewest hops first (each hop consumes
 * link key and adds a trusted node), ties in a fixed order (lexicographic by site names) so both
 * tests and operators can predict the choice. Links the caller reports unusable (marked down
 * after a failure, or short of key) are left out. Enumeration is exhaustive up to `maxPaths`:
 * fine for the tens of sites a metropolitan trusted-node network has, not for a large mesh.
 */
import type { Topology } from './topology.ts';

/** Whether the link between sites x and y may be used now. */
export type LinkUsable = (x: string, y: string) => boolean;

/** Simple paths from `from` to `to` over usable links, shortest first; at most `maxPaths`. */
export function candidatePaths(t: Topology, from: string, to: string, usable: LinkUsable = () => true, maxPaths = 16): string[][] {
  if (from === to) return [];
  const adj = new Map<string, string[]>();
  for (const s of t.sites) adj.set(s, []);
  for (const l of t.links) {
    adj.get(l.a)!.push(l.b);
    adj.get(l.b)!.push(l.a);
  }
  for (const v of adj.values()) v.sort();
  // Breadth first over partial paths: every path of k hops is found before any of k + 1 hops.
  const out: string[][] = [];
  let frontier: string[][] = [[from]];
  while (frontier.length && out.length < maxPaths) {
    const next: string[][] = [];
    for (const p of frontier) {
      const last = p[p.length - 1];
      for (const n of adj.get(last) ?? []) {
        if (p.includes(n) || !usable(last, n)) continue;
        const q = [...p, n];
        if (n === to) out.push(q);
        else next.push(q);
      }
    }
    frontier = next;
  }
  return out.slice(0, maxPaths);
}

/** `A-B` for the link between x and y as the topology names it (order of the file). */
export function linkName(t: Topology, x: string, y: string): string {
  const l = t.links.find((k) => (k.a === x && k.b === y) || (k.a === y && k.b === x));
  return l ? l.id : `${x}-${y}`;
}
