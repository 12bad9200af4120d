"""A minimal pcapng writer (one section, one Ethernet interface, Enhanced Packet Blocks with an optional
comment each) and a reader of classic pcap or pcapng captures: what `mptcrypt decrypt` needs.

Packet comments (EPB option opt_comment, pcapng spec §4.3) carry the per-packet verdict of a decrypted capture;
tshark shows them as `frame.comment`, and the mptcrypt dissector turns them into `mptcrypt.verdict`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator

from mptcrypt.errors import DecodeError

LINKTYPE_ETHERNET = 1
BT_SHB, BT_IDB, BT_EPB, BT_SPB = 0x0A0D0D0A, 0x00000001, 0x00000006, 0x00000003
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_ENDOFOPT, OPT_COMMENT, IF_TSRESOL = 0, 1, 9
PCAP_MAGIC_US, PCAP_MAGIC_NS = 0xA1B2C3D4, 0xA1B23C4D


@dataclass(frozen=True, slots=True)
class Frame:
    time: float  # seconds since the epoch
    data: bytes  # the link-layer frame
    comment: str | None = None


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad4(value)


def _block(block_type: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


def write_pcapng(out: BinaryIO, frames: Iterable[Frame], linktype: int = LINKTYPE_ETHERNET) -> int:
    """Write `frames` (microsecond timestamps) to `out`. Returns how many were written."""
    out.write(_block(BT_SHB, struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1)))
    out.write(_block(BT_IDB, struct.pack("<HHI", linktype, 0, 0) + _option(IF_TSRESOL, b"\x06")
                     + _option(OPT_ENDOFOPT, b"")))
    count = 0
    for frame in frames:
        usec = int(round(frame.time * 1_000_000))
        body = struct.pack("<IIIII", 0, usec >> 32, usec & 0xFFFFFFFF, len(frame.data), len(frame.data))
        body += _pad4(frame.data)
        if frame.comment:
            body += _option(OPT_COMMENT, frame.comment.encode()) + _option(OPT_ENDOFOPT, b"")
        out.write(_block(BT_EPB, body))
        count += 1
    return count


def read_frames(data: bytes) -> Iterator[Frame]:
    """The Ethernet frames of a little-endian classic pcap (µs or ns) or a pcapng capture (first interface's
    time resolution, µs by default)."""
    if len(data) < 24:
        raise DecodeError("not a capture: shorter than a pcap header")
    (magic,) = struct.unpack_from("<I", data)
    if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
        if struct.unpack_from("<I", data, 20)[0] != LINKTYPE_ETHERNET:
            raise DecodeError("only Ethernet captures are supported (tcpdump -i IFACE on a veth or Ethernet link)")
        scale = 1e-6 if magic == PCAP_MAGIC_US else 1e-9
        off = 24
        while off + 16 <= len(data):
            sec, frac, incl, _orig = struct.unpack_from("<IIII", data, off)
            yield Frame(sec + frac * scale, bytes(data[off + 16:off + 16 + incl]))
            off += 16 + incl
        return
    if magic != BT_SHB:
        raise DecodeError("not a little-endian pcap or pcapng capture")
    off, scale = 0, 1e-6
    while off + 12 <= len(data):
        block_type, length = struct.unpack_from("<II", data, off)
        if length < 12 or off + length > len(data):
            raise DecodeError(f"truncated pcapng block at offset {off}")
        body = data[off + 8:off + length - 4]
        if block_type == BT_IDB:
            if struct.unpack_from("<H", body)[0] != LINKTYPE_ETHERNET:
                raise DecodeError("only Ethernet captures are supported")
            opt = 8
            while opt + 4 <= len(body):
                code, olen = struct.unpack_from("<HH", body, opt)
                if code == IF_TSRESOL and olen == 1:
                    r = body[opt + 4]
                    scale = 2.0 ** -(r & 0x7F) if r & 0x80 else 10.0 ** -r
                if code == OPT_ENDOFOPT:
                    break
                opt += 4 + olen + (-olen % 4)
        elif block_type == BT_EPB:
            _if, hi, lo, incl, _orig = struct.unpack_from("<IIIII", body)
            yield Frame(((hi << 32) | lo) * scale, bytes(body[20:20 + incl]))
        off += length
