#!/usr/bin/env python3
"""Batch signing of session IDs vs one signature per connection (issue 7; seed: "sign a batch of session IDs and
send the batch and sig to many clients").

For each key type and batch size B, a trial authenticates `--conns` connections on the server side: add their sids
to a BatchSigner, flush every B (one signature per batch), encode every client's BATCH_SIGNATURE frame. "single" is
the one-signature-per-connection scheme (SIGNATURE frames, no Merkle tree). Reported per row, medians of `--trials`:

    server conn/s   connections authenticated per second by one core (sign + tree + proofs + encoding)
    sig/s           signatures made per second while doing so (= conn/s / B)
    client verify/s proofs a client core checks per second (parse + Merkle path + signature verify)
    bytes           the frame each client receives

It also prints each key type's raw signatures/s and verifications/s. Pure CPU, no sockets, no daemon: what
batching buys is the signing cost, which this isolates. Batching does not help the client: it still verifies one
signature (plus a Merkle path of log2(B) hashes) per connection.

    python bench/bench_auth.py [--json results.json] [--trials 7] [--conns 1024] [--algs ed25519,p256,rsa2048]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import cryptography
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from mptcrypt.auth import BatchSigner, ServerTrust, sign_sid, verify_batch_proof, verify_sid_signature
from mptcrypt.auth.wire import HEADER_LEN, BatchSignatureMsg, SignatureMsg

KEYGEN = {
    "ed25519": ed25519.Ed25519PrivateKey.generate,
    "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "rsa2048": lambda: rsa.generate_private_key(65537, 2048),
}
BATCH_SIZES = (1, 16, 64, 256)


def server_single(key, sids):
    return [sign_sid(key, s).encode() for s in sids]


def server_batch(key, sids, size):
    signer = BatchSigner(key)
    frames = []
    for i, s in enumerate(sids, 1):
        signer.add(s)
        if i % size == 0:
            frames += [p.encode() for p in signer.flush()]
    frames += [p.encode() for p in signer.flush()]
    return frames, signer.signatures


def client_verify(frames, sids, trust, batch: bool, limit: int):
    for frame, sid in zip(frames[:limit], sids[:limit], strict=True):
        if batch:
            verify_batch_proof(BatchSignatureMsg.parse(frame[HEADER_LEN:]), sid, trust)
        else:
            verify_sid_signature(SignatureMsg.parse(frame[HEADER_LEN:]), sid, trust)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def one_trial(key, size, conns, verify_n, trust):
    """One trial of one row: (server conn/s, signatures/s, client verify/s, frame bytes)."""
    sids = [os.urandom(32) for _ in range(conns)]
    if size is None:
        dt, frames = timed(lambda: server_single(key, sids))
        sigs = conns
    else:
        dt, (frames, sigs) = timed(lambda: server_batch(key, sids, size))
    n = min(verify_n, conns)
    vt, _ = timed(lambda: client_verify(frames, sids, trust, size is not None, n))
    return conns / dt, sigs / dt, n / vt, statistics.median(len(f) for f in frames)


def bench_rows(keys, conns, trials, verify_n):
    """Trials round-robin over every (key, batch size), so that load from other processes spreads over all rows
    instead of skewing the rows that happened to run during it; medians per row."""
    cells = [(alg, key, size) for alg, key in keys.items() for size in (None, *BATCH_SIZES)]
    samples = {i: [] for i in range(len(cells))}
    trusts = {alg: ServerTrust(pinned_key=key.public_key()) for alg, key in keys.items()}
    for _ in range(trials):
        for i, (alg, key, size) in enumerate(cells):
            samples[i].append(one_trial(key, size, conns, verify_n, trusts[alg]))
    rows = []
    for i, (alg, _, size) in enumerate(cells):
        server, sigs, verify, size_bytes = (statistics.median(col) for col in zip(*samples[i], strict=True))
        rows.append({"alg": alg, "batch": "single" if size is None else size, "server_conns_per_s": server,
                     "signatures_per_s": sigs, "client_verifies_per_s": verify, "bytes_per_client": size_bytes,
                     "trials": trials, "conns_per_trial": conns})
    return rows


def bench_primitive(alg, key, trials, n=200):
    """Raw signature operations per second for this key type (the cost batching divides)."""
    from mptcrypt.auth.signature import sign, verify

    msg = b"mptcrypt sid signature v1" + bytes(32)
    signs, verifies = [], []
    for _ in range(trials):
        dt, sigs = timed(lambda: [sign(key, msg) for _ in range(n)])  # noqa: B023
        signs.append(n / dt)
        alg_id, sig = sigs[0]
        dt, _ = timed(lambda: [verify(key.public_key(), alg_id, sig, msg) for _ in range(n)])  # noqa: B023
        verifies.append(n / dt)
    return {"alg": alg, "sign_per_s": statistics.median(signs), "verify_per_s": statistics.median(verifies)}


def print_table(rows):
    headers = ["alg", "batch", "server conn/s", "sig/s", "client verify/s", "bytes", "vs single"]
    base = {r["alg"]: r["server_conns_per_s"] for r in rows if r["batch"] == "single"}
    lines = [[r["alg"], str(r["batch"]), f"{r['server_conns_per_s']:,.0f}", f"{r['signatures_per_s']:,.0f}",
              f"{r['client_verifies_per_s']:,.0f}", f"{r['bytes_per_client']:.0f}",
              f"x{r['server_conns_per_s'] / base[r['alg']]:.1f}" if r["alg"] in base else "-"] for r in rows]
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="mptcrypt.auth: batch signing vs one signature per connection (medians)")
        for h in headers:
            table.add_column(h, justify="left" if h in ("alg", "batch") else "right")
        for line in lines:
            table.add_row(*line)
        Console().print(table)
    except ImportError:
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        for line in lines:
            print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--algs", default="ed25519,p256,rsa2048", help="comma list of " + ",".join(KEYGEN))
    ap.add_argument("--trials", type=int, default=7)
    ap.add_argument("--conns", type=int, default=1024, help="connections per trial (a multiple of 256 is fairest)")
    ap.add_argument("--verify", type=int, default=256, help="client verifications timed per trial")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)
    keys = {alg: KEYGEN[alg]() for alg in args.algs.split(",")}
    primitives = [bench_primitive(alg, key, args.trials) for alg, key in keys.items()]
    rows = bench_rows(keys, args.conns, args.trials, args.verify)
    for p in primitives:
        print(f"{p['alg']:8} primitive: {p['sign_per_s']:,.0f} signatures/s, {p['verify_per_s']:,.0f} verifications/s"
              " (one core, median)")
    print_table(rows)
    if args.json:
        result = {
            "bench": "auth_batch_signing",
            "python": platform.python_version(),
            "cryptography": cryptography.__version__,
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "primitives": primitives,
            "rows": rows,
        }
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
