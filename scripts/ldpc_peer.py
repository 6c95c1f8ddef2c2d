#!/usr/bin/env python3
"""Independent peer decoder for bench/ldpc-peer.bench.ts: Joschka Roffe's `ldpc` package
(PyPI `ldpc`, v2 API `ldpc.BpDecoder`; `pip install ldpc`) decoding the same frames as ours.

usage: ldpc_peer.py DIR QBER MAX_ITER [BP_METHOD] [SCHEDULE] [MS_SCALING]

DIR holds (written by the bench; bits packed LSB first, as in src/core/ldpc.ts):
  meta.json            {"m", "keyBits", "punctured", "edges", ...} (scripts/ldpc-peer-export)
  h_rows.u32 h_cols.u32  COO of H: columns 0..k = key bits, k..k+p = punctured fill
  frames.json          {"frames": F, "keyBytes": KB, "syndromeBytes": SB}
  bob.bin              F x KB bytes: Bob's key frames (BSC at QBER from Alice's)
  syndrome.bin         F x SB bytes: Alice's syndromes (m bits each)
Writes DIR/peer_out.bin (F x KB bytes: the decoded key) and prints one JSON line: converged
flags, iterations, wall and CPU seconds of the decode loop (setup excluded: building H and the
decoder once, as our decoder builds its code once per process).

Bob's side, per frame: unknown error e on the k + p columns, prior QBER on key columns and 1/2 on
punctured ones; target syndrome = Alice's syndrome XOR H_key * Bob's key; BP on (H, target);
decoded key = Bob's key XOR e[:k]. Exit 3 with the install command if `ldpc` is missing.
"""
import json
import os
import sys
import time


def main() -> int:
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        import numpy as np
        import scipy.sparse as sp
        import ldpc
        from ldpc import BpDecoder
    except ImportError as e:
        print(f"ldpc_peer: {e}; install the peer with: python3 -m pip install ldpc", file=sys.stderr)
        return 3
    d, qber, max_iter = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    method = sys.argv[4] if len(sys.argv) > 4 else "product_sum"
    schedule = sys.argv[5] if len(sys.argv) > 5 else "serial"
    scaling = float(sys.argv[6]) if len(sys.argv) > 6 else 1.0
    meta = json.load(open(os.path.join(d, "meta.json")))
    fr = json.load(open(os.path.join(d, "frames.json")))
    m, k, p = meta["m"], meta["keyBits"], meta["punctured"]
    rows = np.fromfile(os.path.join(d, "h_rows.u32"), dtype="<u4").astype(np.int64)
    cols = np.fromfile(os.path.join(d, "h_cols.u32"), dtype="<u4").astype(np.int64)
    H = sp.csr_matrix((np.ones(len(rows), dtype=np.uint8), (rows, cols)), shape=(m, k + p))
    Hkey = H[:, :k].tocsr()
    channel = np.concatenate([np.full(k, qber), np.full(p, 0.5)])
    dec = BpDecoder(H, error_channel=channel, max_iter=max_iter, bp_method=method,
                    schedule=schedule, ms_scaling_factor=scaling, input_vector_type="syndrome")
    nf, kb, sb = fr["frames"], fr["keyBytes"], fr["syndromeBytes"]
    bob = np.fromfile(os.path.join(d, "bob.bin"), dtype=np.uint8).reshape(nf, kb)
    synd = np.fromfile(os.path.join(d, "syndrome.bin"), dtype=np.uint8).reshape(nf, sb)
    out = np.zeros((nf, kb), dtype=np.uint8)
    converged, iterations, syndrome_ok = [], [], []
    w0, c0 = time.perf_counter(), time.process_time()
    for i in range(nf):
        b = np.unpackbits(bob[i], bitorder="little")[:k]
        s = np.unpackbits(synd[i], bitorder="little")[:m]
        target = (s ^ (Hkey @ b.astype(np.int64)) % 2).astype(np.uint8)
        e = dec.decode(target)
        converged.append(bool(dec.converge))
        iterations.append(int(dec.iter))
        syndrome_ok.append(bool(np.array_equal((H @ e.astype(np.int64)) % 2, target)))
        out[i] = np.packbits(b ^ e[:k].astype(np.uint8), bitorder="little")
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    out.tofile(os.path.join(d, "peer_out.bin"))
    print(json.dumps({
        "peer": f"ldpc {getattr(ldpc, '__version__', '?')} BpDecoder",
        "bpMethod": method, "schedule": schedule, "msScaling": scaling, "maxIter": max_iter,
        "converged": converged, "iterations": iterations, "syndromeSatisfied": syndrome_ok,
        "wallS": wall, "cpuS": cpu,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
