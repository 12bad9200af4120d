"""mptcrypt/wire/icmp.py: ICMP "fragmentation needed" / ICMPv6 "Packet Too Big" with the reported MTU lowered by the
MAC option's size; checksums checked independently with scapy."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, strategies as st

from mptcrypt.wire.checksum import finish, ones_sum
from mptcrypt.wire.icmp import icmp_checksum_ok, icmpv6_checksum, lower_reported_mtu, too_big_mtu
from mptcrypt.wire.ip import build_ip_header

ROUTER4, CLIENT4, SERVER4 = bytes([192, 168, 1, 1]), bytes([192, 168, 1, 2]), bytes([10, 0, 1, 1])
ROUTER6, CLIENT6, SERVER6 = (bytes.fromhex("fd000011" + "0" * 23 + x) for x in "12a")


def offending(src, dst, proto=6, payload_len=1400):
    """The start of the segment the router could not forward: IP header + TCP header (+ a little payload)."""
    tcp = struct.pack("!HHIIBBHHH", 40000, 5001, 123456, 7890, 0x80, 0x18, 500, 0, 0) + b"\x01" * 12 + b"ab"
    ip = bytearray(build_ip_header(src, dst, len(tcp) + payload_len))
    if len(src) == 4:
        ip[9] = proto
    else:
        ip[6] = proto
    return bytes(ip) + tcp


def frag_needed(mtu, proto=6, quote_len=None):
    quoted = offending(CLIENT4, SERVER4, proto)[:quote_len]
    icmp = bytearray(struct.pack("!BBHHH", 3, 4, 0, 0, mtu) + quoted)
    struct.pack_into("!H", icmp, 2, finish(ones_sum(bytes(icmp))))
    ip = bytearray(build_ip_header(ROUTER4, CLIENT4, len(icmp)))
    ip[9] = 1
    ip[10:12] = b"\0\0"
    ip[10:12] = struct.pack("!H", finish(ones_sum(bytes(ip))))
    return bytes(ip) + bytes(icmp)


def packet_too_big(mtu, proto=6):
    quoted = offending(CLIENT6, SERVER6, proto)
    icmp = bytearray(struct.pack("!BBHI", 2, 0, 0, mtu) + quoted)
    struct.pack_into("!H", icmp, 2, icmpv6_checksum(ROUTER6, CLIENT6, bytes(icmp)))
    ip = bytearray(build_ip_header(ROUTER6, CLIENT6, len(icmp)))
    ip[6] = 58
    return bytes(ip) + bytes(icmp)


@given(st.integers(min_value=600, max_value=9000), st.integers(min_value=1, max_value=40))
def test_ipv4_frag_needed_mtu_lowered_checksum_fresh_quote_untouched(mtu, by):
    pkt = frag_needed(mtu)
    assert icmp_checksum_ok(pkt) and too_big_mtu(pkt) == mtu
    out = lower_reported_mtu(pkt, by)
    assert too_big_mtu(out) == mtu - by and icmp_checksum_ok(out)
    assert len(out) == len(pkt) and out[:20] == pkt[:20]  # outer IP header (and its checksum) unchanged
    assert out[20:22] == pkt[20:22] and out[24:26] == pkt[24:26]  # type, code, unused
    assert out[28:] == pkt[28:]  # the quoted segment, as the kernel will look its socket up by it


@given(st.integers(min_value=1293, max_value=65535), st.integers(min_value=1, max_value=12))
def test_ipv6_packet_too_big_mtu_lowered_checksum_fresh(mtu, by):
    pkt = packet_too_big(mtu)
    assert icmp_checksum_ok(pkt) and too_big_mtu(pkt) == mtu
    out = lower_reported_mtu(pkt, by)
    assert too_big_mtu(out) == mtu - by and icmp_checksum_ok(out)
    assert out[:40] == pkt[:40] and out[48:] == pkt[48:]


def test_checksums_agree_with_scapy():
    scapy = pytest.importorskip("scapy.all")
    out4 = lower_reported_mtu(frag_needed(1280), 12)
    p4 = scapy.IP(out4)
    assert p4[scapy.ICMP].nexthopmtu == 1268
    given_sum = p4[scapy.ICMP].chksum
    del p4[scapy.ICMP].chksum
    assert scapy.IP(bytes(p4))[scapy.ICMP].chksum == given_sum
    out6 = lower_reported_mtu(packet_too_big(1500), 12)
    p6 = scapy.IPv6(out6)
    assert p6[scapy.ICMPv6PacketTooBig].mtu == 1488
    given_sum = p6[scapy.ICMPv6PacketTooBig].cksum
    del p6[scapy.ICMPv6PacketTooBig].cksum
    assert scapy.IPv6(bytes(p6))[scapy.ICMPv6PacketTooBig].cksum == given_sum


def test_left_alone_when_there_is_nothing_to_lower():
    assert lower_reported_mtu(frag_needed(0), 12) is None  # pre-RFC 1191 router: the kernel picks a plateau
    assert lower_reported_mtu(frag_needed(1280, proto=17), 12) is None  # about UDP: mptcrypt adds nothing there
    assert lower_reported_mtu(packet_too_big(1280), 12) is None  # IPv6 floor: the kernel would use 1280 anyway
    assert lower_reported_mtu(packet_too_big(1288), 12)[44:48] == struct.pack("!I", 1280)
    seg = offending(CLIENT4, SERVER4)
    assert lower_reported_mtu(seg, 12) is None and too_big_mtu(seg) is None  # a TCP segment, not ICMP
    assert lower_reported_mtu(frag_needed(1280)[:40], 12) is None  # truncated quote
    echo = bytearray(frag_needed(1280))
    echo[20] = 8  # echo request
    assert lower_reported_mtu(bytes(echo), 12) is None
    assert lower_reported_mtu(b"", 12) is None


def test_ipv4_mtu_never_below_the_minimum():
    assert too_big_mtu(lower_reported_mtu(frag_needed(70), 12)) == 68


def test_clamp_edge_hands_everything_else_to_the_engine():
    from mptcrypt.core.events import ACCEPT, DROP
    from mptcrypt.daemon.icmp_edge import TooBigClamp

    class Engine:
        def __init__(self):
            self.seen = []

        def handle(self, packet, outbound, now):
            self.seen.append(packet)
            return DROP

        def stats(self):
            return {"packets": len(self.seen)}

    engine = Engine()
    clamp = TooBigClamp(engine)
    res = clamp.handle(frag_needed(1400), False, 0.0)
    assert res.packet is not None and too_big_mtu(res.packet) == 1388 and not engine.seen
    assert clamp.handle(frag_needed(1280, proto=17), False, 0.0) is ACCEPT
    seg = offending(CLIENT4, SERVER4)
    assert clamp.handle(seg, False, 0.0) is DROP and engine.seen == [seg]
    assert clamp.handle(frag_needed(1400), True, 0.0) is DROP  # outbound ICMP is not ours to change
    assert clamp.stats() == {"packets": 2, "icmp_too_big_lowered": 1, "pmtu_resent_raw": 0}


def test_clamp_edge_resends_raw_what_only_fits_the_real_path():
    """After a too-big reporting 1400 (the kernel learns 1388), a protected segment of 1400 bytes to that peer goes
    through the raw socket (HOLD + inject): the kernel's own check against 1388 would refuse it."""
    from mptcrypt.core.events import Result, Verdict
    from mptcrypt.daemon.icmp_edge import TooBigClamp

    seg = offending(CLIENT4, SERVER4)
    enlarged = seg + b"\0" * (1400 - len(seg))

    class Engine:
        def handle(self, packet, outbound, now):
            return Result(Verdict.ACCEPT, enlarged)

    clamp = TooBigClamp(Engine())
    assert clamp.handle(seg, True, 0.0).verdict is Verdict.ACCEPT  # nothing learned yet
    clamp.handle(frag_needed(1400), False, 0.0)
    res = clamp.handle(seg, True, 0.0)
    assert res.verdict is Verdict.HOLD and res.inject == [enlarged]
    other = offending(CLIENT4, bytes([10, 0, 2, 1]))
    assert clamp.handle(other, True, 0.0).verdict is Verdict.ACCEPT  # another destination
    assert clamp.counters == {"icmp_too_big_lowered": 1, "pmtu_resent_raw": 1}
