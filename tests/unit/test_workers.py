"""`mptcrypt daemon --workers N` without root: engines of sibling workers joined by the replication messages
(daemon/workers.py Replica over real socketpairs), a subflow's packets routed to a worker by its address pair as
the kernel's --queue-balance does. docs/protocol.md §Workers is the design these tests hold it to."""

import socket
import threading

import pytest

from mptcrypt.core.config import Config
from mptcrypt.core.engine import Engine
from mptcrypt.core.events import Result, Verdict
from mptcrypt.core.session import Session
from mptcrypt.daemon.iptables import rule_lines
from mptcrypt.daemon.workers import Replica, decode, encode, merge_sessions, merge_stats
from mptcrypt.wire.segment import parse_segment
from mptcrypt.wire.tcp import ACK, PSH, SYN, parse_options

from enginepair import EnginePair
from pktkit import C2_ADDR, C_ADDR, S2_ADDR, S_ADDR, decode as decode_packet, dss, mpj_synack, segment, syn_options
from test_engine_handshake import CISN, SISN, handshake, join_syn

KIND_EXP = 253


class Workers:
    """N engines of one host, each with its Replica; `route(pair of addresses) -> worker` stands for the kernel's
    queue hash. Quacks like one Engine for EnginePair; held join SYNs released by a sibling go out as injects."""

    def __init__(self, count: int, route, seed: int):
        counter = iter(range(1 << 30))
        self.engines = [Engine(Config(), random=lambda n: (f"{seed}:{next(counter)}".encode() * n)[:n])
                        for _ in range(count)]
        self.route = route
        socks = {k: [] for k in range(count)}
        for i in range(count):
            for j in range(i + 1, count):
                a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                socks[i].append(a)
                socks[j].append(b)
        lock = threading.Lock()
        self.replicas = [Replica(k, count, socks[k], lock) for k in range(count)]
        for engine, replica in zip(self.engines, self.replicas):
            replica.attach(engine)

    def worker(self, packet: bytes) -> int:
        seg = parse_segment(packet)
        return self.route(frozenset((seg.src, seg.dst)))

    def handle(self, packet: bytes, outbound: bool, now: float) -> Result:
        res = self.engines[self.worker(packet)].handle(packet, outbound, now)
        return Result(res.verdict, res.packet, inject=list(res.inject) + self.released(now))

    def handle_timer(self, now: float) -> list[bytes]:
        out = [p for e in self.engines for p in e.handle_timer(now)]
        return out + self.released(now)

    def released(self, now: float) -> list[bytes]:
        """What a worker loop does after each wakeup: read the siblings, send held joins that may go now."""
        out = []
        for engine, replica in zip(self.engines, self.replicas):
            replica.drain()
            for packet in replica.take_due(now):
                res = engine.handle(packet, True, now)
                if res.verdict is Verdict.ACCEPT:
                    out.append(res.packet or packet)
        return out

    def stats(self, k: int) -> dict:
        return {**self.engines[k].stats(), **self.replicas[k].counters}


PATH1, PATH2 = frozenset((C_ADDR, S_ADDR)), frozenset((C2_ADDR, S2_ADDR))


def by_path(addrs) -> int:
    return 0 if addrs == PATH1 else 1  # path 1 hashes to worker 0, everything else to worker 1


def server_workers() -> tuple[EnginePair, Workers]:
    pair = EnginePair()
    pair.eng["s"] = Workers(2, by_path, seed=1001)
    return pair, pair.eng["s"]


def join_on_path2(pair, sport=41000, isn=333):
    """The client kernel's join SYN, the server kernel's SYN-ACK, the third ACK with data; the data as received."""
    pair.send("c", join_syn(sport=sport, isn=isn))
    synack = segment(S2_ADDR, 5000, C2_ADDR, sport, 444, isn + 1, SYN | ACK,
                     syn_options(mpj_synack(b"h" * 8, b"RRRR"), ts=False))
    pair.send("s", synack)
    ack = segment(C2_ADDR, sport, S2_ADDR, 5000, isn + 1, 445, ACK | PSH, [dss(1, 2, 1, 10)], b"0123456789")
    return ack, pair.send("c", ack)


def test_a_join_on_another_worker_is_keyed_from_the_replicated_session():
    pair, server = server_workers()
    handshake(pair, mptcp=True)  # the first subflow: server worker 0
    ack, got = join_on_path2(pair)  # the join: server worker 1, which never saw the handshake
    assert got == [ack] and b"0123456789" not in pair.wire[-1]
    s0, s1 = server.stats(0), server.stats(1)
    assert s0["handshakes_completed"] == 1 and s0["joins_protected"] == 0
    assert s1["joins_protected"] == 1 and s1["joins_zero_pk"] == 1 and s1["pk_ops"] == 0 and s1["repl_received"] >= 1
    sid = pair.eng["c"].session_id(("10.0.1.2", 40000), ("10.0.1.1", 5000))
    assert server.engines[1].session_id(("10.0.2.1", 5000), ("10.0.2.2", 41000)) == sid
    merged = merge_sessions([e.sessions() for e in server.engines])
    (row,) = [r for r in merged if r["sid"] == sid.hex()]
    assert sorted((s["kind"], s["worker"]) for s in row["subflows"]) == [("join", 1), ("mptcp", 0)]


def test_without_replication_the_sibling_would_let_the_join_through_unprotected():
    """What the replication prevents (the test above fails this way without it): a worker that never heard of
    the connection takes the join for one it does not protect."""
    pair, server = server_workers()
    for engine, replica in zip(server.engines, server.replicas):
        engine.replicate(None)
        replica.peers = []
    handshake(pair, mptcp=True)
    ack, got = join_on_path2(pair)
    assert server.stats(1)["joins_protected"] == 0
    assert server.engines[1].session_id(("10.0.2.1", 5000), ("10.0.2.2", 41000)) is None


def test_a_replayed_join_index_is_refused_by_every_worker():
    pair, server = server_workers()
    handshake(pair, mptcp=True)
    join_on_path2(pair)
    real = next(p for p in pair.wire if decode_packet(p)[1].flags == SYN and decode_packet(p)[1].sport == 41000)
    _, h, _ = decode_packet(real)
    # the same NEXTK1 from an address whose pair hashes to worker 0: that worker must know index 1 is used
    replay = segment(bytes([10, 0, 1, 66]), 41000, S_ADDR, 5000, 333, 0, SYN, parse_options(h.options))
    server.route = lambda addrs: 0
    assert pair.inject("s", replay) is Verdict.DROP
    assert server.stats(0)["joins_refused"] == 1
    assert server.stats(1)["claims_locked"] == 1  # the peer-chosen index was claimed under the shared lock


def test_a_resumption_from_a_new_address_is_resumed_by_the_sibling_worker():
    pair, server = server_workers()
    handshake(pair)  # plain TCP, full handshake on worker 0
    # the client moved: a new connection from its path-2 address, whose address pair is queued to worker 1
    syn = segment(C2_ADDR, 40100, S_ADDR, 5000, 900, 0, SYN, syn_options())
    pair.send("c", syn)
    synack = segment(S_ADDR, 5000, C2_ADDR, 40100, 1900, 901, SYN | ACK, syn_options(ts=False))
    pair.send("s", synack)
    s1 = server.stats(1)
    assert s1["resumptions"] == 1 and s1["pk_ops"] == 0 and s1["resume_fallbacks"] == 0
    data = segment(C2_ADDR, 40100, S_ADDR, 5000, 901, 1901, ACK | PSH, [], b"resumed bytes")
    assert pair.send("c", data) == [data] and b"resumed bytes" not in pair.wire[-1]


def test_an_outbound_join_waits_for_the_first_subflow_keyed_by_a_sibling():
    """Client side: the kernel opens the join (path 2, worker 1) while the first subflow (worker 0) still waits
    for INIT2. Worker 1 holds the SYN; when worker 0's keys arrive it leaves with NEXTK1 and is keyed."""
    pair = EnginePair()
    client = pair.eng["c"] = Workers(2, by_path, seed=1)
    lost = []
    pair.tap = lambda p: (lost.append(p), None)[1] if b"MPTC" in p and not lost else p  # lose the first INIT1
    handshake(pair, mptcp=True)
    assert len(lost) == 1
    assert pair.send("c", join_syn()) == []  # held by worker 1, not sent without NEXTK1
    assert client.stats(1)["joins_held_for_sibling"] == 1
    assert not any(decode_packet(p)[1].sport == 41000 for p in pair.wire)
    pair.tick(0.25)  # INIT1 again -> INIT2 -> worker 0 keyed -> worker 1 releases the join SYN
    (sent,) = [p for p in pair.wire if decode_packet(p)[1].sport == 41000]
    assert KIND_EXP in [o.kind for o in parse_options(decode_packet(sent)[1].options)]  # NEXTK1
    assert client.stats(1)["joins_released"] == 1 and pair.eng["s"].stats()["joins_refused"] == 0
    synack = segment(S2_ADDR, 5000, C2_ADDR, 41000, 444, 334, SYN | ACK,
                     syn_options(mpj_synack(b"h" * 8, b"RRRR"), ts=False))
    pair.send("s", synack)
    assert client.stats(1)["joins_protected"] == 1 and client.stats(1)["pk_ops"] == 0


def test_own_key_indices_of_two_workers_never_collide():
    copies = [Session(b"s" * 32, True, 1, 1, C_ADDR) for _ in range(2)]  # one session as two workers hold it
    lanes = [[copies[k].allocate(k, 2) for _ in range(4)] for k in (0, 1)]
    assert lanes == [[1, 5, 9, 13], [3, 7, 11, 15]]
    single = Session(b"s" * 32, False, 1, 1, C_ADDR)
    assert [single.allocate() for _ in range(3)] == [2, 4, 6]  # one worker: every index, as before
    ahead = Session(b"s" * 32, True, 1, 1, C_ADDR)
    assert ahead.claim(9, ("flow",)) and ahead.allocate(1, 2) == 11  # a sibling used 9: allocate above it


def test_tokens_stay_while_any_worker_has_a_subflow():
    pair, server = server_workers()
    handshake(pair, mptcp=True)
    join_on_path2(pair)
    t0, t1 = server.engines[0].replicate(server.replicas[0]), server.engines[1].replicate(server.replicas[1])
    tokens = set(t0.tokens)
    assert tokens and tokens == set(t1.tokens)
    t0.drop_flow(next(iter(t0.flows.values())))  # the first subflow ends; the join on worker 1 lives on
    server.released(0.0)
    assert set(t0.tokens) == tokens  # a further join landing on worker 0 still finds the connection
    t1.drop_flow(next(sf for sf in t1.flows.values() if sf.join))
    server.released(0.0)
    assert not t0.tokens and not t1.tokens


def test_messages_round_trip_and_junk_is_rejected():
    msg = {"t": "claim", "from": 1, "sk": "ab" * 16, "index": 3, "flow": ["0a000102", 40000, "0a000101", 5000]}
    assert decode(encode(msg)) == msg
    for junk in (b"[]", b'{"t": "evil"}', b"{}"):
        with pytest.raises(ValueError):
            decode(junk)


def test_merged_counters_sum_except_maxima():
    merged = merge_stats([{"packets": 3, "flows_tracked_max": 5, "sessions_cached": 2, "label": "x"},
                          {"packets": 4, "flows_tracked_max": 7, "sessions_cached": 2}])
    assert merged == {"packets": 7, "flows_tracked_max": 7, "sessions_cached": 2}


def test_rules_balance_the_queues_of_all_workers():
    lines = rule_lines(4242, fail_open=True, workers=2)
    assert "-A MPTC-OUT -p tcp -j NFQUEUE --queue-balance 4242:4243 --queue-bypass" in lines
    assert all("--queue-num" not in line for line in lines)
    assert "-A MPTC-OUT -p tcp -j NFQUEUE --queue-num 4242" in rule_lines(4242)


@pytest.mark.parametrize("data, message", [
    ({"workers": 0}, "workers must be at least 1, not 0"),
    ({"workers": 17}, "workers must be between 1 and 16, not 17"),
    ({"workers": 2, "queue_num": 65532}, "queues 65532..65535 of 2 workers and their SYN lanes end above 65534: "
                                         "lower queue_num"),
])
def test_bad_worker_counts_are_refused_with_a_reason(data, message):
    from mptcrypt.daemon.config import DaemonConfig, apply
    from mptcrypt.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        apply(DaemonConfig(), data, "f.toml")


def test_takeover_with_several_workers_is_refused_clearly(monkeypatch):
    from mptcrypt.daemon import main
    from mptcrypt.daemon.config import DaemonConfig
    from mptcrypt.errors import ConfigError

    monkeypatch.setattr(main.os, "geteuid", lambda: 0)
    with pytest.raises(ConfigError, match="--takeover needs --workers 1"):
        main.run_daemon(DaemonConfig(workers=2), takeover=True)
