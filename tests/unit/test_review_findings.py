"""Findings of the security review (session 3): each test fails on the code before its fix, or is xfail(strict)
with the reason when the fix is not small."""

from __future__ import annotations

import pytest

import test_engine_handshake
from mptcrypt.core.events import Verdict
from mptcrypt.wire.mptcp import mptcp_token
from mptcrypt.wire.tcp import ACK, SYN

from enginepair import EnginePair
from pktkit import C_ADDR, S_ADDR, mpc, segment, syn_options
from test_engine_handshake import CISN, CKEY, SISN, SKEY


def test_an_outbound_mp_capable_naming_another_receiver_key_registers_no_token():
    """The client learns its own MP_CAPABLE key from outbound segments (core/mptcp.learn_keys). The receiver key
    in them must be the one the SYN-ACK carried, as inbound the server checks its own: otherwise a segment a local
    raw socket writes on the flow (sender key X, receiver key Z) maps token(X) and token(Z) to the protected
    connection, and the kernel's real third ACK is then never learned (conn.keys is full)."""
    pair = EnginePair()
    syn = segment(C_ADDR, 40000, S_ADDR, 5000, CISN, 0, SYN, syn_options(mpc(4)))
    pair.send("c", syn)
    synack = segment(S_ADDR, 5000, C_ADDR, 40000, SISN, CISN + 1, SYN | ACK, syn_options(mpc(12, SKEY), ts=False))
    pair.send("s", synack)
    forged = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK, [mpc(20, b"evil-key", b"victimk2")])
    pair.send("c", forged)
    third = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK, [mpc(20, CKEY, SKEY)])
    pair.send("c", third)
    tokens = set(pair.eng["c"]._t.tokens)
    assert mptcp_token(b"victimk2") not in tokens and mptcp_token(b"evil-key") not in tokens
    assert tokens == {mptcp_token(CKEY), mptcp_token(SKEY)}


def test_a_replayed_join_index_is_refused_after_the_replicas_session_index_overflowed(monkeypatch):
    """--workers N (docs/protocol.md §Workers, "no index used twice"): a worker drops a sibling's `claim` of a
    session it no longer knows by key (Replica.sessions keeps MAX_REPLICA_SESSIONS, oldest first out), yet the
    session is still alive in that worker (its connection and tokens). New sessions (full handshakes, which an
    attacker can make) push it out; the victim's join index claimed on worker 1 is then unknown on worker 0, and
    the victim's join SYN replayed from an address pair that hashes to worker 0 is accepted: the index is used
    twice, which one worker refuses. The size is 1 here for the test; 65,536 handshakes do it in the daemon."""
    import test_workers
    from mptcrypt.core.config import Config
    from mptcrypt.daemon import workers
    from mptcrypt.wire.tcp import parse_options
    from pktkit import decode as decode_packet

    monkeypatch.setattr(workers, "MAX_REPLICA_SESSIONS", 1)
    pair = EnginePair(Config(resume=False))
    server = pair.eng["s"] = test_workers.Workers(2, test_workers.by_path, seed=1001)
    test_workers.handshake(pair, mptcp=True)  # the victim's connection: worker 0
    test_workers.handshake(pair, sport=40001)  # a second session, also on worker 0 (a full handshake)
    test_workers.join_on_path2(pair)  # the victim's join, index 1: worker 1
    real = next(p for p in pair.wire if decode_packet(p)[1].flags == SYN and decode_packet(p)[1].sport == 41000)
    replay = segment(bytes([10, 0, 1, 66]), 41000, S_ADDR, 5000, 333, 0, SYN,
                     parse_options(decode_packet(real)[1].options))
    server.route = lambda addrs: 0
    assert pair.inject("s", replay) is Verdict.DROP
    assert server.stats(0)["joins_refused"] == 1 and server.stats(0)["repl_unknown_session"] == 0


@pytest.mark.xfail(strict=True, reason="review finding: the receiver keeps the peer's previous key generation "
                   "(Subflow.rx_prev) until the peer moves again, which a direction that sends little may never "
                   "do; forward secrecy of that generation then lasts the connection, not one rekey_interval. "
                   "Fix (not small): forget rx_prev once in-flight segments of it can no longer arrive, e.g. when a "
                   "verified ack of ours shows the peer received everything we sent before it moved, or after 2 MSL")
def test_the_previous_generation_is_forgotten_once_nothing_of_it_is_in_flight():
    """A download: the client sends its request under generation 0, then only pure ACKs. Its first ACK after
    rekey_interval moves it to generation 1 (the server follows); with no new bytes it never moves again (§4), so
    the server holds generation 0, the one that protected the request, for as long as the connection lives."""
    from mptcrypt.core.config import Config
    from test_engine_rekey import kernel_segment

    pair = EnginePair(client=Config(rekey_interval=10.0), server=Config(rekey_interval=10.0), fast_path=False)
    test_engine_handshake.handshake(pair)
    pair.send("c", kernel_segment("c", 0, 0, b"GET /big" * 10))
    captured = pair.wire[-1]  # the request as sealed under generation 0
    for k in range(1, 5):
        pair.now = 11.0 * k ** 3  # 11 s, 88 s, 297 s, 704 s
        pair.send("s", kernel_segment("s", 1000 * (k - 1), 80, b"x" * 1000))
        pair.send("c", kernel_segment("c", 80, 1000 * k))
    (sf,) = pair.eng["s"]._t.flows.values()
    assert pair.eng["s"].stats()["rekeys_followed"] == 1 and pair.eng["c"].stats()["rekeys_sent"] == 1
    assert sf.rx_prev is None
    assert pair.inject("s", captured) is Verdict.DROP  # generation 0 no longer opens


def test_the_hosts_own_syns_do_not_queue_behind_an_inbound_syn_flood():
    """The SYN lane takes only arriving SYNs: the host's own (its SYN-ACKs, its joins, its connections) stay on the
    segments' queue, so an inbound flood filling the lane cannot drop them (review finding)."""
    from mptcrypt.daemon.iptables import gateway_rule_lines, rule_lines, syn_lane_queue

    lines = rule_lines(5)
    flood_lane = f"--queue-num {syn_lane_queue(5)}"
    assert any(line.startswith("-A MPTC-IN") and "--tcp-flags SYN SYN" in line and flood_lane in line
               for line in lines)  # the lane inbound SYNs (a flood) go to
    outbound = [line for line in lines if line.startswith("-A MPTC-OUT")]
    assert not any(flood_lane in line for line in outbound)  # the host's own SYNs: the segments' queue
    assert "-A MPTC-OUT -p tcp -j NFQUEUE --queue-num 5" in outbound
    gateway = gateway_rule_lines(5, ("192.168.10.0/24",))
    assert not any(line.startswith("-A MPTC-GW-OUT") and flood_lane in line for line in gateway)
    assert any(line.startswith("-A MPTC-GW-IN") and flood_lane in line for line in gateway)


def test_an_ipv4_fragment_of_a_protected_flow_is_not_let_through_unverified():
    """Gateway mode (mangle PREROUTING / POSTROUTING) sees forwarded IPv4 fragments as they are when the box does
    not load conntrack (its defrag runs only with it): the first fragment of a forged segment, a RST here, was
    `parse_segment -> None -> ACCEPT` and the LAN host, which has no daemon of its own, reassembles and takes it
    without any MAC. IPv6 fragments were already dropped (issue 12 item 4); host mode is unaffected (Linux
    reassembles IPv4 before LOCAL_IN). Protected TCP is sent with DF, so no legitimate segment is lost."""
    from mptcrypt.wire.tcp import RST
    from test_engine_rekey import kernel_segment

    pair = EnginePair()
    test_engine_handshake.handshake(pair)
    rst = bytearray(segment(S_ADDR, 5000, C_ADDR, 40000, SISN + 1, CISN + 1, RST | ACK, []))
    rst[6] |= 0x20  # More Fragments: the first fragment (offset 0) carries the whole TCP header
    assert pair.inject("c", bytes(rst)) is Verdict.DROP
    data = bytearray(kernel_segment("s", 0, 0, b"forged"))
    data[6:8] = (0x2000).to_bytes(2, "big")  # MF, offset 0, DF cleared
    assert pair.inject("c", bytes(data)) is Verdict.DROP
    assert pair.eng["c"].stats()["malformed_dropped"] == 2
