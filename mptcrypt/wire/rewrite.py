"""Option rewriting for unprotected segments (SYN, SYN-ACK) and daemon-made segments (INIT1/INIT2, RST).

Protected segments never come here: `crypto/segment.SegmentCipher` seals and opens them. Both share
`crypto/segment.assemble`, which reads the IP version and recomputes lengths and checksums.
"""

from __future__ import annotations

import struct

from mptcrypt.constants import (MSS_CLAMP, TCP_MAX_OPTION_SPACE, TCPOPT_EOL, TCPOPT_MPTCP, TCPOPT_MSS, TCPOPT_NOP,
                                TCPOPT_SACK, TCPOPT_TIMESTAMP, TCPOPT_WSCALE)
from mptcrypt.crypto.segment import assemble
from mptcrypt.errors import DecodeError
from mptcrypt.wire.checksum import tcp_checksum
from mptcrypt.wire.ip import build_ip_header
from mptcrypt.wire.mptcp import parse_mptcp
from mptcrypt.wire.segment import Segment
from mptcrypt.wire.tcp import (RST, ACK, TCP_HEADER_LEN, TCPOLEN_MSS, TCPOLEN_SACK_BLOCK, TCPOption, encode_options,
                               pad_options, parse_options)

MIN_MSS = 536  # RFC 9293 §3.7.1 default send MSS: never clamp below it
_TCP = struct.Struct("!HHIIHHHH")
_CSUM = struct.Struct("!H")
DAEMON_WINDOW = 65535


def with_options(seg: Segment, add: bytes = b"", strip=(), clamp: bool = False,
                 keep_payload: bool = True) -> tuple[bytes, bool]:
    """`seg`'s packet with its option list rewritten (never more than 40 bytes): options of a kind in `strip`
    removed (with the NOPs that padded them), the MSS lowered by the MAC option's size when `clamp`, `add`
    appended, the payload left out unless `keep_payload`. When `add` does not fit, the alignment NOPs go first,
    then the timestamps option. Returns (packet, overflow): overflow is True when `add` did not fit even then
    and was left out."""
    kept: list[TCPOption] = []
    for o in seg.tcp_options():
        if o.kind in strip or o.kind == TCPOPT_EOL:
            continue
        if clamp and o.kind == TCPOPT_MSS and o.size == TCPOLEN_MSS:
            o = TCPOption(TCPOPT_MSS, struct.pack("!H", max(MIN_MSS, struct.unpack("!H", o.data)[0] - MSS_CLAMP)))
        kept.append(o)
    if strip:  # drop NOPs that only padded removed options
        kept = realign([o for o in kept if o.kind != TCPOPT_NOP])
    raw = pad_options(encode_options(kept) + add)
    if len(raw) > TCP_MAX_OPTION_SPACE:
        # the kernel's alignment NOPs can be all that leaves no room (options need no alignment, RFC 9293
        # §3.1): a join SYN-ACK fits SACK-permitted beside MP_JOIN and NEXTK2 only without them, a resumed plain
        # TCP SYN fits NEXTK1 beside timestamps only without the NOP before window scale either
        bare = [o for o in kept if o.kind != TCPOPT_NOP]
        for fitted in (realign(bare), bare, [o for o in bare if o.kind != TCPOPT_TIMESTAMP]):
            # what `add` carries (HELLO, PKCONF, NEXTK1/2) matters more than timestamps: a join SYN never fits both
            raw = pad_options(encode_options(fitted) + add)
            if len(raw) <= TCP_MAX_OPTION_SPACE:
                break
    overflow = len(raw) > TCP_MAX_OPTION_SPACE
    if overflow:  # `add` is left out: the kernel's options stay, timestamps included
        raw = pad_options(encode_options(kept))
    return assemble(seg.packet, seg.l4, raw, seg.payload() if keep_payload else b""), overflow


def realign(opts: list[TCPOption]) -> list[TCPOption]:
    """Options without NOPs, with a NOP before window scale as Linux writes it (cosmetic, keeps dumps readable)."""
    out = []
    for o in opts:
        if o.kind == TCPOPT_WSCALE:
            out.append(TCPOption(TCPOPT_NOP))
        out.append(o)
    return out


def trim_sack(raw: bytes, limit: int) -> bytes | None:
    """The option area with SACK blocks dropped from the end until it fits `limit` bytes (RFC 2018 §4: the first
    block reports the most recent data, the others repeat older news), the whole SACK option if need be.
    None when there is no SACK option to trim or the options do not fit even without it."""
    try:
        opts = parse_options(raw)
    except DecodeError:
        return None
    sack = next((o for o in opts if o.kind == TCPOPT_SACK), None)
    if sack is None:
        return None
    others = [o for o in opts if o.kind not in (TCPOPT_NOP, TCPOPT_EOL)]
    for blocks in range(len(sack.data) // TCPOLEN_SACK_BLOCK - 1, -1, -1):
        kept = [TCPOption(TCPOPT_SACK, sack.data[:blocks * TCPOLEN_SACK_BLOCK]) if o is sack else o for o in others
                if o is not sack or blocks]
        trimmed = pad_options(encode_options(kept))
        if len(trimmed) <= limit:
            return trimmed
    return None


def without_kind(raw: bytes, kind: int) -> bytes | None:
    """The option area without its options of `kind` (and without NOPs, padded at the end), or None when it has
    none or cannot be parsed."""
    try:
        opts = parse_options(raw)
    except DecodeError:
        return None
    if not any(o.kind == kind for o in opts):
        return None
    return pad_options(encode_options([o for o in opts if o.kind not in (kind, TCPOPT_NOP, TCPOPT_EOL)]))


def with_option_area(seg: Segment, raw: bytes) -> bytes:
    """`seg`'s packet with the option area `raw` (a multiple of 4 bytes) instead of its own."""
    return assemble(seg.packet, seg.l4, raw, seg.payload())


def blank_options(seg: Segment, match) -> tuple[bytes, int]:
    """`seg`'s packet with every option `o` for which `match(o)` holds replaced by NOPs of its size (the option
    area keeps its length), and how many were replaced."""
    out, n = [], 0
    for o in seg.tcp_options():
        if match(o):
            out.append(bytes((TCPOPT_NOP,)) * o.size)
            n += 1
        else:
            out.append(o.encode())
    if not n:
        return seg.packet, 0
    return with_option_area(seg, b"".join(out)), n


def split_signals(seg: Segment, subtypes) -> tuple[bytes, bytes] | None:
    """(option area without the MPTCP signals of `subtypes`, option area of those signals), or None when the
    segment carries none. Used to move a REMOVE_ADDR / MP_PRIO / MP_FAIL to a segment of its own."""
    try:
        opts = seg.tcp_options()
    except DecodeError:
        return None
    signals, rest = [], []
    for o in opts:
        if o.kind in (TCPOPT_NOP, TCPOPT_EOL):
            continue  # padding: each part is padded again
        if o.kind == TCPOPT_MPTCP and parse_mptcp(o.encode(), strict=False).subtype in subtypes:
            signals.append(o)
        else:
            rest.append(o)
    if not signals:
        return None
    return pad_options(encode_options(rest)), pad_options(encode_options(signals))


def shifted(seg: Segment, seq: int, flags: int, raw: bytes, payload: bytes) -> bytes:
    """A segment like `seg` (same IP header, ports, ack, window) with another seq, flags, options and payload."""
    head = bytearray(seg.packet[:seg.l4 + TCP_HEADER_LEN])
    _TCP.pack_into(head, seg.l4, seg.sport, seg.dport, seq & 0xFFFFFFFF, seg.ack, (5 << 12) | flags, seg.window,
                   0, seg.urg)
    return assemble(bytes(head), seg.l4, raw, payload)


def daemon_segment(src, sport, dst, dport, seq, ack, flags, options: bytes, payload: bytes) -> bytes:
    """A daemon-made segment (INIT1/INIT2, RST), IP header included."""
    options = pad_options(options)
    off_flags = (((TCP_HEADER_LEN + len(options)) >> 2) << 12) | flags
    tcp = bytearray(_TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, off_flags, DAEMON_WINDOW, 0, 0))
    tcp += options
    tcp += payload
    _CSUM.pack_into(tcp, 16, tcp_checksum(src, dst, tcp))
    return build_ip_header(src, dst, len(tcp)) + tcp


def rst_to_peer(key, seq: int, ack: int = 0, with_ack: bool = True) -> bytes:
    """RST from us to the peer of flow `key` (local addr, local port, remote addr, remote port)."""
    la, lp, ra, rp = key
    return daemon_segment(la, lp, ra, rp, seq, ack, RST | ACK if with_ack else RST, b"", b"")


def rst_to_local(key, seq: int, ack: int) -> bytes:
    """RST that appears to come from the peer of flow `key`, for our own kernel."""
    la, lp, ra, rp = key
    return daemon_segment(ra, rp, la, lp, seq, ack, RST | ACK, b"", b"")
