"""Reading tcpdump captures (classic pcap, Ethernet link type): the TCP/IPv4 packets in them, decoded with the
project's own codecs. Used by the demo and the integration tests to check what an observer of a link saw."""

from __future__ import annotations

import struct
from collections.abc import Iterator

from mptcrypt.errors import DecodeError
from mptcrypt.wire.ip import IPHeader, parse_ip
from mptcrypt.wire.tcp import TCPHeader, parse_tcp

PCAP_HEADER_LEN = 24
RECORD_HEADER_LEN = 16
ETH_HEADER_LEN = 14
ETHERTYPE_IPV4 = b"\x08\x00"
_RECORD = struct.Struct("<IIII")  # seconds, microseconds, captured length, original length


def tcp_packets(pcap: bytes) -> Iterator[tuple[IPHeader, TCPHeader, bytes]]:
    """(IP header, TCP header, payload) of every IPv4 TCP packet of a little-endian pcap; others are skipped."""
    off = PCAP_HEADER_LEN
    while off + RECORD_HEADER_LEN <= len(pcap):
        _s, _us, incl, _orig = _RECORD.unpack_from(pcap, off)
        frame = pcap[off + RECORD_HEADER_LEN:off + RECORD_HEADER_LEN + incl]
        off += RECORD_HEADER_LEN + incl
        if frame[12:14] != ETHERTYPE_IPV4:
            continue
        try:
            ip = parse_ip(frame[ETH_HEADER_LEN:])
            if ip.proto != 6:
                continue
            hdr, payload = parse_tcp(frame[ETH_HEADER_LEN + ip.header_len:ETH_HEADER_LEN + ip.total_len])
        except DecodeError:
            continue
        yield ip, hdr, payload
