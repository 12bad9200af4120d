"""Every segment two in-memory engines emit has correct lengths and checksums, whatever the IP header: IPv4
without options, with 4 and with 20 bytes of IP options, IPv6 (issue 10: the old engine guessed the IP version
from the header length and summed the wrong pseudo-header for IPv4 with options)."""

import ipaddress
import struct

import pytest

from mptcrypt.wire.checksum import ipv4_header_checksum, verify_tcp_checksum
from mptcrypt.wire.ip import parse_ip
from mptcrypt.wire.tcp import ACK, FIN, PSH, SYN

from enginepair import EnginePair
from pktkit import C_ADDR, S_ADDR, segment, syn_options

V6_C = ipaddress.ip_address("2001:db8::2").packed
V6_S = ipaddress.ip_address("2001:db8::1").packed
IP_OPTIONS = {0: b"", 4: b"\x94\x04\x00\x00", 20: b"\x94\x04\x00\x00" + b"\x01" * 15 + b"\x00"}  # router alert, NOPs


def with_ip_options(packet: bytes, options: bytes) -> bytes:
    """The IPv4 `packet` with `options` inserted after its 20-byte header (lengths and header checksum fresh)."""
    if not options:
        return packet
    head = bytearray(packet[:20])
    head[0] = 0x40 | ((20 + len(options)) >> 2)
    struct.pack_into("!HH", head, 2, len(packet) + len(options), struct.unpack_from("!H", head, 4)[0])
    struct.pack_into("!H", head, 10, 0)
    head = bytes(head) + options
    return head[:10] + struct.pack("!H", ipv4_header_checksum(head)) + head[12:] + packet[20:]


def check(packet: bytes) -> None:
    ip = parse_ip(packet)  # (the old engine's tree has no wire.segment: this test runs against it too)
    ihl = ip.header_len
    assert ip.total_len == len(packet)
    if ip.version == 4:
        field = struct.unpack_from("!H", packet, 10)[0]
        assert ipv4_header_checksum(packet[:10] + b"\0\0" + packet[12:ihl]) == field, "IPv4 header checksum"
    assert verify_tcp_checksum(ip.src, ip.dst, packet[ihl:]), f"TCP checksum of {packet.hex()}"


@pytest.mark.parametrize("shape", ["v4", "v4+4", "v4+20", "v6"])
def test_every_emitted_segment_has_correct_checksums(shape):
    v6 = shape == "v6"
    opts = IP_OPTIONS[int(shape.partition("+")[2] or 0)]
    c, s = (V6_C, V6_S) if v6 else (C_ADDR, S_ADDR)
    pair = EnginePair()

    def kernel(src, sport, dst, dport, seq, ack, flags, tcp_opts=(), payload=b""):
        return with_ip_options(segment(src, sport, dst, dport, seq, ack, flags, tcp_opts, payload), opts)

    sent = [
        ("c", kernel(c, 40000, s, 5000, 100, 0, SYN, syn_options())),
        ("s", kernel(s, 5000, c, 40000, 900, 101, SYN | ACK, syn_options(ts=False))),
        ("c", kernel(c, 40000, s, 5000, 101, 901, ACK)),
        ("c", kernel(c, 40000, s, 5000, 101, 901, ACK | PSH, (), b"odd length payload!")),
        ("s", kernel(s, 5000, c, 40000, 901, 120, ACK)),
        ("s", kernel(s, 5000, c, 40000, 901, 120, ACK | PSH, (), bytes(range(256)) * 5)),
        ("c", kernel(c, 40000, s, 5000, 120, 2181, ACK | FIN)),
        ("s", kernel(s, 5000, c, 40000, 2181, 121, ACK | FIN)),
        ("c", kernel(c, 40000, s, 5000, 121, 2182, ACK)),
    ]
    for side, pkt in sent:
        delivered = pair.send(side, pkt)
        assert delivered, f"{side} kernel segment was not delivered"
    assert pair.eng["s"].stats()["segments_verified"] >= 4 and pair.eng["c"].stats()["segments_verified"] >= 3
    emitted = pair.wire + pair.rx["c"] + pair.rx["s"]
    assert len(emitted) >= 2 * len(sent)
    for pkt in emitted:
        check(pkt)
    # what each kernel received is what the other kernel sent, byte for byte (IP options included)
    assert pair.rx["s"][-1] == sent[-1][1] and pair.rx["c"][-1] == sent[-2][1]
