"""TCP header and option list (RFC 9293 §3.1, RFC 7323 timestamps/window scale, RFC 2018 SACK).

`parse_options` and `encode_options` are exact inverses: every byte of the option area, padding and unknown
kinds included, survives a round trip. MPTCP (kind 30) and mptcrypt (kind 253) options are kept opaque here;
their bodies are decoded by `mptcrypt.wire.mptcp` and `mptcrypt.wire.messages`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from mptcrypt.constants import (
    TCP_MAX_OPTION_SPACE,
    TCPOPT_EOL,
    TCPOPT_MSS,
    TCPOPT_NOP,
    TCPOPT_SACK,
    TCPOPT_SACK_PERM,
    TCPOPT_TIMESTAMP,
    TCPOPT_WSCALE,
)
from mptcrypt.errors import DecodeError
from mptcrypt.wire.checksum import tcp_checksum

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
TCP_HEADER_LEN = 20
TCPOLEN_MSS = 4
TCPOLEN_WSCALE = 3
TCPOLEN_SACK_PERM = 2
TCPOLEN_TIMESTAMP = 10
TCPOLEN_SACK_BLOCK = 8

_HDR = struct.Struct("!HHIIHHHH")  # ports, seq, ack, offset+flags, window, checksum, urgent


@dataclass(slots=True)
class TCPOption:
    """One option: `kind` and `data` (the bytes after kind and length; empty for EOL and NOP).
    For EOL, `data` holds whatever follows it in the option area (padding), so encoding is exact."""

    kind: int
    data: bytes = b""

    def encode(self) -> bytes:
        if self.kind == TCPOPT_NOP:
            return b"\x01"
        if self.kind == TCPOPT_EOL:
            return b"\x00" + self.data
        return bytes((self.kind, len(self.data) + 2)) + self.data

    @property
    def size(self) -> int:
        return 1 + len(self.data) if self.kind in (TCPOPT_EOL, TCPOPT_NOP) else 2 + len(self.data)


def parse_options(raw: bytes) -> list[TCPOption]:
    opts: list[TCPOption] = []
    i, n = 0, len(raw)
    while i < n:
        kind = raw[i]
        if kind == TCPOPT_EOL:
            opts.append(TCPOption(TCPOPT_EOL, bytes(raw[i + 1:])))
            break
        if kind == TCPOPT_NOP:
            opts.append(TCPOption(TCPOPT_NOP))
            i += 1
            continue
        if i + 1 >= n:
            raise DecodeError(f"TCP option kind {kind} at offset {i} has no length byte")
        length = raw[i + 1]
        if length < 2 or i + length > n:
            raise DecodeError(f"TCP option kind {kind} at offset {i} has bad length {length} ({n - i} bytes left)")
        opts.append(TCPOption(kind, bytes(raw[i + 2:i + length])))
        i += length
    return opts


def encode_options(opts: list[TCPOption]) -> bytes:
    return b"".join(o.encode() for o in opts)


def pad_options(raw: bytes) -> bytes:
    """`raw` followed by NOPs up to a multiple of 4 bytes (the data offset counts 32-bit words)."""
    return raw + b"\x01" * (-len(raw) % 4)


def find_option(opts: list[TCPOption], kind: int) -> TCPOption | None:
    for o in opts:
        if o.kind == kind:
            return o
    return None


# --- typed values of the well-known options ------------------------------------------------------------

def mss_option(mss: int) -> TCPOption:
    return TCPOption(TCPOPT_MSS, struct.pack("!H", mss))


def wscale_option(shift: int) -> TCPOption:
    return TCPOption(TCPOPT_WSCALE, bytes((shift,)))


def timestamp_option(tsval: int, tsecr: int) -> TCPOption:
    return TCPOption(TCPOPT_TIMESTAMP, struct.pack("!II", tsval, tsecr))


def sack_option(blocks: list[tuple[int, int]]) -> TCPOption:
    return TCPOption(TCPOPT_SACK, b"".join(struct.pack("!II", left, right) for left, right in blocks))


_EXPECTED_LEN = {TCPOPT_MSS: TCPOLEN_MSS, TCPOPT_WSCALE: TCPOLEN_WSCALE, TCPOPT_SACK_PERM: TCPOLEN_SACK_PERM,
                 TCPOPT_TIMESTAMP: TCPOLEN_TIMESTAMP}


def option_value(opt: TCPOption):
    """MSS -> int, window scale -> int, SACK-permitted -> True, timestamps -> (tsval, tsecr),
    SACK -> [(left, right), ...]; any other kind -> its raw data."""
    expected = _EXPECTED_LEN.get(opt.kind)
    if expected is not None and opt.size != expected:
        raise DecodeError(f"TCP option kind {opt.kind} must be {expected} bytes, got {opt.size}")
    if opt.kind == TCPOPT_MSS:
        return struct.unpack("!H", opt.data)[0]
    if opt.kind == TCPOPT_WSCALE:
        return opt.data[0]
    if opt.kind == TCPOPT_SACK_PERM:
        return True
    if opt.kind == TCPOPT_TIMESTAMP:
        return struct.unpack("!II", opt.data)
    if opt.kind == TCPOPT_SACK:
        if not opt.data or len(opt.data) % TCPOLEN_SACK_BLOCK:
            raise DecodeError(f"SACK option data of {len(opt.data)} bytes is not a whole number of blocks")
        return [struct.unpack_from("!II", opt.data, k) for k in range(0, len(opt.data), TCPOLEN_SACK_BLOCK)]
    return opt.data


# --- the header -------------------------------------------------------------------------------------------

@dataclass(slots=True)
class TCPHeader:
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int  # the 12 bits after the data offset: 3 reserved/AE bits, then CWR..FIN
    window: int
    checksum: int = 0
    urgent: int = 0
    options: bytes = b""  # the raw option area (a multiple of 4 bytes)

    @property
    def header_len(self) -> int:
        return TCP_HEADER_LEN + len(self.options)

    def encode(self, payload: bytes = b"", src: bytes | None = None, dst: bytes | None = None) -> bytes:
        """Header + payload; with src/dst the checksum is computed, else `checksum` is written as is."""
        if len(self.options) % 4 or len(self.options) > TCP_MAX_OPTION_SPACE:
            raise DecodeError(f"TCP option area of {len(self.options)} bytes is not a multiple of 4 up to 40")
        off_flags = ((self.header_len // 4) << 12) | (self.flags & 0x0FFF)
        if src is None:
            return _HDR.pack(self.sport, self.dport, self.seq, self.ack, off_flags, self.window, self.checksum,
                             self.urgent) + self.options + payload
        seg = _HDR.pack(self.sport, self.dport, self.seq, self.ack, off_flags, self.window, 0, self.urgent)
        seg += self.options + payload
        csum = tcp_checksum(src, dst, seg)
        return seg[:16] + struct.pack("!H", csum) + seg[18:]


def parse_tcp(segment: bytes) -> tuple[TCPHeader, bytes]:
    """Decode a TCP segment into its header and payload."""
    if len(segment) < TCP_HEADER_LEN:
        raise DecodeError(f"TCP segment of {len(segment)} bytes is shorter than a header")
    sport, dport, seq, ack, off_flags, window, csum, urg = _HDR.unpack_from(segment)
    hlen = (off_flags >> 12) * 4
    if hlen < TCP_HEADER_LEN or hlen > len(segment):
        raise DecodeError(f"TCP data offset {hlen} does not fit a {len(segment)}-byte segment")
    return (TCPHeader(sport, dport, seq, ack, off_flags & 0x0FFF, window, csum, urg, bytes(segment[20:hlen])),
            bytes(segment[hlen:]))
