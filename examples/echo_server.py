#!/usr/bin/env python3
"""Echo server that authenticates every connection on its mptcrypt session ID, then echoes lines back.

Run it on a host where the mptcrypt daemon runs (the session ID comes from the daemon):

    python examples/echo_server.py --scheme password  --verifiers verifiers.txt
    python examples/echo_server.py --scheme signature --key server.key [--cert chain.pem]
    python examples/echo_server.py --scheme batch     --key server.key --batch-size 16 --batch-wait 0.005

Add --mptcp for an MPTCP listener. Credentials: examples/credentials.py. For every connection it prints the sid and
the outcome; a connection that is not protected (no sid) or fails authentication is closed without an echo.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mptcrypt.auth import (
    AuthenticationFailed,
    BatchProof,
    BatchSigner,
    NotProtected,
    Scheme,
    send_not_protected,
    server_password_auth,
    server_send_batch_proof,
    server_sign_auth,
    session_id_of,
)
from mptcrypt.auth.password import DEFAULT_SCRYPT, ScryptParams


def listen_socket(host: str, port: int, mptcp: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    proto = socket.IPPROTO_MPTCP if mptcp else socket.IPPROTO_TCP
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


class BatchService:
    """Collects the sids of connections waiting for their proof; signs when `size` are waiting or the oldest has
    waited `wait` seconds. The clock and the threads live here, not in BatchSigner."""

    def __init__(self, key, chain, size: int, wait: float) -> None:
        self._signer = BatchSigner(key, certificate_chain=chain)
        self._size, self._wait = size, wait
        self._lock = threading.Lock()
        self._waiters: list[tuple[threading.Event, list]] = []
        self._generation = 0

    def proof_for(self, sid: bytes) -> BatchProof:
        done, box = threading.Event(), []
        with self._lock:
            self._signer.add(sid)
            self._waiters.append((done, box))
            if len(self._signer) == 1:
                timer = threading.Timer(self._wait, self._flush, args=(self._generation,))
                timer.daemon = True
                timer.start()
            if len(self._signer) >= self._size:
                self._flush_locked()
        done.wait()
        return box[0]

    def _flush(self, generation: int) -> None:
        with self._lock:
            if generation == self._generation:  # not flushed by size in the meantime
                self._flush_locked()

    def _flush_locked(self) -> None:
        proofs, waiters = self._signer.flush(), self._waiters
        self._waiters = []
        self._generation += 1
        print(f"batch of {len(proofs)} signed ({self._signer.signatures} signatures so far)", flush=True)
        for (done, box), proof in zip(waiters, proofs, strict=True):
            box.append(proof)
            done.set()


def load_key(path: str):
    return serialization.load_pem_private_key(Path(path).read_bytes(), password=None)


def load_verifiers(path: str) -> dict[str, str]:
    out = {}
    for line in Path(path).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            user, verifier = line.split(" ", 1)
            out[user] = verifier.strip()
    return out


SCHEMES = {"password": Scheme.PASSWORD, "signature": Scheme.SIGNATURE, "batch": Scheme.BATCH}


def authenticate(conn: socket.socket, sid: bytes, args: argparse.Namespace, ctx: dict) -> str:
    """Run the chosen scheme on this sid; return a line describing the outcome."""
    if args.scheme == "password":
        user = server_password_auth(conn, ctx["verifiers"].get, sid=sid, decoy_realm=args.realm,
                                    decoy_params=ctx["params"])
        return f"client authenticated as {user!r}; server proved the password back"
    if args.scheme == "signature":
        server_sign_auth(conn, ctx["key"], sid=sid, certificate_chain=ctx["chain"])
        return "signature over the sid sent (the client verifies it)"
    proof = ctx["batch"].proof_for(sid)
    server_send_batch_proof(conn, proof)
    return f"batch proof sent (leaf {proof.leaf_index} of {proof.tree_size})"


def handle(conn: socket.socket, peer: str, args: argparse.Namespace, ctx: dict) -> None:
    with conn:
        try:
            sid = session_id_of(conn)  # asks the local mptcrypt daemon
        except NotProtected as exc:
            send_not_protected(conn, SCHEMES[args.scheme])  # the client waits for us: let it fail fast
            print(f"{peer}: NOT PROTECTED: {exc}", flush=True)
            return
        print(f"{peer}: sid {sid.hex()}", flush=True)
        try:
            print(f"{peer}: OK {args.scheme}: {authenticate(conn, sid, args, ctx)}", flush=True)
        except AuthenticationFailed as exc:
            print(f"{peer}: AUTHENTICATION FAILED ({args.scheme}): {exc}", flush=True)
            return
        conn.settimeout(args.idle_timeout)
        try:
            while data := conn.recv(4096):
                conn.sendall(data)
        except OSError:
            pass


def serve(args: argparse.Namespace, on_listening=None) -> None:
    ctx: dict = {"params": ScryptParams(args.log2_n, 8, 1) if args.log2_n else DEFAULT_SCRYPT}
    if args.scheme == "password":
        ctx["verifiers"] = load_verifiers(args.verifiers)
    else:
        ctx["key"] = load_key(args.key)
        ctx["chain"] = x509.load_pem_x509_certificates(Path(args.cert).read_bytes()) if args.cert else None
        if args.scheme == "batch":
            ctx["batch"] = BatchService(ctx["key"], ctx["chain"], args.batch_size, args.batch_wait)
    with listen_socket(args.listen, args.port, args.mptcp) as lsock:
        host, port = lsock.getsockname()[:2]
        print(f"echo server ({args.scheme}{', MPTCP' if args.mptcp else ''}) listening on {host}:{port}", flush=True)
        if on_listening:
            on_listening(port)
        threads = []
        served = 0
        while args.max_conns is None or served < args.max_conns:
            conn, peer = lsock.accept()
            served += 1
            t = threading.Thread(target=handle, args=(conn, f"{peer[0]}:{peer[1]}", args, ctx), daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scheme", choices=("password", "signature", "batch"), required=True)
    ap.add_argument("--listen", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=7007)
    ap.add_argument("--mptcp", action="store_true", help="listen with IPPROTO_MPTCP")
    ap.add_argument("--verifiers", help="password: file of `user verifier` lines (credentials.py add-user)")
    ap.add_argument("--realm", default="mptcrypt", help="password: realm announced for unknown users")
    ap.add_argument("--log2-n", type=int, default=None, help="password: scrypt n of unknown users' decoys")
    ap.add_argument("--key", help="signature/batch: PEM private key (Ed25519, ECDSA P-256/P-384, RSA)")
    ap.add_argument("--cert", help="signature/batch: PEM certificate chain, leaf first (clients with a CA bundle)")
    ap.add_argument("--batch-size", type=int, default=16, help="batch: sign when this many connections wait")
    ap.add_argument("--batch-wait", type=float, default=0.005, help="batch: or when the oldest waited this long")
    ap.add_argument("--max-conns", type=int, default=None, help="exit after this many connections")
    ap.add_argument("--idle-timeout", type=float, default=60.0)
    args = ap.parse_args(argv)
    if args.scheme == "password" and not args.verifiers:
        ap.error("--scheme password needs --verifiers")
    if args.scheme != "password" and not args.key:
        ap.error(f"--scheme {args.scheme} needs --key")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        serve(parse_args(argv))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
