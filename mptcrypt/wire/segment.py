"""One view of a TCP segment in an IP packet, parsed once per packet: `parse_segment(packet) -> Segment | None`.

The engine and the edges (NFQUEUE worker, raw socket, the attack suite's sniffer) read headers only through this
view; the TCP option list, the MPTCP options (through `wire.mptcp.parse_mptcp`, with its length checks) and the
mptcrypt message are decoded on first use and cached. Offsets are absolute in `packet`: the TCP header starts at
`l4`, its options at `l4 + 20`, the payload at `data_off`.

IPv4: the packet is trimmed to the IP total length; fragments are not segments (None). IPv6: the extension
header chain (RFC 8200 §4) is walked to TCP; a fragment or an ESP/AH/unknown header before TCP is None
(`Segment` cannot see the TCP header), a truncated chain is a DecodeError.
"""

from __future__ import annotations

import struct

from mptcrypt.constants import MAC_OPTION_LEN, TCPOPT_EXP, TCPOPT_MPTCP
from mptcrypt.errors import DecodeError
from mptcrypt.wire import messages as m
from mptcrypt.wire.ip import IPPROTO_TCP, IPV4_MIN_HEADER_LEN, IPV6_HEADER_LEN
from mptcrypt.wire.mptcp import MptcpOption, Subtype, parse_mptcp
from mptcrypt.wire.tcp import TCP_HEADER_LEN, TCPOption, parse_options

# RFC 8200 §4: extension headers whose length is (byte 1 + 1) * 8 and that a router may insert or a host read
IPV6_EXT_HOP_BY_HOP, IPV6_EXT_ROUTING, IPV6_EXT_DEST_OPTS = 0, 43, 60
IPV6_EXT_FRAGMENT = 44
IPV6_WALKABLE = (IPV6_EXT_HOP_BY_HOP, IPV6_EXT_ROUTING, IPV6_EXT_DEST_OPTS)
IPV6_MAX_EXT_HEADERS = 8  # bound the walk (a chain of hundreds of empty headers is an attack, not a packet)

_TCP_FIXED = struct.Struct("!HHIIH")  # ports, seq, ack, data offset + flags
_U16 = struct.Struct("!H")
_MAC_PREFIX = m.EXP_PREFIX


class Segment:
    """Header fields of one TCP segment; `packet` is the IP packet trimmed to its announced length.

    On the per-packet path: the fields the engine reads on every segment are set here, the window and urgent
    pointer (read only by the segment cipher, from the bytes) and the decoded options on first use."""

    __slots__ = ("packet", "src", "dst", "l4", "sport", "dport", "seq", "ack", "flags", "data_off", "_opts",
                 "_mptcp")

    def __init__(self, packet: bytes, src: bytes, dst: bytes, l4: int):
        try:
            self.sport, self.dport, self.seq, self.ack, off_flags = _TCP_FIXED.unpack_from(packet, l4)
        except struct.error:
            raise DecodeError(f"TCP header at offset {l4} of a {len(packet)}-byte packet is truncated") from None
        data_off = l4 + ((off_flags >> 12) << 2)
        if data_off < l4 + TCP_HEADER_LEN or data_off > len(packet):
            raise DecodeError(f"TCP data offset {(off_flags >> 12) << 2} does not fit a {len(packet) - l4}-byte "
                              "segment")
        self.packet = packet
        self.src = src
        self.dst = dst
        self.l4 = l4
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
    """The TCP segment in IP `packet`; None when the packet is not a TCP segment we can see (not IP, another
    transport, a fragment); DecodeError when it claims to be one but its headers are truncated or inconsistent."""
    n = len(packet)
    if n >= IPV4_MIN_HEADER_LEN and packet[0] >> 4 == 4:
        ihl = (packet[0] & 0x0F) << 2
        total = (packet[2] << 8) | packet[3]
        if ihl < IPV4_MIN_HEADER_LEN or total < ihl or total > n:
            raise DecodeError(f"IPv4 header length {ihl} / total length {total} do not fit {n} bytes")
        if packet[9] != IPPROTO_TCP or packet[6] & 0x3F or packet[7]:  # another transport, or a fragment
            return None
        if total < n:
            packet = packet[:total]
        return Segment(packet, packet[12:16], packet[16:20], ihl)
    if not n:
        raise DecodeError("empty packet")
    version = packet[0] >> 4
    if version == 4:
        raise DecodeError(f"IPv4 packet of {n} bytes is shorter than a header")
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
        return Segment(packet, packet[8:24], packet[24:40], l4)
    return None


def ipv6_transport_offset(packet: bytes) -> int | None:
    """Offset of the TCP header behind the IPv6 header and its extension headers (Hop-by-Hop, Routing,
    Destination Options), None when another transport or a header we cannot walk (Fragment, ESP, AH) comes
    first; DecodeError when the chain runs past the packet or is absurdly long."""
    nxt, off = packet[6], IPV6_HEADER_LEN
    for _ in range(IPV6_MAX_EXT_HEADERS + 1):
        if nxt == IPPROTO_TCP:
            return off
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
