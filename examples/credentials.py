#!/usr/bin/env python3
"""Make the credentials the echo examples use: password verifiers for the server, signing key pairs.

    python examples/credentials.py add-user verifiers.txt alice --realm lab   # asks for the password
    python examples/credentials.py keypair server                             # server.key (0600) + server.pub

A verifiers file has one `user verifier` line per user; it holds no password, but a verifier lets whoever reads it
authenticate as that user to this server: keep it readable by the server only.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from mptcrypt.auth import PasswordVerifier, ScryptParams


def add_user(args: argparse.Namespace) -> int:
    if " " in args.user or not args.user:
        print("a user name has no spaces", file=sys.stderr)
        return 2
    password = os.environ.get("MPTCRYPT_PASSWORD") or getpass.getpass(f"password for {args.user}: ")
    verifier = PasswordVerifier.create(password, realm=args.realm, params=ScryptParams(args.log2_n, 8, 1))
    path = Path(args.file)
    lines = [ln for ln in (path.read_text().splitlines() if path.exists() else []) if ln.split(" ", 1)[0] != args.user]
    lines.append(f"{args.user} {verifier.to_string()}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{args.user}: verifier written to {path} (realm {args.realm!r}, scrypt n=2**{args.log2_n}, r=8, p=1)")
    return 0


def keypair(args: argparse.Namespace) -> int:
    key = ed25519.Ed25519PrivateKey.generate() if args.alg == "ed25519" else ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    fd = os.open(f"{args.prefix}.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    Path(f"{args.prefix}.pub").write_bytes(public)
    print(f"{args.prefix}.key: {args.alg} private key (server only); {args.prefix}.pub: pin it on clients")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("add-user", help="add or replace a user's password verifier")
    u.add_argument("file")
    u.add_argument("user")
    u.add_argument("--realm", default="mptcrypt")
    u.add_argument("--log2-n", type=int, default=15, help="scrypt cost: n = 2**LOG2_N (default 15)")
    u.set_defaults(run=add_user)
    k = sub.add_parser("keypair", help="write PREFIX.key and PREFIX.pub")
    k.add_argument("prefix")
    k.add_argument("--alg", choices=("ed25519", "p256"), default="ed25519")
    k.set_defaults(run=keypair)
    args = ap.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
