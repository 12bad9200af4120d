"""The engine pair under loss, reordering, duplication and re-segmented retransmission (hypothesis), over IPv4
and IPv6, and connection state reclamation."""

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from mptcrypt.core.config import Config
from mptcrypt.core.events import Verdict
from mptcrypt.wire.tcp import ACK, FIN, PSH, SYN

from enginepair import EnginePair
from pktkit import C_ADDR, S_ADDR, segment, syn_options

V6_C = ipaddress.ip_address("2001:db8::2").packed
V6_S = ipaddress.ip_address("2001:db8::1").packed


def established(v6=False, **cfg):
    pair = EnginePair(**cfg)
    c, s = (V6_C, V6_S) if v6 else (C_ADDR, S_ADDR)
    pair.send("c", segment(c, 40000, s, 5000, 100, 0, SYN, syn_options()))
    pair.send("s", segment(s, 5000, c, 40000, 900, 101, SYN | ACK, syn_options(ts=False)))
    third = segment(c, 40000, s, 5000, 101, 901, ACK)
    assert pair.send("c", third) == [third]
    return pair, c, s


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=6000), st.randoms(use_true_random=False), st.booleans())
def test_any_segmentation_loss_reorder_and_duplication_delivers_the_kernel_bytes(data, rnd, v6):
    pair, c, s = established(v6)
    # the kernel's segments, then retransmissions with other boundaries, shuffled, some duplicated, some lost
    cuts = sorted(rnd.sample(range(1, len(data)), min(len(data) - 1, rnd.randint(0, 6)))) if len(data) > 1 else []
    bounds = list(zip([0] + cuts, cuts + [len(data)]))
    segs = [(a, b) for a, b in bounds]
    for _ in range(rnd.randint(0, 4)):
        a = rnd.randrange(len(data))
        segs.append((a, rnd.randint(a + 1, len(data))))
    segs += rnd.sample(segs, rnd.randint(0, len(segs)))
    rnd.shuffle(segs)
    for a, b in segs:
        pkt = segment(c, 40000, s, 5000, 101 + a, 901, ACK | PSH, [], data[a:b])
        protected = pair.eng["c"].stats()["segments_protected"]
        verified = pair.eng["s"].stats()["segments_verified"]
        if rnd.random() < 0.2:
            pair.drop_next_wire = 1  # lost on the wire: nothing arrives, nothing breaks
            assert pair.send("c", pkt) == []
            # the client engine protected it (nothing was held or sent plain); the server engine never saw it
            assert pair.eng["c"].stats()["segments_protected"] == protected + 1
            assert pair.eng["s"].stats()["segments_verified"] == verified
        else:
            assert pair.send("c", pkt) == [pkt]
            assert pair.eng["s"].stats()["segments_verified"] == verified + 1
    assert pair.eng["s"].stats()["mac_failures"] == 0


def test_sequence_numbers_wrapping_past_2_to_the_32():
    pair = EnginePair()
    isn = 2**32 - 1000
    pair.send("c", segment(C_ADDR, 40000, S_ADDR, 5000, isn, 0, SYN, syn_options()))
    pair.send("s", segment(S_ADDR, 5000, C_ADDR, 40000, 5, isn + 1, SYN | ACK, syn_options(ts=False)))
    pair.send("c", segment(C_ADDR, 40000, S_ADDR, 5000, isn + 1, 6, ACK))
    for k in range(4):  # 4 x 1400 bytes cross the 32-bit wrap
        pkt = segment(C_ADDR, 40000, S_ADDR, 5000, isn + 1 + 1400 * k, 6, ACK, [], bytes([k]) * 1400)
        assert pair.send("c", pkt) == [pkt]


def test_closed_connections_are_reclaimed_and_the_table_is_bounded():
    pair, c, s = established()
    fin_c = segment(c, 40000, s, 5000, 101, 901, ACK | FIN)
    fin_s = segment(s, 5000, c, 40000, 901, 102, ACK | FIN)
    assert pair.send("c", fin_c) == [fin_c] and pair.send("s", fin_s) == [fin_s]
    last = segment(c, 40000, s, 5000, 102, 902, ACK)
    assert pair.send("c", last) == [last]  # keys are kept for the last ACK
    pair.tick(Config().closed_linger + 2)
    assert pair.eng["c"].stats()["flows"] == 0 and pair.eng["s"].stats()["flows"] == 0
    # bounded: with room for 2 flows, a third SYN is left alone (plain), never a crash
    small = EnginePair(client=Config(max_connections=2))
    for port in (1, 2, 3):
        small.send("c", segment(C_ADDR, port, S_ADDR, 5000, 1, 0, SYN, syn_options()))
    assert small.eng["c"].stats()["flows"] == 2


def test_idle_flows_time_out():
    pair, c, s = established(client=Config(idle_timeout=30), server=Config(idle_timeout=30))
    pair.tick(31)
    assert pair.eng["c"].stats()["flows"] == 0
    # a protected segment for a flow the engine forgot is dropped, never handed over as if it were plaintext
    data = segment(s, 5000, c, 40000, 901, 101, ACK | PSH, [], b"late")
    pair2, _, _ = established()
    pair2.send("s", data)
    assert pair.inject("c", pair2.wire[-1]) is Verdict.DROP
