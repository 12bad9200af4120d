"""Forged segments built fast, for the rows that send many of them (blind-init, join-index-dos, syn-flood).

scapy takes ~1 ms to build a frame; a flood of 100,000 SYNs needs them prebuilt with the wire codecs (~10 µs each,
`wire.rewrite.daemon_segment`: the same builder the daemons use for their own segments) and then sent in a tight
loop on the attacker's AF_PACKET tap. Runs in the attacker's namespace.

Spoofed sources come from SPOOF_NET (10.99.0.0/16): no interface of the lab has an address there, the server routes
its answers to them to the attacker's address (`reply_route`), so nothing leaves the project's namespaces.
"""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import struct
import time

from mptcrypt.constants import JOIN_PROOF_LEN
from mptcrypt.wire import messages as m
from mptcrypt.wire.mptcp import MptcpOption, encode_mptcp
from mptcrypt.wire.rewrite import daemon_segment
from mptcrypt.wire.tcp import SYN

SPOOF_NET = ipaddress.ip_network("10.99.0.0/16")
ETH = struct.Struct("!6s6sH")
ETH_P_IP = 0x0800
MSS = struct.pack("!BBH", 2, 4, 1460)
SACK_PERM = bytes((4, 2))
WSCALE = bytes((1, 3, 3, 7))  # NOP + window scale 7


def spoofed_source(rng: random.Random) -> tuple[str, int]:
    """A random address of SPOOF_NET (not its network or broadcast address) and a random ephemeral port."""
    host = rng.randrange(1, SPOOF_NET.num_addresses - 1)
    return str(SPOOF_NET.network_address + host), rng.randrange(1024, 65536)


def hello_syn(src: str, sport: int, dst: str, dport: int, isn: int) -> bytes:
    """An MPTCP client's SYN as an mptcrypt daemon sends it: MP_CAPABLE and HELLO (IPv4 packet)."""
    opts = MSS + SACK_PERM + WSCALE + encode_mptcp(MptcpOption.mpc_syn()) + m.Hello().encode()
    return daemon_segment(socket.inet_aton(src), sport, socket.inet_aton(dst), dport, isn, 0, SYN, opts, b"")


def join_syn(src: str, sport: int, dst: str, dport: int, isn: int, token: int, index: int, proof: bytes,
             addr_id: int = 7) -> bytes:
    """An MP_JOIN SYN for `token` with an mptcrypt NEXTK1 join proof at key `index` (IPv4 packet)."""
    opts = MSS + encode_mptcp(MptcpOption.mpj_syn(token, random.getrandbits(32), addr_id)) \
        + m.NextK1Join(index, proof).encode()
    return daemon_segment(socket.inet_aton(src), sport, socket.inet_aton(dst), dport, isn, 0, SYN, opts, b"")


def resolve_macs(addrs: list[str], timeout: float = 1.0) -> dict[str, bytes]:
    """address -> link address, from this namespace's ARP table (a datagram to the discard port makes the kernel
    resolve each address first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for a in addrs:
            s.sendto(b"", (a, 9))
    found: dict[str, bytes] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open("/proc/net/arp") as fh:
            for line in fh.read().splitlines()[1:]:
                f = line.split()
                if len(f) >= 4 and f[0] in addrs and f[3] != "00:00:00:00:00:00":
                    found[f[0]] = bytes.fromhex(f[3].replace(":", ""))
        if len(found) == len(addrs):
            break
        time.sleep(0.02)
    return found


def frames(packets: list[bytes], dst_mac: bytes, src_mac: bytes) -> list[bytes]:
    head = ETH.pack(dst_mac, src_mac, ETH_P_IP)
    return [head + p for p in packets]


def blast(tap, frames_: list[bytes], rate: float | None = None) -> dict:
    """Send every frame on the tap's socket as fast as it takes them (or at about `rate` frames a second).
    Returns what was sent and how long it took."""
    send = tap.sock.send
    sent = errors = 0
    t0 = time.monotonic()
    step = 256  # frames between two pacing checks
    for i in range(0, len(frames_), step):
        for f in frames_[i:i + step]:
            try:
                send(f)
                sent += 1
            except OSError:  # ENOBUFS: the veth queue was full; a flood loses some, the count says how many
                errors += 1
        if rate:
            ahead = t0 + (i + step) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    seconds = time.monotonic() - t0
    tap.sent += sent
    return {"sent": sent, "send_errors": errors, "seconds": round(seconds, 3),
            "rate_per_s": round(sent / seconds) if seconds > 0 else None}


def random_proof() -> bytes:
    """A NEXTK1 proof an attacker without the session secret can send: random bytes."""
    return os.urandom(JOIN_PROOF_LEN)
