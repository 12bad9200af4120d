"""Internet checksum (RFC 1071) for IPv4 headers and TCP segments.

The one's-complement sum of 16-bit words equals the big-endian integer of the bytes modulo 0xFFFF, because
2**16 == 1 (mod 0xFFFF). CPython's big-integer modulo runs in C, so this is ~20x faster than a word loop.
"""

from __future__ import annotations

_M = 0xFFFF


def ones_sum(data: bytes) -> int:
    """One's-complement sum (mod 0xFFFF) of `data` read as big-endian 16-bit words, odd length zero-padded."""
    n = int.from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8
    return n % _M


def finish(total: int) -> int:
    """Checksum field value for a one's-complement sum (0 is sent as 0xFFFF; both mean zero, RFC 1624)."""
    return _M - (total % _M)


def ipv4_header_checksum(header: bytes) -> int:
    """Checksum of an IPv4 header whose checksum field is zero."""
    return finish(ones_sum(header))


def tcp_checksum(src: bytes, dst: bytes, segment: bytes) -> int:
    """TCP checksum over the pseudo-header (RFC 9293 §3.1, RFC 8200 §8.1) and `segment` (checksum field zero)."""
    length = len(segment)
    if len(src) == 4:
        pseudo = int.from_bytes(src + dst, "big") + 6 + length
    else:
        pseudo = int.from_bytes(src + dst, "big") + (length >> 16) + (length & _M) + 6
    return finish(pseudo + ones_sum(segment))


def verify_tcp_checksum(src: bytes, dst: bytes, segment: bytes) -> bool:
    """True when `segment` (checksum field as received) sums to zero with its pseudo-header."""
    length = len(segment)
    if len(src) == 4:
        pseudo = int.from_bytes(src + dst, "big") + 6 + length
    else:
        pseudo = int.from_bytes(src + dst, "big") + (length >> 16) + (length & _M) + 6
    return (pseudo + ones_sum(segment)) % _M == 0
