"""IPv4 (RFC 791) and IPv6 (RFC 8200) headers: parse what the core needs, rebuild with new lengths.

Only packets whose transport is TCP directly after the IP header matter to mptcrypt; an IPv6 packet with
extension headers before TCP, or a fragment, is reported as "not TCP" and passed through untouched.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from mptcrypt.errors import DecodeError
from mptcrypt.wire.checksum import ipv4_header_checksum

IPPROTO_TCP = 6
IPV4_MIN_HEADER_LEN = 20
IPV6_HEADER_LEN = 40
IPV4_FLAG_DF = 0x4000
IPV4_FRAG_MASK = 0x3FFF  # MF flag + fragment offset
DEFAULT_TTL = 64

_V4 = struct.Struct("!BBHHHBBH4s4s")
_V6 = struct.Struct("!IHBB16s16s")
_LEN_CSUM = struct.Struct("!H")
_V4_LEN_CSUM = struct.Struct("!2sH6sH8s")  # version..tos, total length, id..proto, checksum, addresses


@dataclass(slots=True)
class IPHeader:
    """Decoded IP header. `header` keeps the original bytes (options included) for a faithful rebuild."""

    version: int
    src: bytes  # 4 or 16 bytes
    dst: bytes
    proto: int
    header_len: int
    total_len: int  # header + transport bytes
    ttl: int = DEFAULT_TTL
    header: bytes = b""
    fragment: bool = False


def parse_ip(packet: bytes) -> IPHeader:
    """Decode the IP header of `packet`; DecodeError when it is truncated or inconsistent."""
    if not packet:
        raise DecodeError("empty packet")
    version = packet[0] >> 4
    if version == 4:
        if len(packet) < IPV4_MIN_HEADER_LEN:
            raise DecodeError(f"IPv4 packet of {len(packet)} bytes is shorter than a header")
        vihl, _tos, total, _id, frag, ttl, proto, _csum, src, dst = _V4.unpack_from(packet)
        ihl = (vihl & 0x0F) * 4
        if ihl < IPV4_MIN_HEADER_LEN or total < ihl or total > len(packet):
            raise DecodeError(f"IPv4 header length {ihl} / total length {total} do not fit {len(packet)} bytes")
        return IPHeader(4, src, dst, proto, ihl, total, ttl, packet[:ihl], bool(frag & IPV4_FRAG_MASK))
    if version == 6:
        if len(packet) < IPV6_HEADER_LEN:
            raise DecodeError(f"IPv6 packet of {len(packet)} bytes is shorter than a header")
        _vtcfl, plen, nxt, hlim, src, dst = _V6.unpack_from(packet)
        if IPV6_HEADER_LEN + plen > len(packet):
            raise DecodeError(f"IPv6 payload length {plen} exceeds the {len(packet)}-byte packet")
        return IPHeader(6, src, dst, nxt, IPV6_HEADER_LEN, IPV6_HEADER_LEN + plen, hlim, packet[:IPV6_HEADER_LEN])
    raise DecodeError(f"IP version {version} is neither 4 nor 6")


def rebuild_ip_header(header: bytes, transport_len: int) -> bytes:
    """`header` (as received) with its length fields set for `transport_len` bytes after it and, for
    IPv4, the header checksum updated for the new length (RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'))."""
    if len(header) == IPV4_MIN_HEADER_LEN:
        a, old_len, b, old_csum, c = _V4_LEN_CSUM.unpack(header)
        new_len = IPV4_MIN_HEADER_LEN + transport_len
        total = (~old_csum & 0xFFFF) + (~old_len & 0xFFFF) + new_len
        total = (total & 0xFFFF) + (total >> 16)
        total = (total & 0xFFFF) + (total >> 16)
        return _V4_LEN_CSUM.pack(a, new_len, b, ~total & 0xFFFF, c)
    if header[0] >> 4 == 4:  # IPv4 with options
        return rebuild_ip_header(header[:IPV4_MIN_HEADER_LEN], transport_len + len(header) - IPV4_MIN_HEADER_LEN) \
            + header[IPV4_MIN_HEADER_LEN:]
    # IPv6: the payload length counts any extension headers kept in `header` (RFC 8200 §3)
    return header[:4] + _LEN_CSUM.pack(transport_len + len(header) - IPV6_HEADER_LEN) + header[6:]


def build_ip_header(src: bytes, dst: bytes, transport_len: int, ttl: int = DEFAULT_TTL, ident: int = 0) -> bytes:
    """A fresh IP header for a daemon-made TCP segment (IPv4 with DF, or IPv6 by the address size)."""
    if len(src) == 4:
        h = bytearray(_V4.pack(0x45, 0, IPV4_MIN_HEADER_LEN + transport_len, ident, IPV4_FLAG_DF, ttl,
                               IPPROTO_TCP, 0, src, dst))
        struct.pack_into("!H", h, 10, ipv4_header_checksum(h))
        return bytes(h)
    return _V6.pack(6 << 28, transport_len, IPPROTO_TCP, ttl, src, dst)
