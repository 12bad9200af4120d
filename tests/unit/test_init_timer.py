"""The INIT1 / INIT2 retransmission timer adapts to the path: 3 x the SYN round trip (RFC 6298 §2.2 from one
sample), at least `init_rto`, at most INIT_RTO_MAX; Karn's rule when a SYN or SYN-ACK was retransmitted.
Two in-memory engines with a wire delay of our choosing: time is passed in, nothing sleeps."""

from __future__ import annotations

from mptcrypt.constants import Msg
from mptcrypt.core.config import Config
from mptcrypt.core.engine import Engine
from mptcrypt.core.table import INIT_RTO_MAX, INIT_RTO_NO_SAMPLE, init_rto
from mptcrypt.wire.segment import parse_segment
from mptcrypt.wire.tcp import ACK, SYN

from pktkit import C_ADDR, S_ADDR, segment, syn_options

CISN, SISN = 100, 900


def inits(packets, marker):
    return [p for p in packets if parse_segment(p).marker() == marker]


def handshake(one_way: float, syn_again_at: float | None = None, synack_again: bool = False):
    """SYN at t=0, each segment `one_way` seconds on the wire. Returns the engines, INIT1's send time (it leaves
    when the SYN-ACK arrives) and INIT2's (it leaves when INIT1 arrives): neither answer is delivered."""
    client, server = Engine(Config()), Engine(Config())
    syn_k = segment(C_ADDR, 40000, S_ADDR, 5000, CISN, 0, SYN, syn_options())
    syn = client.handle(syn_k, True, 0.0).packet
    t = 0.0
    if syn_again_at is not None:  # the kernel retransmits its SYN: the first was lost
        t = syn_again_at
        syn = client.handle(syn_k, True, t).packet
    t += one_way
    server.handle(syn, False, t)
    synack_k = segment(S_ADDR, 5000, C_ADDR, 40000, SISN, CISN + 1, SYN | ACK, syn_options(ts=False))
    synack = server.handle(synack_k, True, t).packet
    if synack_again:  # the server kernel sends its SYN-ACK again (the client's SYN came twice)
        t += 0.5
        synack = server.handle(synack_k, True, t).packet
    t += one_way
    init1 = inits(client.handle(synack, False, t).inject, Msg.INIT1)
    assert len(init1) == 1
    t_init1 = t
    t += one_way
    init2 = inits(server.handle(init1[0], False, t).inject, Msg.INIT2)
    assert len(init2) == 1
    return client, server, t_init1, t


def retransmitted(engine: Engine, marker, at: float) -> int:
    return len(inits(engine.handle_timer(at), marker))


def test_a_160ms_round_trip_never_fires_the_timer_before_the_answer_can_be_back():
    """80 ms one way: the answer to INIT1 (INIT2) is due 160 ms after it left; the fixed 200 ms timeout of before
    was 40 ms from firing. With 3 x RTT the first retransmission waits 480 ms."""
    client, server, t1, t2 = handshake(0.08)
    assert retransmitted(client, Msg.INIT1, t1 + 0.47) == 0
    assert retransmitted(server, Msg.INIT2, t2 + 0.47) == 0
    assert client.stats()["init_retransmits"] == server.stats()["init_retransmits"] == 0
    assert retransmitted(client, Msg.INIT1, t1 + 0.49) == 1  # a lost INIT1 still goes again...
    assert retransmitted(server, Msg.INIT2, t2 + 0.49) == 1
    assert retransmitted(client, Msg.INIT1, t1 + 0.49 + 0.95) == 0  # ...then backs off: 960 ms
    assert retransmitted(client, Msg.INIT1, t1 + 0.49 + 0.97) == 1


def test_a_short_path_retransmits_a_lost_init_after_the_floor():
    """1 ms one way: 3 x RTT is 6 ms, so the floor (init_rto, 100 ms) decides; a lost INIT goes again after it."""
    floor = Config().init_rto
    client, server, t1, t2 = handshake(0.001)
    assert retransmitted(client, Msg.INIT1, t1 + floor - 0.001) == 0
    assert retransmitted(client, Msg.INIT1, t1 + floor + 0.001) == 1
    assert retransmitted(server, Msg.INIT2, t2 + floor + 0.001) == 1


def test_no_rtt_sample_from_a_retransmitted_syn_or_synack():
    """Karn: after a retransmitted SYN the SYN-ACK may answer either copy, so the client takes no sample
    (RFC 6298 §2.1 initial 1 s); the same for the server after a retransmitted SYN-ACK."""
    client, server, t1, t2 = handshake(0.001, syn_again_at=1.0)
    assert retransmitted(client, Msg.INIT1, t1 + INIT_RTO_NO_SAMPLE - 0.01) == 0
    assert retransmitted(client, Msg.INIT1, t1 + INIT_RTO_NO_SAMPLE + 0.01) == 1
    assert retransmitted(server, Msg.INIT2, t2 + 0.1) == 1  # the server's own sample was clean
    client, server, t1, t2 = handshake(0.001, synack_again=True)
    assert retransmitted(server, Msg.INIT2, t2 + INIT_RTO_NO_SAMPLE - 0.01) == 0
    assert retransmitted(server, Msg.INIT2, t2 + INIT_RTO_NO_SAMPLE + 0.01) == 1


def test_init_rto_bounds():
    assert init_rto(0.1, 0.0) == 0.1
    assert init_rto(0.1, 0.16) == 3 * 0.16
    assert init_rto(0.1, 5.0) == INIT_RTO_MAX  # a stalled daemon's sample does not leave a lost INIT waiting
    assert init_rto(5.0, 0.2) == 5.0  # a configured floor above the cap wins
    assert init_rto(0.1, None) == INIT_RTO_NO_SAMPLE
