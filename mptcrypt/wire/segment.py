"""One view of a TCP segment in an IP packet, parsed once per packet: `parse_segment(packet) -> Segment | None`.

The engine and the edges (NFQUEUE worker, raw socket, the attack suite's sniffer) read headers only through this
view; the TCP option list, the MPTCP options (through `wire.mptcp.parse_mptcp`, with its length checks) and the
mptcrypt message are decoded on first use and cached. Offsets are absolute in `packet`: the TCP header starts at
`l4`, its options at `l4 + 20`, the payload at `data_off`.

IPv4: the packet is trimmed to the IP total length; fragments are not segments (None). IPv6: the extension
header chain (RFC 8200 §4) is walked to TCP; another transport is None; a Fragment, ESP or AH header before
TCP, or a truncated chain, is a DecodeError (the engine drops it: it cannot verify what it cannot see).
"""

from __future__ import annotations

import struct

from mptcrypt.constants import MAC_OPTION_LEN, TCPOPT_EXP, TCPOPT_MPTCP
from mptcrypt.errors import DecodeError
from mptcrypt.wire import messages as m
from mptcrypt.wire.ip import IPPROTO_TCP, IPV4_FRAG_MASK, IPV4_MIN_HEADER_LEN, IPV6_HEADER_LEN
from mptcrypt.wire.mptcp import MptcpOption, Subtype, parse_mptcp
from mptcrypt.wire.tcp import TCP_HEADER_LEN, TCPOption, parse_options

# RFC 8200 §4: extension headers whose length is (byte 1 + 1) * 8 and that a router may insert or a host read
IPV6_EXT_HOP_BY_HOP, IPV6_EXT_ROUTING, IPV6_EXT_DEST_OPTS = 0, 43, 60
IPV6_EXT_FRAGMENT, IPV6_ESP, IPV6_AH = 44, 50, 51
IPV6_WALKABLE = (IPV6_EXT_HOP_BY_HOP, IPV6_EXT_ROUTING, IPV6_EXT_DEST_OPTS)
# headers that may hide a TCP header we cannot verify: a segment behind them is dropped, never passed
IPV6_OPAQUE = (IPV6_EXT_FRAGMENT, IPV6_ESP, IPV6_AH)
IPV6_MAX_EXT_HEADERS = 8  # bound the walk (a chain of hundreds of empty headers is an attack, not a packet)

_TCP_FIXED = struct.Struct("!HHIIH")  # ports, seq, ack, data offset + flags
# IPv4 without options and the TCP fixed fields: version/IHL, total length, flags + fragment offset, protocol,
# addresses, then ports, seq, ack, data offset + flags
_V4_TCP = struct.Struct("!BxH2xHxB2x4s4sHHIIH")
_U16 = struct.Struct("!H")
_MAC_PREFIX = m.EXP_PREFIX


class Segment:
    """Header fields of one TCP segment; `packet` is the IP packet trimmed to its announced length.

    On the per-packet path: the fields the engine reads on every segment are set here, the window and urgent
    pointer (read only by the segment cipher, from the bytes) and the decoded options on first use."""

    __slots__ = ("packet", "src", "dst", "l4", "sport", "dport", "seq", "ack", "flags", "data_off", "_opts",
                 "_mptcp")

    def __init__(self, packet: bytes, src: bytes, dst: bytes, l4: int, sport: int, dport: int, seq: int, ack: int,
                 off_flags: int):
        data_off = l4 + ((off_flags >> 12) << 2)
        if data_off < l4 + TCP_HEADER_LEN or data_off > len(packet):
            raise DecodeError(f"TCP data offset {(off_flags >> 12) << 2} does not fit a {len(packet) - l4}-byte "
                              "segment")
        self.packet = packet
        self.src = src
        self.dst = dst
        self.l4 = l4
        self.sport = sport
        self.dport = dport
        self.seq = seq
        self.ack = ack
        self.flags = off_flags & 0x0FFF
        self.data_off = data_off

    @property
    def version(self) -> int:
        return self.packet[0] >> 4

    @property
    def window(self) -> int:
        return _U16.unpack_from(self.packet, self.l4 + 14)[0]

    @property
    def urg(self) -> int:
        return _U16.unpack_from(self.packet, self.l4 + 18)[0]

    # --- the byte areas ---------------------------------------------------------------------------------
    @property
    def opt_start(self) -> int:
        return self.l4 + TCP_HEADER_LEN

    @property
    def option_len(self) -> int:
        return self.data_off - self.l4 - TCP_HEADER_LEN

    @property
    def payload_len(self) -> int:
        return len(self.packet) - self.data_off

    def option_bytes(self) -> bytes:
        return self.packet[self.l4 + TCP_HEADER_LEN:self.data_off]

    def payload(self) -> bytes:
        return self.packet[self.data_off:]

    def has_mac(self) -> bool:
        """The option area ends with mptcrypt's 12-byte MAC option (kind, length, ExID checked; the tag is not)."""
        end = self.data_off
        return end - self.l4 - TCP_HEADER_LEN >= MAC_OPTION_LEN and \
            self.packet[end - MAC_OPTION_LEN:end - MAC_OPTION_LEN + len(_MAC_PREFIX)] == _MAC_PREFIX

    # --- decoded options (cached) -------------------------------------------------------------------------
    def tcp_options(self) -> list[TCPOption]:
        """The option list; DecodeError when the area is not a valid option list (RFC 9293 §3.1)."""
        try:
            return self._opts
        except AttributeError:
            self._opts = parse_options(self.option_bytes())
            return self._opts

    def mptcp(self) -> list[MptcpOption]:
        """Every MPTCP option of the segment, parsed with Linux's length checks. A suboption whose length does
        not match its subtype is left out, as Linux `mptcp_parse_option` ignores it."""
        try:
            return self._mptcp
        except AttributeError:
            out = []
            for o in self.tcp_options():
                if o.kind == TCPOPT_MPTCP:
                    try:
                        out.append(parse_mptcp(o.encode()))
                    except DecodeError:
                        pass
            self._mptcp = out
            return out

    def mptcp_option(self, subtype: int) -> MptcpOption | None:
        """The first MPTCP option of `subtype` (RFC 8684 allows one of each in a segment), or None."""
        for o in self.mptcp():
            if o.subtype == subtype:
                return o
        return None

    def mptcp_join(self) -> MptcpOption | None:
        return self.mptcp_option(Subtype.MP_JOIN)

    def mptcrypt(self) -> m.Message | None:
        """The mptcrypt message of the first kind-253 option with our ExID, None if absent or undecodable."""
        for o in self.tcp_options():
            if o.kind == TCPOPT_EXP and m.is_mptcrypt_option(o.kind, o.data):
                try:
                    return m.parse_message(o.data)
                except DecodeError:
                    return None
        return None

    def marker(self) -> int | None:
        """Msg.INIT1 / Msg.INIT2 when the segment carries the marker of a daemon-made INIT segment."""
        try:
            msg = self.mptcrypt()
        except DecodeError:
            return None
        return msg.msg if isinstance(msg, m.Marker) else None

    def flow_key(self, outbound: bool) -> tuple:
        """(local addr, local port, remote addr, remote port) as this host sees the flow."""
        if outbound:
            return (self.src, self.sport, self.dst, self.dport)
        return (self.dst, self.dport, self.src, self.sport)


def parse_segment(packet: bytes) -> Segment | None:
    """The TCP segment in IP `packet`; None when the packet is not a TCP segment (not IP, another transport);
    DecodeError when it claims to be one but its headers are truncated or inconsistent, or it is a fragment of
    one. A fragment is never let through unverified: gateway mode sees forwarded IPv4 fragments when the box runs
    no conntrack (whose defrag would reassemble them), and the LAN host would reassemble a forged segment behind
    the daemon's back (as issue 12 item 4 for IPv6). Protected TCP is sent with DF: no real segment is lost."""
    n = len(packet)
    if n >= IPV4_MIN_HEADER_LEN + TCP_HEADER_LEN and packet[0] == 0x45:  # IPv4 without options: one unpack
        _vihl, total, frag, proto, src, dst, sport, dport, seq, ack, off_flags = _V4_TCP.unpack_from(packet)
        if proto != IPPROTO_TCP:
            return None
        if frag & IPV4_FRAG_MASK:
            raise DecodeError("IPv4 fragment of a TCP segment (a segment is verified whole)")
        if IPV4_MIN_HEADER_LEN + TCP_HEADER_LEN <= total <= n:
            return Segment(packet[:total] if total < n else packet, src, dst, IPV4_MIN_HEADER_LEN, sport, dport,
                           seq, ack, off_flags)
    if not n:
        raise DecodeError("empty packet")
    version = packet[0] >> 4
    if version == 4:
        if n < IPV4_MIN_HEADER_LEN:
            raise DecodeError(f"IPv4 packet of {n} bytes is shorter than a header")
        ihl = (packet[0] & 0x0F) << 2
        total = (packet[2] << 8) | packet[3]
        if ihl < IPV4_MIN_HEADER_LEN or total < ihl or total > n:
            raise DecodeError(f"IPv4 header length {ihl} / total length {total} do not fit {n} bytes")
        if packet[9] != IPPROTO_TCP:
            return None
        if ((packet[6] << 8) | packet[7]) & IPV4_FRAG_MASK:
            raise DecodeError("IPv4 fragment of a TCP segment (a segment is verified whole)")
        if total < n:
            packet = packet[:total]
        return _segment_at(packet, packet[12:16], packet[16:20], ihl)
    if version == 6:
        if n < IPV6_HEADER_LEN:
            raise DecodeError(f"IPv6 packet of {n} bytes is shorter than a header")
        total = IPV6_HEADER_LEN + ((packet[4] << 8) | packet[5])
        if total > n or total == IPV6_HEADER_LEN and n > IPV6_HEADER_LEN:
            raise DecodeError(f"IPv6 payload length {total - IPV6_HEADER_LEN} does not fit {n} bytes")
        if total < n:
            packet = packet[:total]
        l4 = ipv6_transport_offset(packet)
        if l4 is None:
            return None
        return _segment_at(packet, packet[8:24], packet[24:40], l4)
    return None


def _segment_at(packet: bytes, src: bytes, dst: bytes, l4: int) -> Segment:
    try:
        fields = _TCP_FIXED.unpack_from(packet, l4)
    except struct.error:
        raise DecodeError(f"TCP header at offset {l4} of a {len(packet)}-byte packet is truncated") from None
    return Segment(packet, src, dst, l4, *fields)


def ipv6_transport_offset(packet: bytes) -> int | None:
    """Offset of the TCP header behind the IPv6 header and its extension headers (Hop-by-Hop, Routing,
    Destination Options), None when another transport comes first; DecodeError when a header we cannot look
    behind (Fragment, ESP, AH) comes first, or the chain runs past the packet or is absurdly long: the NFQUEUE
    rules only queue TCP, so such a packet may be a protected flow's segment dressed up to skip the MAC check
    (issue 12 item 4) and is dropped."""
    nxt, off = packet[6], IPV6_HEADER_LEN
    for _ in range(IPV6_MAX_EXT_HEADERS + 1):
        if nxt == IPPROTO_TCP:
            return off
        if nxt == IPV6_EXT_FRAGMENT:
            # RFC 8200 §4.5: 8 bytes, offset and M flag in bytes 2-3. An atomic fragment (offset 0, M = 0, RFC 6946)
            # goes to TCP as it is, so it is walked; a TCP fragment is refused (Linux TCP never sends one, and its
            # reassembly would reach TCP without a MAC check). Non-first fragments never match `-p tcp`.
            if off + 8 > len(packet):
                raise DecodeError(f"IPv6 fragment header at offset {off} runs past the packet")
            if _U16.unpack_from(packet, off + 2)[0] & 0xFFF9:
                raise DecodeError("IPv6 fragment of a TCP segment (fragments are never passed unexamined)")
            nxt, off = packet[off], off + 8
            continue
        if nxt in IPV6_OPAQUE:
            raise DecodeError(f"IPv6 header {nxt} before the transport: cannot verify what it carries")
        if nxt not in IPV6_WALKABLE:
            return None
        if off + 2 > len(packet):
            raise DecodeError(f"IPv6 extension header {nxt} at offset {off} runs past the packet")
        nxt, off = packet[off], off + ((packet[off + 1] + 1) << 3)
    raise DecodeError(f"more than {IPV6_MAX_EXT_HEADERS} IPv6 extension headers before the transport")


def announced_length(packet: bytes) -> int:
    """The length an IP header announces for its packet (0 if unknown: too short or not IP)."""
    if len(packet) >= IPV4_MIN_HEADER_LEN and packet[0] >> 4 == 4:
        return (packet[2] << 8) | packet[3]
    if len(packet) >= IPV6_HEADER_LEN and packet[0] >> 4 == 6:
        return IPV6_HEADER_LEN + ((packet[4] << 8) | packet[5])
    return 0


def destination(packet: bytes) -> tuple[int, bytes]:
    """(IP version, destination address bytes) of an IP packet. DecodeError for anything else."""
    if not packet:
        raise DecodeError("empty packet")
    version = packet[0] >> 4
    if version == 4:
        if len(packet) < IPV4_MIN_HEADER_LEN:
            raise DecodeError(f"IPv4 packet of {len(packet)} bytes is shorter than its header")
        return 4, packet[16:20]
    if version == 6:
        if len(packet) < IPV6_HEADER_LEN:
            raise DecodeError(f"IPv6 packet of {len(packet)} bytes is shorter than its header")
        return 6, packet[24:40]
    raise DecodeError(f"not an IP packet (version nibble {version})")
