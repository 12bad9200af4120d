"""The raw socket that sends segments the daemon makes itself (INIT1/INIT2, their retransmissions, held segments
released protected).

The core hands over complete IP packets; this module only picks the family from the version nibble and the
destination from the header. Every packet leaves with fwmark INJECT_MARK, which the first rule of MPTC-OUT returns
on, so the daemon never sees its own segments again. IPv4 uses IP_HDRINCL (the kernel still fills in the header
checksum, and the id if zero); an IPv6 IPPROTO_RAW socket always takes the full header.
"""

from __future__ import annotations

import errno
import socket

from mptcrypt.constants import INJECT_MARK
from mptcrypt.errors import DecodeError
from mptcrypt.wire.segment import destination as ip_destination

SNDBUF = 4 << 20  # room for a burst of released held segments
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)  # Linux <asm-generic/socket.h>; not exported by Python
# Keep DF but check a packet against the device MTU, not the learned path MTU: the daemon resends through here the
# segments that fit the path only because it reported the path MTU 12 bytes low (daemon/icmp_edge.py).
IP_PMTUDISC_PROBE = IPV6_PMTUDISC_PROBE = 3  # <linux/in.h>, <linux/in6.h>
IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)


def destination(packet: bytes) -> tuple[int, str]:
    """(family, destination address) from an IP packet's header. ValueError for anything else."""
    try:
        version, dst = ip_destination(packet)
    except DecodeError as exc:
        raise ValueError(str(exc)) from None
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    return family, socket.inet_ntop(family, dst)


def _open(family: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, socket.IPPROTO_RAW)
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_MTU_DISCOVER", 10), IP_PMTUDISC_PROBE)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_PROBE)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, INJECT_MARK)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SNDBUF)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
    return sock


class RawSocket:
    """`send(packet)` for IPv4 and IPv6 packets. Needs CAP_NET_RAW (and CAP_NET_ADMIN for SO_MARK)."""

    def __init__(self) -> None:
        self._v4 = _open(socket.AF_INET)
        try:
            self._v6: socket.socket | None = _open(socket.AF_INET6)
        except OSError as exc:  # IPv6 disabled in this kernel or namespace
            if exc.errno not in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
                self._v4.close()
                raise
            self._v6 = None

    def send(self, packet: bytes) -> None:
        """Send one IP packet. Raises ValueError for a malformed header, OSError when the kernel refuses it."""
        family, dst = destination(packet)
        if family == socket.AF_INET:
            self._v4.sendto(packet, (dst, 0))
        elif self._v6 is not None:
            self._v6.sendto(packet, (dst, 0, 0, 0))
        else:
            raise OSError(errno.EAFNOSUPPORT, "IPv6 is not available in this network namespace")

    def close(self) -> None:
        self._v4.close()
        if self._v6 is not None:
            self._v6.close()

    def __enter__(self) -> "RawSocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
