#!/usr/bin/env bash
# A/B of the whole emulated link at 25 km: two checkouts with their own native builds, runs
# alternated (the machine's load drifts; alternate, and compare medians of pairs).
#   git worktree add /tmp/qkd-base <commit> && ln -s "$PWD/node_modules" /tmp/qkd-base/ && (cd /tmp/qkd-base && npm run build:native)
#   scripts/link-ab.sh /tmp/qkd-base . 2 60
# Prints, per run: real-time factor, CPU ns per detection (whole run, steady) and CPU-s by process.
set -euo pipefail
A=${1:?base checkout}; B=${2:?new checkout}; PAIRS=${3:-2}; SECS=${4:-60}
for _ in $(seq 1 "$PAIRS"); do for dir in "$A" "$B"; do
  (cd "$dir" && QKD_LINK_BENCH_SECONDS=$SECS QKD_LINK_BENCH_KM=25 npm run bench -- link >/dev/null 2>&1)
  python3 - "$dir" <<'PY'
import json, os, sys
d = sys.argv[1]
r = {x['name']: x for x in json.load(open(os.path.join(d, 'bench/results.json')))}
c = r['link.25km.cpu_ns_per_detection']
st = r.get('link.25km.steady.cpu_ns_per_detection', {}).get('value')
print(os.path.abspath(d), 'factor', round(r['link.25km.real_time_factor']['value'], 3), 'cpu_ns', round(c['value'], 1),
      'steady', st and round(st, 1), c['params'].get('cpuSecondsByRole'), 'load', open('/proc/loadavg').read().split()[0], flush=True)
PY
done; done
