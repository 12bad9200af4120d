"""Fail-closed protection (issue 12): no path from a protected connection to plaintext, no way to re-point a join.
Each test reproduces a finding against two (or three) in-memory engines; each failed on the engine before its fix.
"""

import struct

from mptcrypt.core.config import Config, Policy
from mptcrypt.core.events import Verdict
from mptcrypt.core.state import State
from mptcrypt.wire.tcp import ACK, PSH, RST, SYN, TCPOption, parse_options

from enginepair import EnginePair
from pktkit import C2_ADDR, C_ADDR, S2_ADDR, S_ADDR, decode, mpc, mpj_syn, mpj_synack, segment, syn_options, token
from test_engine_handshake import CISN, CKEY, SISN, SKEY, handshake, join_syn, mptcp_pair

C_LOCAL, S_LOCAL = ("10.0.1.2", 40000), ("10.0.1.1", 5000)


# --- 1: SYN replay -------------------------------------------------------------------------------------------
def test_replayed_original_syn_without_hello_never_downgrades_a_live_flow():
    """The attacker replays the subflow's own SYN (same ISN, HELLO removed) to the server and a SYN with the
    server's ISN to the client: both flows must stay keyed, and plaintext injected afterwards must not pass."""
    pair = EnginePair()
    handshake(pair)
    sid = pair.eng["c"].session_id(C_LOCAL, S_LOCAL)
    replay_to_s = segment(C_ADDR, 40000, S_ADDR, 5000, CISN, 0, SYN, syn_options())
    replay_to_c = segment(S_ADDR, 5000, C_ADDR, 40000, SISN, 0, SYN, syn_options())
    assert pair.inject("s", replay_to_s) is Verdict.DROP
    assert pair.inject("c", replay_to_c) is Verdict.DROP
    assert pair.eng["s"].flow_state(S_LOCAL, C_LOCAL) is State.ENCRYPTING
    assert pair.eng["c"].flow_state(C_LOCAL, S_LOCAL) is State.ENCRYPTING
    assert pair.eng["c"].session_id(C_LOCAL, S_LOCAL) == sid
    forged = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK | PSH, [], b"forged plaintext")
    assert pair.inject("s", forged) is Verdict.DROP
    forged_rst = segment(S_ADDR, 5000, C_ADDR, 40000, SISN + 1, CISN + 1, RST | ACK)
    assert pair.inject("c", forged_rst) is Verdict.DROP
    data = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK | PSH, [], b"still secret")
    assert pair.send("c", data) == [data] and b"still secret" not in pair.wire[-1]
    for e in pair.eng.values():
        assert e.stats()["fallbacks_plain"] == 0 and e.stats()["syn_on_live_flow_dropped"] == 1


def test_replayed_syn_with_hello_on_a_keyed_flow_is_dropped_too():
    pair = EnginePair()
    handshake(pair)
    hello_syn = pair.eng["c"].handle(segment(C_ADDR, 40000, S_ADDR, 5000, CISN, 0, SYN, syn_options()), True, 0.0)
    # (the client engine answers its own retransmission; the copy on the wire is what the attacker replays)
    assert pair.inject("s", hello_syn.packet or b"") is Verdict.DROP
    assert pair.eng["s"].flow_state(S_LOCAL, C_LOCAL) is State.ENCRYPTING


# --- 2: token-table poisoning -----------------------------------------------------------------------------------
def three_hosts():
    """A server engine shared by a victim's pair and an attacker's pair (the attacker runs its own daemon)."""
    victim = EnginePair()
    attacker = EnginePair(seed=77)
    attacker.eng["s"] = victim.eng["s"]
    attacker.rx["s"] = victim.rx["s"]
    return victim, attacker


def test_an_attackers_own_third_ack_cannot_point_the_victims_token_at_its_session():
    victim, attacker = three_hosts()
    handshake(victim, mptcp=True)
    # the attacker's own protected MPTCP connections; their third ACKs name the victim's (sniffed) server key,
    # as the receiver's key, then as the attacker's own (sender's) key beside the right receiver key
    for port, skey2, keys in ((41000, b"skey2-mp", (b"akey-mpt", SKEY)), (41002, b"skey3-mp", (SKEY, b"skey3-mp"))):
        attacker.send("c", segment(C2_ADDR, port, S_ADDR, 5000, 10, 0, SYN, syn_options(mpc(4))))
        lost = []  # INIT1 lost once: the third ACK is held, so the attacker's engine learns its keys on release
        attacker.tap = lambda p: (lost.append(p), None)[1] if b"MPTC" in p and not lost else p
        attacker.send("s", segment(S_ADDR, 5000, C2_ADDR, port, 20, 11, SYN | ACK,
                                   syn_options(mpc(12, skey2), ts=False)))
        attacker.tap = None
        attacker.send("c", segment(C2_ADDR, port, S_ADDR, 5000, 11, 21, ACK, [mpc(20, *keys)]))
        attacker.tick(0.25)
    s = victim.eng["s"]
    # its join SYN for the victim's token, with a NEXTK1 from ITS session, must not reach the server kernel
    before = len(victim.rx["s"])
    join = segment(C2_ADDR, 41001, S2_ADDR, 5000, 333, 0, SYN, syn_options(mpj_syn(token(SKEY), b"NNNN")))
    assert attacker.send("c", join) == []
    assert len(victim.rx["s"]) == before and s.stats()["joins_refused"] == 1
    assert s.stats().get("token_collisions_refused") == 2
    # the victim's own join still works
    victim.send("c", segment(C2_ADDR, 42000, S2_ADDR, 5000, 444, 0, SYN, syn_options(mpj_syn(token(SKEY), b"MMMM"))))
    assert len(victim.rx["s"]) == before + 1 and s.stats()["joins_refused"] == 1


def test_a_third_ack_whose_receiver_key_is_not_our_kernels_registers_nothing():
    pair = EnginePair()
    syn = segment(C_ADDR, 40000, S_ADDR, 5000, CISN, 0, SYN, syn_options(mpc(4)))
    pair.send("c", syn)
    pair.send("s", segment(S_ADDR, 5000, C_ADDR, 40000, SISN, CISN + 1, SYN | ACK,
                           syn_options(mpc(12, SKEY), ts=False)))
    pair.send("c", segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK, [mpc(20, CKEY, b"otherkey")]))
    assert pair.eng["s"].stats()["token_collisions_refused"] == 1


# --- 8: the whole MP_JOIN option is covered; issue 13: proofs survive NAT --------------------------------------
def rewrite_join(packet: bytes, addr_id=None, backup=None) -> bytes:
    """The join SYN with its MP_JOIN option's address id and/or backup bit changed (an on-path attacker)."""
    _, h, payload = decode(packet)
    opts = []
    for o in parse_options(h.options):
        if o.kind == 30 and o.data[0] >> 4 == 1:
            flags = o.data[0] if backup is None else (o.data[0] & 0xFE) | int(backup)
            o = TCPOption(30, bytes((flags, o.data[1] if addr_id is None else addr_id)) + o.data[2:])
        opts.append(o)
    return segment(packet[12:16], h.sport, packet[16:20], h.dport, h.seq, h.ack, h.flags, opts, payload, h.window)


def test_an_on_path_change_of_the_join_address_id_or_backup_bit_is_refused():
    pair = mptcp_pair()
    syn = join_syn()
    out = pair.eng["c"].handle(syn, True, 0.0).packet
    for forged in (rewrite_join(out, addr_id=9), rewrite_join(out, backup=True)):
        assert pair.inject("s", forged) is Verdict.DROP
    assert pair.eng["s"].stats()["joins_refused"] == 2
    assert pair.inject("s", out) is Verdict.ACCEPT  # the untouched one still joins


class Nat:
    """A NAT between client and server that rewrites the client's address (MASQUERADE keeping the port: the
    protocol-v1 segment MAC still covers the ports, which docs/protocol.md §5 owns; the proofs bind neither)."""

    def __init__(self):
        self.out: dict = {}
        self.back: dict = {}

    def __call__(self, packet: bytes) -> bytes:
        ip, h, payload = decode(packet)
        src, dst = packet[12:16], packet[16:20]
        if dst in (S_ADDR, S2_ADDR):
            pub = self.out.setdefault((src, h.sport), (bytes((192, 0, 2, 1 + len(self.out))), h.sport))
            self.back[pub] = (src, h.sport)
            src, sport, dport = pub[0], pub[1], h.dport
        else:
            (dst, dport), sport = self.back[(dst, h.dport)], h.sport
        return segment(src, sport, dst, dport, h.seq, h.ack, h.flags, parse_options(h.options), payload, h.window)


def nat_handshake(pair, sport, pub, cisn, sisn, mptcp):
    """SYN, SYN-ACK, third ACK with the server kernel addressing the client's public (NAT) address `pub`."""
    pair.send("c", segment(C_ADDR, sport, S_ADDR, 5000, cisn, 0, SYN, syn_options(mpc(4) if mptcp else None)))
    pair.send("s", segment(S_ADDR, 5000, *pub, sisn, cisn + 1, SYN | ACK,
                           syn_options(mpc(12, SKEY) if mptcp else None, ts=False)))
    third = segment(C_ADDR, sport, S_ADDR, 5000, cisn + 1, sisn + 1, ACK, [mpc(20, CKEY, SKEY)] if mptcp else [])
    return pair.send("c", third)


def test_joins_and_resumption_work_through_a_nat_that_rewrites_the_client_address():
    pair = EnginePair()
    pair.tap = Nat()
    assert len(nat_handshake(pair, 40000, (bytes((192, 0, 2, 1)), 40000), CISN, SISN, mptcp=True)) == 1
    data = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK | PSH, [], b"through the nat")
    (got,) = pair.send("c", data)
    assert decode(got)[2] == b"through the nat"
    assert pair.send("c", join_syn()) != []  # NEXTK1 verifies although the server sees another address and port
    synack = segment(S2_ADDR, 5000, bytes((192, 0, 2, 2)), 41000, 444, 334, SYN | ACK,
                     syn_options(mpj_synack(b"h" * 8, b"RRRR"), ts=False))
    assert pair.send("s", synack) != []  # NEXTK2 verifies at the client
    for e in pair.eng.values():
        assert e.stats()["joins_protected"] == 1 and e.stats()["joins_refused"] == 0
    # a second connection resumes through the NAT
    assert len(nat_handshake(pair, 40002, (bytes((192, 0, 2, 3)), 40002), 5, 9, mptcp=False)) == 1
    for e in pair.eng.values():
        assert e.stats()["resumptions"] == 1 and e.stats()["pk_ops"] == 1


# --- 3: forgotten flows --------------------------------------------------------------------------------------------
def is_rst_for(packet: bytes, dst: bytes) -> bool:
    _, h, _ = decode(packet)
    return bool(h.flags & RST) and packet[16:20] == dst


def test_required_drops_unknown_established_segments_and_resets_the_local_connection():
    """A connection older than the daemon (or its state lost) on a port where protection is required."""
    from mptcrypt.core.engine import Engine

    eng = Engine(Config(policy=Policy.REQUIRED))
    out = segment(C_ADDR, 40000, S_ADDR, 5000, 100, 200, ACK | PSH, [], b"would leave in clear")
    r = eng.handle(out, True, 0.0)
    assert r.verdict is Verdict.DROP and len(r.inject) == 1 and is_rst_for(r.inject[0], C_ADDR)
    assert decode(r.inject[0])[1].seq == 200  # the local kernel's rcv_nxt: in window
    inbound = segment(S_ADDR, 5000, C_ADDR, 40000, 200, 100, ACK | PSH, [], b"would arrive in clear")
    r = eng.handle(inbound, False, 0.0)
    assert r.verdict is Verdict.DROP and is_rst_for(r.inject[0], C_ADDR)
    assert eng.stats()["unknown_flow_dropped"] == 2


def test_a_protected_flow_the_table_forgot_never_continues_in_clear():
    pair = EnginePair()
    handshake(pair)
    pair.tick(Config().idle_timeout + 2)  # idle: reclaimed (no kernel to ask in memory)
    assert pair.eng["c"].stats()["flows"] == 0
    data = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK | PSH, [], b"after the idle period")
    r = pair.eng["c"].handle(data, True, pair.now)
    assert r.verdict is Verdict.DROP and is_rst_for(r.inject[0], C_ADDR)
    assert all(b"after the idle period" not in p for p in pair.wire)


def test_an_idle_flow_whose_socket_the_kernel_still_has_is_kept():
    asked = []

    def alive(keys):
        asked.extend(keys)
        return set(keys)

    pair = EnginePair()
    from mptcrypt.core.engine import Engine

    pair.eng = {side: Engine(Config(), random=e._t.random, socket_alive=alive) for side, e in pair.eng.items()}
    handshake(pair)
    pair.tick(Config().idle_timeout + 2)
    assert asked and pair.eng["c"].stats()["flows"] == 1 and pair.eng["c"].stats()["idle_kept_alive"] == 1
    data = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK | PSH, [], b"hours later")
    assert pair.send("c", data) == [data] and b"hours later" not in pair.wire[-1]


def test_a_restarted_daemon_resets_the_protected_connections_it_cannot_continue():
    from mptcrypt.core.engine import Engine

    pair = EnginePair()
    handshake(pair)
    pair.eng["s"] = Engine(Config())  # the server daemon restarted: its state is gone
    data = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK | PSH, [], b"secret")
    wire = pair.eng["c"].handle(data, True, 0.0).packet
    r = pair.eng["s"].handle(wire, False, 0.0)
    assert r.verdict is Verdict.DROP and is_rst_for(r.inject[0], S_ADDR)


def test_shutdown_resets_open_protected_connections_on_both_sides():
    pair = EnginePair()
    handshake(pair)
    local, peer = pair.eng["c"].shutdown()
    assert is_rst_for(local, C_ADDR)
    got = pair.eng["s"].handle(peer, False, 0.0)  # protected: the peer daemon lets it through
    assert got.verdict is Verdict.ACCEPT and is_rst_for(got.packet, S_ADDR)


def test_a_full_table_under_required_refuses_instead_of_going_plain():
    pair = EnginePair(client=Config(policy=Policy.REQUIRED, max_connections=1))
    handshake(pair)  # the one slot holds a keyed connection: nothing to evict
    r = pair.eng["c"].handle(segment(C_ADDR, 2, S_ADDR, 5000, 1, 0, SYN, syn_options()), True, 0.0)
    assert r.verdict is Verdict.DROP


# --- 6: cheap denial of service -------------------------------------------------------------------------------------
def test_a_join_index_far_ahead_is_refused_before_any_key_work():
    from mptcrypt.crypto import keyschedule as ks

    pair = mptcp_pair()
    calls = []
    real = ks.next_ss
    ks.next_ss = lambda ss: (calls.append(1), real(ss))[1]
    try:
        forged = join_syn()
        out = pair.eng["c"].handle(forged, True, 0.0).packet
        _, h, _ = decode(out)
        opts = [TCPOption(o.kind, o.data[:3] + b"\xff\xff" + o.data[5:]) if o.kind == 253 else o
                for o in parse_options(h.options)]  # NEXTK1 index 0xFFFF
        bad = segment(C2_ADDR, 41000, S2_ADDR, 5000, h.seq, 0, SYN, opts)
        assert pair.inject("s", bad) is Verdict.DROP
    finally:
        ks.next_ss = real
    assert len(calls) < 40 and pair.eng["s"].stats()["joins_refused"] == 1


def test_a_flood_of_half_open_flows_cannot_crowd_out_a_real_connection():
    pair = EnginePair(server=Config(max_connections=64))
    for i in range(500):  # spoofed SYN+HELLO from many sources, never completed
        src = bytes((10, 9, i >> 8, i & 0xFF))
        syn = pair.eng["c"].handle(segment(src, 1000 + i, S_ADDR, 5000, i, 0, SYN, syn_options()), True, 0.0).packet
        pair.eng["s"].handle(syn, False, 0.0)
    third, got = handshake(pair)
    assert got == [third] and pair.eng["s"].stats()["half_open_evicted"] > 0
    data = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK | PSH, [], b"real data")
    assert pair.send("c", data) == [data] and b"real data" not in pair.wire[-1]


def test_half_open_flows_expire_and_replaced_sessions_leave_no_resume_ids():
    pair = EnginePair()
    pair.eng["s"].handle(pair.eng["c"].handle(segment(C_ADDR, 1, S_ADDR, 5000, 1, 0, SYN, syn_options()),
                                              True, 0.0).packet, False, 0.0)
    pair.tick(80.0)
    assert pair.eng["s"].stats()["flows"] == 0
    pair = EnginePair(client=Config(resume=False))
    for port in (40000, 40001, 40002):  # three full handshakes with the same peer: each replaces the cached session
        handshake(pair, sport=port)
    assert len(pair.eng["s"]._t.resume) == 4  # only the current session's window
    assert pair.eng["s"].stats()["half_open_evicted"] == 0


# --- 4: IPv6 extension headers ---------------------------------------------------------------------------------
V6_C = bytes.fromhex("20010db8000000000000000000000002")
V6_S = bytes.fromhex("20010db8000000000000000000000001")


def with_ext_headers(packet: bytes, *headers: int) -> bytes:
    """The IPv6 `packet` with 8-byte extension headers of the given types (Hop-by-Hop 0, Destination Options 60,
    Fragment 44...) inserted before TCP; payload length fixed."""
    body, nxt = packet[40:], packet[6]
    for h in reversed(headers):
        body = bytes((nxt, 0, 1, 4, 0, 0, 0, 0)) + body  # next header, length 0 (8 bytes), PadN
        nxt = h
    return packet[:4] + struct.pack("!HB", len(body), nxt) + packet[7:40] + body


def v6_established():
    pair = EnginePair()
    pair.send("c", segment(V6_C, 40000, V6_S, 5000, CISN, 0, SYN, syn_options()))
    pair.send("s", segment(V6_S, 5000, V6_C, 40000, SISN, CISN + 1, SYN | ACK, syn_options(ts=False)))
    third = segment(V6_C, 40000, V6_S, 5000, CISN + 1, SISN + 1, ACK)
    assert pair.send("c", third) == [third]
    return pair


def test_ipv6_extension_headers_do_not_bypass_the_mac():
    pair = v6_established()
    forged = with_ext_headers(segment(V6_C, 40000, V6_S, 5000, CISN + 1, SISN + 1, ACK | PSH, [], b"forged"), 0, 60)
    assert pair.inject("s", forged) is Verdict.DROP
    assert pair.inject("s", with_ext_headers(forged[:40] + forged[56:], 44)) is Verdict.DROP  # a fragment header
    # the kernel's own segment with a Hop-by-Hop header is protected and verified as any other
    data = with_ext_headers(segment(V6_C, 40000, V6_S, 5000, CISN + 1, SISN + 1, ACK | PSH, [], b"hbh data"), 0)
    (got,) = pair.send("c", data)
    assert got == data and b"hbh data" not in pair.wire[-1]
    assert pair.eng["s"].stats()["segments_verified"] >= 2


# --- 7: INIT1 / INIT2 only right after the SYNs ----------------------------------------------------------------------
def test_blind_init_injection_is_ignored_and_the_handshake_completes():
    pair = EnginePair()
    pair.send("c", segment(C_ADDR, 40000, S_ADDR, 5000, CISN, 0, SYN, syn_options()))
    lost = []
    pair.tap = lambda p: (lost.append(p), None)[1] if b"MPTC" in p and not lost else p  # hold the real INIT1 back
    pair.send("s", segment(S_ADDR, 5000, C_ADDR, 40000, SISN, CISN + 1, SYN | ACK, syn_options(ts=False)))
    pair.tap = None
    (init1,) = lost
    _, h, payload = decode(init1)
    for seq, ack in ((h.seq + 1000, h.ack), (h.seq, h.ack + 7)):  # a blind attacker guesses the numbers
        forged = segment(C_ADDR, 40000, S_ADDR, 5000, seq, ack, h.flags, parse_options(h.options), payload)
        assert pair.inject("s", forged) is Verdict.DROP
    assert pair.eng["s"].stats()["pk_ops"] == 0 and pair.eng["s"].stats()["init_out_of_sequence"] == 2
    pair.tick(0.25)  # the real INIT1 (retransmitted) still completes the handshake
    assert pair.eng["c"].session_id(C_LOCAL, S_LOCAL) == pair.eng["s"].session_id(S_LOCAL, C_LOCAL) is not None


# --- 8: SYN data (TCP Fast Open) ---------------------------------------------------------------------------------
def test_tcp_fast_open_data_never_leaves_in_clear():
    for policy in (Policy.OPPORTUNISTIC, Policy.REQUIRED):
        pair = EnginePair(client=Config(policy=policy), server=Config(policy=policy))
        tfo = segment(C_ADDR, 40000, S_ADDR, 5000, CISN, 0, SYN, syn_options() + [TCPOption(34, b"cookie12")],
                      b"GET /secret HTTP/1.1")
        (got,) = pair.send("c", tfo)
        assert all(b"secret" not in p for p in pair.wire) and decode(got)[2] == b""
        assert pair.eng["c"].stats()["syn_data_removed"] == 1
        # a peer daemon that would let SYN data through (or an attacker) meets the same at the server
        r = pair.eng["s"].handle(segment(C_ADDR, 40001, S_ADDR, 5000, 9, 0, SYN, syn_options()[:0] + [
            TCPOption(253, bytes.fromhex("4d50") + bytes((1, 2)))], b"injected"), False, 0.0)
        assert r.packet is not None and decode(r.packet)[2] == b""


# --- 9: replayed signals --------------------------------------------------------------------------------------------
def test_a_replayed_old_mp_prio_ack_is_not_acted_on():
    pair = mptcp_pair()
    prio = segment(S_ADDR, 5000, C_ADDR, 40000, SISN + 1, CISN + 1, ACK, [TCPOption(30, bytes((0x51,)))])
    assert pair.send("s", prio) == [prio]
    captured = pair.wire[-1]  # verified once: MP_PRIO backup=1
    data = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK | PSH, [], b"x" * 100)
    assert pair.send("c", data) == [data]
    ack = segment(S_ADDR, 5000, C_ADDR, 40000, SISN + 1, CISN + 101, ACK)
    assert pair.send("s", ack) == [ack]
    assert pair.inject("c", captured) is Verdict.DROP  # the same bytes later: its ack went backwards
    assert pair.eng["c"].stats()["stale_signals_dropped"] == 1 and pair.eng["c"].stats()["mac_failures"] == 0


# --- 10: silent downgrade with a cached session ------------------------------------------------------------------
def downgraded(client_cfg):
    from mptcrypt.core.engine import Engine

    pair = EnginePair(client=client_cfg)
    handshake(pair)
    pair.eng["s"] = Engine(Config(policy=Policy.OFF))  # the answer now comes without mptcrypt (stripped or gone)
    pair.send("c", segment(C_ADDR, 40009, S_ADDR, 5000, 50, 0, SYN, syn_options()))
    synack = segment(S_ADDR, 5000, C_ADDR, 40009, 70, 51, SYN | ACK, syn_options(ts=False))
    return pair, pair.eng["c"].handle(synack, False, 0.0)


def test_a_plain_answer_from_a_peer_we_hold_a_session_for_is_reported():
    pair, r = downgraded(Config())
    c = pair.eng["c"]
    assert r.verdict is Verdict.ACCEPT and r.packet is None  # opportunistic: the connection goes on, plain...
    assert c.stats()["downgrades_detected"] == 1  # ...but never silently
    assert any(e.kind == "downgrade" for e in c.events())
    (row,) = [r for r in c.sessions() if r["local"].endswith(":40009")]
    assert row["reason"].startswith("downgrade")


def test_refuse_downgrade_turns_the_plain_answer_into_a_refusal():
    pair, r = downgraded(Config(refuse_downgrade=True))
    assert r.verdict is Verdict.ACCEPT and decode(r.packet)[1].flags & RST and r.inject
    assert pair.eng["c"].flow_state(("10.0.1.2", 40009), S_LOCAL) is State.REFUSED


# --- 11: key lifetime -------------------------------------------------------------------------------------------------
def test_cached_sessions_expire():
    pair = EnginePair(client=Config(session_lifetime=3600.0), server=Config(session_lifetime=3600.0))
    handshake(pair)
    pair.tick(3601.0)
    for e in pair.eng.values():
        assert e.stats()["sessions_cached"] == 0 and e.stats()["sessions_expired"] == 1
    handshake(pair, sport=40002, cisn=5, sisn=9)  # a full handshake again, not a resumption of the old session
    for e in pair.eng.values():
        assert e.stats()["resumptions"] == 0 and e.stats()["pk_handshakes"] == 2


def test_rekey_moves_each_direction_to_fresh_keys_and_the_peer_follows():
    cfg = Config(rekey_bytes=3000)
    pair = EnginePair(client=cfg, server=Config(rekey_bytes=3000))
    handshake(pair)
    wires = []
    for k in range(8):  # 8 x 1000 bytes: the client's direction moves on twice
        data = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1 + 1000 * k, SISN + 1, ACK | PSH, [], bytes([k]) * 1000)
        assert pair.send("c", data) == [data]
        wires.append(pair.wire[-1])
        # the server's ack: a sender moves on only after its peer acked bytes of the current generation (§4)
        pair.send("s", segment(S_ADDR, 5000, C_ADDR, 40000, SISN + 1, CISN + 1 + 1000 * (k + 1), ACK))
    c, s = pair.eng["c"].stats(), pair.eng["s"].stats()
    assert c["rekeys_sent"] == 2 and s["rekeys_followed"] == 2 and s["mac_failures"] == 0
    # a segment of the generation before, still in flight, verifies; two generations back does not
    assert pair.inject("s", wires[5]) is Verdict.ACCEPT
    assert pair.inject("s", wires[0]) is Verdict.DROP
    # the same bytes under a fresh key each generation: the ciphertext of a retransmitted segment differs
    again = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK | PSH, [], bytes([0]) * 1000)
    assert pair.send("c", again) == [again] and pair.wire[-1] != wires[0]
