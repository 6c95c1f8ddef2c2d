#!/usr/bin/env python3
"""Where a link's CPU goes: a system-wide `perf` profile of `qkd run --emulated`, summed per process
(node-bob, node-alice, the KMSs, socat, idle) and per kind of work (the emulated lab, LDPC, sync,
V8's GC, the kernel, JavaScript by file, ...). Shares are of all samples on all cores, so they add
up to 100 % with idle. Needs `perf` (Debian package linux-perf) and a kernel that lets root sample.

    python3 scripts/profile-link.py [--km 25] [--seconds 50] [--skip 20] [--record 20]

The run starts, warms up for --skip seconds, is sampled for --record seconds at 199 Hz, then ends.
docs/run.md ("CPU per detection") shows what a profile of a 25 km run found.
"""
import argparse, collections, json, os, re, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def kind(sym, dso):
    if 'qkd-native' in dso:
        for k, name in (('qkd_ldpc', 'native: LDPC'), ('lab_', 'native: emulated lab'), ('emulated_', 'native: emulated lab'),
                        ('sync', 'native: sync'), ('sift', 'native: sift'), ('qkd_auth', 'native: channel MAC'),
                        ('toeplitz', 'native: privacy amplification'), ('gf2x', 'native: privacy amplification'),
                        ('sqlite', 'native: KMS store'), ('pulse_list', 'native: pulse lists'), ('records', 'native: tag records')):
            if k in sym:
                return name
        return 'native: other'
    if 'kernel' in dso:
        return 'kernel'
    if sym.startswith('JS:'):
        f = sym.split('file://')[-1].split(':')[0].replace(ROOT + '/', '')
        return 'JavaScript: ' + f
    if dso.endswith('/node') or dso == 'node':
        if any(k in sym for k in ('Marking', 'Scaveng', 'Sweep', 'Heap', 'Evacuat', 'MemoryChunk', 'RememberedSet', 'PointersUpdating', 'FreeList', 'Compactor')):
            return 'V8: garbage collector'
        if 'compiler' in sym or 'maglev' in sym.lower():
            return 'V8: compiler'
        if any(k in sym for k in ('EVP', 'SSL', 'ssl', 'ge_', 'fe_', 'sha', 'aes', 'gcm', 'OPENSSL', 'BN_', 'poly1305', 'salsa', 'chacha')):
            return 'node: OpenSSL (TLS, signatures)'
        if sym.startswith('Builtins_'):
            return 'V8: builtins'
        return 'V8/node: other'
    if 'libc' in dso:
        return 'libc'
    return os.path.basename(dso)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--km', type=float, default=25)
    ap.add_argument('--seconds', type=int, default=50)
    ap.add_argument('--skip', type=int, default=20)
    ap.add_argument('--record', type=int, default=20)
    ap.add_argument('--top', type=int, default=12)
    a = ap.parse_args()
    if a.skip + a.record + 5 > a.seconds:
        sys.exit('profile-link: --seconds must exceed --skip + --record by 5 s or more (the run must still be going)')
    d = tempfile.mkdtemp(prefix='qkd-profile-')
    run = subprocess.Popen(['node', '--perf-basic-prof-only-functions',
                            os.path.join(ROOT, 'bin', 'qkd.js'), 'run', '--emulated', '--json', '--dashboard-port', '0',
                            '--state-dir', os.path.join(d, 'state'), '--duration', str(a.seconds), '--distance-km', str(a.km),
                            '--seed', '12345', '--block-detections', '10000000'],
                           stdout=open(os.path.join(d, 'summary.json'), 'w'), stderr=open(os.path.join(d, 'run.log'), 'w'))
    time.sleep(a.skip)
    roles = {}
    for line in subprocess.run(['pgrep', '-af', 'qkd.js|socat'], capture_output=True, text=True).stdout.splitlines():
        pid, cmd = line.split(' ', 1)
        m = re.search(r'--config \S*/([a-zA-Z-]+)\.json', cmd)
        roles[pid] = m.group(1) if m else ('socat' if cmd.startswith('socat') else 'supervisor' if ' run ' in cmd else None)
    with open(os.path.join(d, 'roles.json'), 'w') as f:
        json.dump(roles, f)  # pid -> role, for `perf report --pid` on one process afterwards
    data = os.path.join(d, 'perf.data')
    rec = subprocess.run(['perf', 'record', '-F', '199', '-a', '-g', '-o', data, '--', 'sleep', str(a.record)], capture_output=True, text=True)
    if rec.returncode != 0:
        run.kill()
        sys.exit(f'profile-link: perf record failed (is perf installed, are you root?): {rec.stderr.strip()[-300:]}')
    run.wait()
    out = subprocess.run(['perf', 'script', '-i', data, '-F', 'pid,tid,ip,sym,dso', '-G'], capture_output=True, text=True).stdout
    per = collections.Counter()
    what = collections.defaultdict(collections.Counter)
    total = 0
    for line in out.splitlines():
        m = re.match(r'\s*(\d+)/(\d+)\s+\S+\s+(.*)\((.*)\)\s*$', line)
        if not m:
            continue
        pid, _, sym, dso = m.groups()
        who = 'idle' if pid == '0' else roles.get(pid) or 'other processes'
        per[who] += 1
        what[who][kind(sym.strip(), dso)] += 1
        total += 1
    try:
        s = json.load(open(os.path.join(d, 'summary.json')))
        print(f"run: {a.km} km, real-time factor {s.get('realTimeFactor', 0):.3f}, blocks {s.get('blocks')}")
    except (OSError, ValueError):
        print('run: no summary (see', os.path.join(d, 'run.log') + ')')
    print(f'{total} samples on all cores over {a.record} s; shares of all samples')
    for who, n in per.most_common():
        print(f'{100 * n / total:5.1f} %  {who}')
        for k, v in what[who].most_common(a.top):
            if who != 'idle' and 100 * v / total >= 0.2:
                print(f'          {100 * v / total:5.1f} %  {k}')
    print('perf data and the run state:', d)


if __name__ == '__main__':
    main()
