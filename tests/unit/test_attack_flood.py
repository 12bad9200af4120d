"""The denial-of-service rows' packet builders and CPU arithmetic (mptcrypt.attacks.flood, join_index_dos): what
the attacker sends must be what the engine parses as SYN+HELLO / MP_JOIN + NEXTK1, from addresses that stay in the
lab's unrouted range."""

from __future__ import annotations

import ipaddress
import random
import socket

from mptcrypt.attacks import flood
from mptcrypt.attacks.join_index_dos import attack_cpu
from mptcrypt.wire import messages as m
from mptcrypt.wire.mptcp import Subtype
from mptcrypt.wire.segment import parse_segment
from mptcrypt.wire.tcp import SYN


def test_spoofed_sources_stay_in_the_spoof_network():
    rng = random.Random(1)
    for _ in range(2000):
        addr, port = flood.spoofed_source(rng)
        ip = ipaddress.ip_address(addr)
        assert ip in flood.SPOOF_NET and ip not in (flood.SPOOF_NET.network_address,
                                                     flood.SPOOF_NET.broadcast_address)
        assert 1024 <= port <= 65535


def test_hello_syn_is_what_the_engine_reads_as_an_mptcrypt_mp_capable_syn():
    seg = parse_segment(flood.hello_syn("10.99.1.2", 4000, "10.0.1.1", 6101, 77))
    assert (socket.inet_ntoa(seg.src), seg.sport, seg.dport, seg.seq, seg.flags) == ("10.99.1.2", 4000, 6101, 77, SYN)
    assert seg.mptcrypt() == m.Hello()
    assert [o.subtype for o in seg.mptcp()] == [Subtype.MP_CAPABLE]


def test_join_syn_carries_the_token_and_the_nextk1_index():
    proof = flood.random_proof()
    seg = parse_segment(flood.join_syn("10.99.0.9", 5000, "10.0.1.1", 6101, 9, 0xA1B2C3D4, 0xFFFF, proof))
    (mpj,) = seg.mptcp()
    assert mpj.subtype == Subtype.MP_JOIN and mpj.token == 0xA1B2C3D4
    assert seg.mptcrypt() == m.NextK1Join(0xFFFF, proof)


def test_attack_cpu_subtracts_the_rate_before_the_attack_while_the_load_lasts():
    # 0.1 s/s before t=10; from 10 to 12: 0.5 s more than the baseline; the load ends at 11
    samples = [(9.0, 1.0), (10.0, 1.1), (11.0, 1.7), (12.0, 1.7)]
    got = attack_cpu(samples, 10.0, t_load_end=11.0)
    assert got["baseline_cpu_per_s"] == 0.1 and got["window_s"] == 2.0
    assert got["attack_cpu_s"] == 0.5
    assert attack_cpu(samples[:1], 10.0, None) == {}
