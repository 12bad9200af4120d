#!/usr/bin/env python3
"""Echo client: connects, authenticates the connection on its mptcrypt session ID, then sends lines and prints the
echo. Run it on a host where the mptcrypt daemon runs:

    MPTCRYPT_PASSWORD=... python examples/echo_client.py --scheme password  --connect server --user alice
    python examples/echo_client.py --scheme signature --connect server --pin server.pub
    python examples/echo_client.py --scheme batch     --connect server --ca ca.pem --server-name server.example

Without MPTCRYPT_PASSWORD the password is asked for. Add --mptcp for an MPTCP connection. Exit status: 0 success,
1 authentication failed (wrong credentials, or a man in the middle), 2 connection not protected by mptcrypt.
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import sys

from mptcrypt.auth import (
    AuthenticationFailed,
    NotProtected,
    ParametersRefused,
    client_password_auth,
    client_verify_batch,
    client_verify_signature,
    session_id_of,
)
from mptcrypt.auth.password import DEFAULT_KDF_POLICY, KdfPolicy


def connect(host: str, port: int, mptcp: bool, timeout: float) -> socket.socket:
    proto = socket.IPPROTO_MPTCP if mptcp else socket.IPPROTO_TCP
    family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    sock.settimeout(timeout)
    sock.connect(addr)
    return sock


def authenticate(sock: socket.socket, sid: bytes, args: argparse.Namespace) -> str:
    if args.scheme == "password":
        password = os.environ.get("MPTCRYPT_PASSWORD") or getpass.getpass(f"password for {args.user}: ")
        policy = KdfPolicy(min_work=1 << args.min_log2_work) if args.min_log2_work is not None else DEFAULT_KDF_POLICY
        realm = client_password_auth(sock, args.user, password, sid=sid, expected_realm=args.realm, policy=policy)
        return f"mutual password authentication as {args.user!r} in realm {realm!r}"
    trust = {"pinned_key": args.pin} if args.pin else {"ca_bundle": args.ca, "server_name": args.server_name}
    if args.scheme == "signature":
        ident = client_verify_signature(sock, sid=sid, accept_batch=False, **trust)
    else:
        ident = client_verify_batch(sock, sid=sid, **trust)
    who = f"certificate {ident.certificate.subject.rfc4514_string()}" if ident.certificate else "the pinned key"
    batch = f", leaf {ident.batch[1]} of a batch of {ident.batch[0]}" if ident.batch else ""
    return f"server signature over the sid verified with {who}{batch}"


def run(args: argparse.Namespace) -> int:
    with connect(args.connect, args.port, args.mptcp, args.timeout) as sock:
        try:
            sid = session_id_of(sock)  # asks the local mptcrypt daemon
        except NotProtected as exc:
            print(f"NOT PROTECTED: {exc}", flush=True)
            return 2
        print(f"sid {sid.hex()}", flush=True)
        try:
            print(f"OK {args.scheme}: {authenticate(sock, sid, args)}", flush=True)
        except ParametersRefused as exc:
            print(f"AUTHENTICATION FAILED ({args.scheme}, nothing proved): {exc}", flush=True)
            return 1
        except AuthenticationFailed as exc:
            print(f"AUTHENTICATION FAILED ({args.scheme}): {exc}", flush=True)
            return 1
        for line in args.message:
            sock.sendall(line.encode() + b"\n")
            echo = b""
            while not echo.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                echo += chunk
            print(f"echo: {echo.decode(errors='replace').rstrip()}", flush=True)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scheme", choices=("password", "signature", "batch"), required=True)
    ap.add_argument("--connect", default="127.0.0.1", help="server host name or address")
    ap.add_argument("--port", type=int, default=7007)
    ap.add_argument("--mptcp", action="store_true", help="connect with IPPROTO_MPTCP")
    ap.add_argument("--user", help="password: user name")
    ap.add_argument("--realm", help="password: refuse any other realm")
    ap.add_argument("--min-log2-work", type=int, default=None,
                    help="password: lowest scrypt n*r*p accepted, as log2 (default 17; tests only: lower)")
    ap.add_argument("--pin", help="signature/batch: the server's public key (PEM, DER, or raw Ed25519 file)")
    ap.add_argument("--ca", help="signature/batch: PEM CA bundle (needs --server-name)")
    ap.add_argument("--server-name", help="signature/batch: the DNS name or IP the certificate must name")
    ap.add_argument("--message", action="append", default=None, help="line to echo (repeatable)")
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args(argv)
    if args.message is None:
        args.message = ["hello over an authenticated mptcrypt connection"]
    if args.scheme == "password" and not args.user:
        ap.error("--scheme password needs --user")
    if args.scheme != "password" and bool(args.pin) == bool(args.ca):
        ap.error(f"--scheme {args.scheme} needs exactly one of --pin and --ca")
    if args.ca and not args.server_name:
        ap.error("--ca needs --server-name")
    return args


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
