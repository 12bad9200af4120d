#!/usr/bin/env python3
"""A man in the middle that only relays bytes: accepts on one side, connects to the server on the other, pumps.

With an mptcrypt daemon on the client, on this relay host and on the server, each leg is its own mptcrypt session:
client <-> relay has one sid, relay <-> server another. Encryption still "works" on both legs (the relay's daemon
decrypts and re-encrypts), which is exactly the attack tcpcrypt cannot stop by itself; the authentication schemes
catch it because every proof is bound to the sid of the leg it was made on:

    server$ python examples/echo_server.py --scheme signature --key server.key
    relay$  python examples/mitm_relay.py --listen 0.0.0.0:7007 --connect SERVER:7007
    client$ python examples/echo_client.py --scheme signature --connect RELAY --pin server.pub
            -> AUTHENTICATION FAILED (signature): the server's signature does not verify ... (exit status 1)

Connecting the client straight to the server succeeds. The relay prints both legs' sids (from its own daemon) so a
run shows they differ. --mptcp-in / --mptcp-out choose MPTCP per leg. The relay never parses or changes a byte.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading

from mptcrypt.auth import NotProtected, session_id_of


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def _sid_text(sock: socket.socket) -> str:
    try:
        return session_id_of(sock).hex()
    except NotProtected:
        return "none (leg not protected)"


def pump(src: socket.socket, dst: socket.socket, counter: list[int]) -> None:
    """Copy src to dst until EOF, then half-close dst so the far end sees EOF too."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
            counter[0] += len(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def relay(client: socket.socket, peer: str, args: argparse.Namespace) -> None:
    proto = socket.IPPROTO_MPTCP if args.mptcp_out else socket.IPPROTO_TCP
    host, port = _addr(args.connect)
    family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with client, socket.socket(family, socket.SOCK_STREAM, proto) as upstream:
        try:
            upstream.connect(addr)
        except OSError as exc:
            print(f"{peer}: cannot reach {args.connect}: {exc}", flush=True)
            return
        print(f"{peer}: client leg sid {_sid_text(client)}", flush=True)
        print(f"{peer}: server leg sid {_sid_text(upstream)}", flush=True)
        up, down = [0], [0]
        t = threading.Thread(target=pump, args=(client, upstream, up), daemon=True)
        t.start()
        pump(upstream, client, down)
        t.join()
        print(f"{peer}: closed ({up[0]} bytes to the server, {down[0]} to the client)", flush=True)


def serve(args: argparse.Namespace, on_listening=None) -> None:
    host, port = _addr(args.listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    proto = socket.IPPROTO_MPTCP if args.mptcp_in else socket.IPPROTO_TCP
    with socket.socket(family, socket.SOCK_STREAM, proto) as lsock:
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((host, port))
        lsock.listen(64)
        bound = lsock.getsockname()[1]
        print(f"relay listening on {host}:{bound}, forwarding to {args.connect}", flush=True)
        if on_listening:
            on_listening(bound)
        threads, served = [], 0
        while args.max_conns is None or served < args.max_conns:
            conn, peer = lsock.accept()
            served += 1
            t = threading.Thread(target=relay, args=(conn, f"{peer[0]}:{peer[1]}", args), daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", default="0.0.0.0:7007", help="HOST:PORT the client connects to")
    ap.add_argument("--connect", required=True, help="HOST:PORT of the real server")
    ap.add_argument("--mptcp-in", action="store_true", help="accept MPTCP on the client leg")
    ap.add_argument("--mptcp-out", action="store_true", help="connect with MPTCP on the server leg")
    ap.add_argument("--max-conns", type=int, default=None, help="exit after relaying this many connections")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        serve(parse_args(argv))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
