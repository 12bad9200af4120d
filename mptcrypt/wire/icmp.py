"""ICMP "fragmentation needed" (RFC 792, RFC 1191 §4) and ICMPv6 "Packet Too Big" (RFC 4443 §3.2): lower the MTU
they report by the bytes mptcrypt adds, so that Path MTU Discovery keeps working through the daemon.

The kernel sizes a segment for the path MTU it learned from these messages, then the daemon appends the 12-byte
MAC option: a segment the kernel made exactly PMTU-sized no longer fits, the router drops it and reports the same
MTU again, and the connection stalls for good (a black hole). The daemon therefore shows its kernel an MTU lowered
by the option's size. The embedded (offending) packet is left as it arrived: the kernel finds its socket by it, and
its sequence number is the kernel's own (mptcrypt never shifts sequence space).

Lowering the learned PMTU has a second half: the kernel's own output path checks each segment against the route's
PMTU after the daemon enlarged it, so a segment that now fits the path is refused locally. The edge sends those
through its raw socket instead (IP_PMTUDISC_PROBE: checked against the device MTU only); see daemon/icmp_edge.py.

Pure: bytes in, bytes (or None: leave the packet alone) out. `daemon/iptables.py` queues the messages,
`daemon/icmp_edge.py` calls this.
"""

from __future__ import annotations

import struct

from mptcrypt.wire.checksum import finish, ones_sum

IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP = 1, 58, 6
ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED = 3, 4  # RFC 792 type 3 code 4; the next-hop MTU field is RFC 1191 §4
ICMPV6_PACKET_TOO_BIG = 2  # RFC 4443 §3.2
ICMP_HEADER_LEN = 8
IPV4_MIN_HEADER_LEN, IPV6_HEADER_LEN = 20, 40
IPV4_MIN_MTU = 68  # RFC 791: every IPv4 link carries 68 bytes
IPV6_MIN_MTU = 1280  # RFC 8200 §5: a Packet Too Big below this is answered with 1280 anyway

_MTU16 = struct.Struct("!H")
_MTU32 = struct.Struct("!I")


def too_big_mtu(packet: bytes) -> int | None:
    """The MTU a "fragmentation needed" / "Packet Too Big" message about a TCP segment reports; None for any other
    packet (another ICMP type, a message about UDP, a truncated one, an IPv6 packet with extension headers)."""
    parsed = _locate(packet)
    return None if parsed is None else parsed[1]


def quoted_destination(packet: bytes) -> bytes | None:
    """Destination address (4 or 16 bytes) of the segment a too-big message quotes: the peer the path leads to."""
    parsed = _locate(packet)
    if parsed is None:
        return None
    inner = parsed[0] + ICMP_HEADER_LEN
    return packet[inner + 16:inner + 20] if packet[0] >> 4 == 4 else packet[inner + 24:inner + 40]


def lower_reported_mtu(packet: bytes, by: int) -> bytes | None:
    """`packet` with the reported MTU lowered by `by` bytes and the ICMP checksum recomputed, or None when there is
    nothing to change: not such a message about TCP, an IPv4 MTU field of 0 (a pre-RFC 1191 router: the kernel
    guesses a plateau itself), or an IPv6 MTU already at the 1280 floor (the kernel would raise it back)."""
    parsed = _locate(packet)
    if parsed is None:
        return None
    icmp_at, mtu = parsed
    if packet[0] >> 4 == 4:
        if mtu == 0:
            return None
        new_mtu = max(mtu - by, IPV4_MIN_MTU)
        field = _MTU16.pack(new_mtu)
        out = bytearray(packet)
        out[icmp_at + 6:icmp_at + 8] = field
        out[icmp_at + 2:icmp_at + 4] = b"\0\0"
        total = int.from_bytes(packet[2:4], "big")
        out[icmp_at + 2:icmp_at + 4] = _MTU16.pack(finish(ones_sum(bytes(out[icmp_at:total]))))
        return bytes(out)
    new_mtu = max(mtu - by, IPV6_MIN_MTU)
    if new_mtu == mtu:
        return None
    out = bytearray(packet)
    out[icmp_at + 4:icmp_at + 8] = _MTU32.pack(new_mtu)
    out[icmp_at + 2:icmp_at + 4] = b"\0\0"
    end = IPV6_HEADER_LEN + int.from_bytes(packet[4:6], "big")
    out[icmp_at + 2:icmp_at + 4] = _MTU16.pack(icmpv6_checksum(packet[8:24], packet[24:40], bytes(out[icmp_at:end])))
    return bytes(out)


def icmp_checksum_ok(packet: bytes) -> bool:
    """Whether the ICMP / ICMPv6 message in `packet` (no IPv6 extension headers) has a valid checksum."""
    if packet[0] >> 4 == 4:
        ihl = (packet[0] & 0x0F) * 4
        return ones_sum(packet[ihl:int.from_bytes(packet[2:4], "big")]) == 0
    body = packet[IPV6_HEADER_LEN:IPV6_HEADER_LEN + int.from_bytes(packet[4:6], "big")]
    return (_pseudo6(packet[8:24], packet[24:40], len(body)) + ones_sum(body)) % 0xFFFF == 0


def icmpv6_checksum(src: bytes, dst: bytes, message: bytes) -> int:
    """ICMPv6 checksum (RFC 4443 §2.3) over the IPv6 pseudo-header and `message` (its checksum field zero)."""
    return finish(_pseudo6(src, dst, len(message)) + ones_sum(message))


def _pseudo6(src: bytes, dst: bytes, length: int) -> int:
    return int.from_bytes(src + dst, "big") + (length >> 16) + (length & 0xFFFF) + IPPROTO_ICMPV6


def _locate(packet: bytes) -> tuple[int, int] | None:
    """(offset of the ICMP header, reported MTU) of a too-big message quoting a TCP segment, else None."""
    if len(packet) < IPV4_MIN_HEADER_LEN:
        return None
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        total = int.from_bytes(packet[2:4], "big")
        frag = int.from_bytes(packet[6:8], "big") & 0x3FFF
        if packet[9] != IPPROTO_ICMP or frag or ihl < IPV4_MIN_HEADER_LEN or total > len(packet):
            return None
        if total < ihl + ICMP_HEADER_LEN + IPV4_MIN_HEADER_LEN or packet[ihl:ihl + 2] != bytes((ICMP_DEST_UNREACH,
                                                                                              ICMP_FRAG_NEEDED)):
            return None
        inner = ihl + ICMP_HEADER_LEN
        if packet[inner] >> 4 != 4 or packet[inner + 9] != IPPROTO_TCP:
            return None
        return ihl, _MTU16.unpack_from(packet, ihl + 6)[0]
    if version == 6:
        if len(packet) < IPV6_HEADER_LEN + ICMP_HEADER_LEN + IPV6_HEADER_LEN or packet[6] != IPPROTO_ICMPV6:
            return None
        if IPV6_HEADER_LEN + int.from_bytes(packet[4:6], "big") > len(packet):
            return None
        if packet[IPV6_HEADER_LEN] != ICMPV6_PACKET_TOO_BIG or packet[IPV6_HEADER_LEN + 1] != 0:
            return None
        inner = IPV6_HEADER_LEN + ICMP_HEADER_LEN
        if packet[inner] >> 4 != 6 or packet[inner + 6] != IPPROTO_TCP:
            return None
        return IPV6_HEADER_LEN, _MTU32.unpack_from(packet, IPV6_HEADER_LEN + 4)[0]
    return None
