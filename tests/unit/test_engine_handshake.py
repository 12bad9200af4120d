"""Two in-memory engines: the tcpcrypt handshake, protection, resumption and MPTCP joins, byte for byte."""

import os

from mptcrypt.constants import MAC_OPTION_LEN, TCPOPT_SACK_PERM, TCPOPT_TIMESTAMP
from mptcrypt.core.config import Config, Policy
from mptcrypt.core.events import Verdict
from mptcrypt.core.state import State
from mptcrypt.wire.tcp import ACK, FIN, PSH, RST, SYN, option_value, parse_options

from pktkit import C2_ADDR, C_ADDR, S2_ADDR, S_ADDR, decode, dss, mpc, mpj_syn, mpj_synack, segment, syn_options, token
from enginepair import EnginePair

CISN, SISN = 1_000_000, 7_000_000
CKEY, SKEY = b"ckey-mpt", b"skey-mpt"


def handshake(pair, mptcp=False, sport=40000, cisn=CISN, sisn=SISN):
    """Run SYN / SYN-ACK / third ACK through the pair; returns what the server kernel got for the third ACK."""
    syn = segment(C_ADDR, sport, S_ADDR, 5000, cisn, 0, SYN, syn_options(mpc(4) if mptcp else None))
    got = pair.send("c", syn)
    assert len(got) == 1
    _, h, _ = decode(got[0])
    kinds = [o.kind for o in parse_options(h.options)]
    # timestamps reach the server kernel (the compact option form leaves the MAC its room beside them)
    assert TCPOPT_TIMESTAMP in kinds and 253 not in kinds and TCPOPT_SACK_PERM in kinds
    synack_opts = [o for o in syn_options(mpc(12, SKEY) if mptcp else None, ts=False)]
    synack = segment(S_ADDR, 5000, C_ADDR, sport, sisn, cisn + 1, SYN | ACK, synack_opts)
    got = pair.send("s", synack)
    assert len(got) == 1
    third = segment(C_ADDR, sport, S_ADDR, 5000, cisn + 1, sisn + 1, ACK,
                    [mpc(20, CKEY, SKEY)] if mptcp else [])
    got = pair.send("c", third)
    return third, got


def test_handshake_delivers_third_ack_unchanged_and_sids_match():
    pair = EnginePair()
    third, got = handshake(pair)
    assert got == [third]  # the server kernel sees exactly the client kernel's segment
    c, s = pair.eng["c"], pair.eng["s"]
    sid_c = c.session_id(("10.0.1.2", 40000), ("10.0.1.1", 5000))
    sid_s = s.session_id(("10.0.1.1", 5000), ("10.0.1.2", 40000))
    assert sid_c is not None and sid_c == sid_s and len(sid_c) == 32
    assert c.stats()["pk_ops"] == 1 and s.stats()["pk_ops"] == 1
    assert c.stats()["pk_handshakes"] == 1 and s.stats()["pk_handshakes"] == 1
    # no kernel ever saw an INIT segment
    assert all(b"MPTC" not in p for p in pair.rx["s"] + pair.rx["c"])


def test_mss_clamped_on_both_sides():
    pair = EnginePair()
    syn = segment(C_ADDR, 40001, S_ADDR, 5000, CISN, 0, SYN, syn_options())
    (got,) = pair.send("c", syn)
    mss = [option_value(o) for o in parse_options(decode(got)[1].options) if o.kind == 2]
    assert mss == [1460 - MAC_OPTION_LEN]
    synack = segment(S_ADDR, 5000, C_ADDR, 40001, SISN, CISN + 1, SYN | ACK, syn_options(ts=False))
    (got,) = pair.send("s", synack)
    mss = [option_value(o) for o in parse_options(decode(got)[1].options) if o.kind == 2]
    assert mss == [1460 - MAC_OPTION_LEN]


def test_data_is_encrypted_on_the_wire_and_restored():
    pair = EnginePair()
    handshake(pair)
    marker = b"PLAINTEXT-MARKER-" * 80
    data = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK | PSH, [], marker)
    got = pair.send("c", data)
    assert got == [data]
    assert marker[:17] not in pair.wire[-1]
    _, h, _ = decode(pair.wire[-1])
    assert h.options[-MAC_OPTION_LEN:][:4] == bytes.fromhex("fd0c4d50")
    # retransmission: same ciphertext on the wire
    got = pair.send("c", data)
    assert got == [data] and pair.wire[-1] == pair.wire[-2]
    # the other direction
    reply = segment(S_ADDR, 5000, C_ADDR, 40000, SISN + 1, CISN + 1 + len(marker), ACK | PSH, [], b"reply" * 100)
    assert pair.send("s", reply) == [reply]
    # pure ACK and FIN are protected too
    fin = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1 + len(marker), SISN + 501, ACK | FIN)
    assert pair.send("c", fin) == [fin]
    assert len(decode(pair.wire[-1])[1].options) == MAC_OPTION_LEN


def test_resegmented_retransmission_decrypts():
    pair = EnginePair()
    handshake(pair)
    payload = os.urandom(3000)
    a = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK, [], payload[:1000])
    b = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1001, SISN + 1, ACK, [], payload[1000:3000])
    whole = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK, [], payload)
    mid = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 501, SISN + 1, ACK, [], payload[500:2500])
    for pkt in (b, a, whole, mid, a):  # reordered, duplicated, re-segmented
        assert pair.send("c", pkt) == [pkt]


def test_forged_and_tampered_segments_are_dropped():
    pair = EnginePair()
    handshake(pair)
    s = pair.eng["s"]
    rst = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, RST | ACK)
    assert pair.inject("s", rst) is Verdict.DROP
    data = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK | PSH, [], b"x" * 100)
    pair.send("c", data)
    wire = bytearray(pair.wire[-1])
    wire[-1] ^= 1  # flip one ciphertext bit (and leave the checksum wrong: the MAC catches it first)
    assert pair.inject("s", bytes(wire)) is Verdict.DROP
    assert s.stats()["mac_failures"] == 1
    assert s.stats()["unauthenticated_dropped"] >= 1


def test_resumption_uses_no_public_key_operation():
    pair = EnginePair()
    handshake(pair)
    sid0 = pair.eng["c"].session_id(("10.0.1.2", 40000), ("10.0.1.1", 5000))
    third, got = handshake(pair, sport=40002, cisn=5, sisn=9)
    assert got == [third]
    c, s = pair.eng["c"], pair.eng["s"]
    assert c.stats()["pk_ops"] == 1 and s.stats()["pk_ops"] == 1
    assert c.stats()["resumptions"] == 1 and s.stats()["resumptions"] == 1
    sid1 = c.session_id(("10.0.1.2", 40002), ("10.0.1.1", 5000))
    assert sid1 == s.session_id(("10.0.1.1", 5000), ("10.0.1.2", 40002)) and sid1 != sid0
    data = segment(C_ADDR, 40002, S_ADDR, 5000, 6, 10, ACK | PSH, [], b"resumed data")
    assert pair.send("c", data) == [data]
    # a plain TCP SYN fits NEXTK1-resume beside real timestamps (40 bytes without alignment NOPs)
    syn = next(h for _, h, _ in map(decode, pair.wire) if h.flags == SYN and h.sport == 40002)
    kinds = {o.kind: o for o in parse_options(syn.options)}
    assert 253 in kinds and option_value(kinds[TCPOPT_TIMESTAMP]) == (1000, 0) and len(syn.options) == 40


def test_resumptions_up_to_the_end_of_the_key_chain_then_a_full_handshake():
    """NEXTK1 carries a 16-bit index: near 0xFFFF the server registers fewer resumption ids instead of asking the
    chain for an index past its end (that raised ValueError out of Engine.handle on the SYN of the ~32,768th
    resumption of one session: found by bench_memory.py's 100,000 connections)."""
    pair = EnginePair()
    handshake(pair)
    c, s = pair.eng["c"], pair.eng["s"]
    (c_session,), (s_session,) = c._t.peer_cache.values(), s._t.peer_cache.values()
    c_session._next_own = 0xFFFF - 4  # as if 32,765 resumptions had happened
    s_session._peer_top = 0xFFFF - 6
    s._t.register_resume(s_session)
    for n, sport in enumerate((40010, 40011, 40012)):  # indices 0xFFFB, 0xFFFD, 0xFFFF
        third, got = handshake(pair, sport=sport, cisn=100 + n, sisn=200 + n)
        assert got == [third]
    assert c.stats()["resumptions"] == 3 and s.stats()["resumptions"] == 3 and s.stats()["malformed_dropped"] == 0
    third, got = handshake(pair, sport=40013, cisn=300, sisn=400)  # chain exhausted: a new session
    assert got == [third] and c.stats()["pk_handshakes"] == 2 and s.stats()["pk_handshakes"] == 2


def test_peer_without_mptcrypt_gets_plain_tcp():
    pair = EnginePair(server=Config(policy=Policy.OFF))
    syn = segment(C_ADDR, 40000, S_ADDR, 5000, CISN, 0, SYN, syn_options())
    (got,) = pair.send("c", syn)
    synack = segment(S_ADDR, 5000, C_ADDR, 40000, SISN, CISN + 1, SYN | ACK, syn_options())
    assert pair.send("s", synack) == [synack]
    data = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK | PSH, [], b"plain")
    assert pair.send("c", data) == [data]
    row = pair.eng["c"].sessions()[0]
    assert row["protected"] is False and row["state"] == "plain"


def test_required_policy_refuses_plain_peer():
    pair = EnginePair(client=Config(policy=Policy.REQUIRED), server=Config(policy=Policy.OFF))
    syn = segment(C_ADDR, 40000, S_ADDR, 5000, CISN, 0, SYN, syn_options())
    pair.send("c", syn)
    synack = segment(S_ADDR, 5000, C_ADDR, 40000, SISN, CISN + 1, SYN | ACK, syn_options())
    (got,) = pair.send("s", synack)
    assert decode(got)[1].flags & RST  # the client kernel sees a refusal, never a plain connection
    assert pair.eng["c"].stats()["refused_policy"] == 1


def test_lost_init_is_retransmitted_and_held_data_released():
    pair = EnginePair()
    syn = segment(C_ADDR, 40000, S_ADDR, 5000, CISN, 0, SYN, syn_options())
    pair.send("c", syn)
    synack = segment(S_ADDR, 5000, C_ADDR, 40000, SISN, CISN + 1, SYN | ACK, syn_options(ts=False))
    lost = []
    pair.tap = lambda p: (lost.append(p), None)[1] if b"MPTC" in p and not lost else p  # lose the first INIT1
    pair.send("s", synack)
    assert len(lost) == 1
    assert pair.eng["c"].flow_state(("10.0.1.2", 40000), ("10.0.1.1", 5000)) is State.INIT1_SENT
    third = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK)
    data = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK | PSH, [], b"early data")
    assert pair.send("c", third) == [] and pair.send("c", data) == []  # held, nothing leaks
    assert all(b"early data" not in p for p in pair.wire)
    pair.tick(0.25)  # INIT1 retransmitted -> INIT2 -> held segments released protected
    assert pair.rx["s"][-2:] == [third, data]
    assert pair.eng["c"].stats()["init_retransmits"] == 1


def mptcp_pair():
    pair = EnginePair()
    handshake(pair, mptcp=True)
    return pair


def join_syn(nonce=b"NNNN", src=C2_ADDR, sport=41000, isn=333, tok=None):
    return segment(src, sport, S2_ADDR, 5000, isn, 0, SYN,
                   syn_options(mpj_syn(tok or token(SKEY), nonce)))


def test_mptcp_join_is_keyed_without_public_key_operations():
    pair = mptcp_pair()
    c, s = pair.eng["c"], pair.eng["s"]
    (got,) = pair.send("c", join_syn())
    _, h, _ = decode(got)
    assert 253 not in [o.kind for o in parse_options(h.options)]
    synack = segment(S2_ADDR, 5000, C2_ADDR, 41000, 444, 334, SYN | ACK,
                     syn_options(mpj_synack(b"h" * 8, b"RRRR"), ts=False))
    (got,) = pair.send("s", synack)
    ack = segment(C2_ADDR, 41000, S2_ADDR, 5000, 334, 445, ACK, [dss(1, 2, 1, 10)], b"0123456789")
    assert pair.send("c", ack) == [ack]
    assert b"0123456789" not in pair.wire[-1]
    for e in (c, s):
        st = e.stats()
        assert st["pk_ops"] == 1 and st["joins_protected"] == 1 and st["joins_zero_pk"] == 1
    sid_c = c.session_id(("10.0.2.2", 41000), ("10.0.2.1", 5000))
    assert sid_c == c.session_id(("10.0.1.2", 40000), ("10.0.1.1", 5000))
    (row,) = [r for r in c.sessions() if r["mptcp"]]
    assert len(row["subflows"]) == 2 and row["subflows"][1]["index"] == 1


def test_forged_join_without_nextk1_is_refused():
    pair = mptcp_pair()
    s = pair.eng["s"]
    forged = join_syn(src=bytes([10, 0, 1, 66]), sport=42000)
    assert pair.inject("s", forged) is Verdict.DROP
    assert s.stats()["joins_refused"] == 1


def test_replayed_nextk1_from_another_address_is_refused():
    pair = mptcp_pair()
    pair.send("c", join_syn())
    real = pair.wire[-1]
    # the attacker copies the real SYN's options (NEXTK1 included) into a SYN from its own address
    _, h, _ = decode(real)
    replay = segment(bytes([10, 0, 2, 66]), 41000, S2_ADDR, 5000, 333, 0, SYN, parse_options(h.options))
    assert pair.inject("s", replay) is Verdict.DROP


def test_signal_beside_a_full_dss_is_split_onto_its_own_protected_ack():
    """REMOVE_ADDR of 8 ids (11 bytes) + DSS with checksum (28, compact 20) + MAC (12) > 40: the engine moves the
    signal to a pure ACK of its own."""
    from mptcrypt.wire.tcp import TCPOption

    pair = mptcp_pair()
    remove_addr = TCPOption(30, bytes((0x40, 3, 4, 5, 6, 7, 8, 9, 10)))  # REMOVE_ADDR ids 3-10
    data = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK | PSH, [dss(1, 2, 1, 100), remove_addr],
                   b"d" * 100)
    got = pair.send("c", data)
    assert len(got) == 2 and all(len(decode(p)[1].options) <= 40 for p in pair.wire[-2:])
    main, signal = (decode(p) for p in got)
    assert main[2] == b"d" * 100 and 0x40 not in [o.data[0] for o in parse_options(main[1].options) if o.kind == 30]
    assert signal[2] == b"" and signal[1].seq == CISN + 101
    moved = [o.data for o in parse_options(signal[1].options) if o.kind == 30]
    assert moved == [bytes((0x40, 3, 4, 5, 6, 7, 8, 9, 10))]
    assert pair.eng["c"].stats()["signals_split"] == 1 and pair.eng["c"].stats()["option_overflow"] == 0


def test_resumption_offered_to_a_peer_that_lost_its_daemon_falls_back_to_plain_and_says_so():
    pair = EnginePair()
    handshake(pair)
    pair.eng["s"] = type(pair.eng["s"])(Config(policy=Policy.OFF))  # the server's daemon is gone
    syn = segment(C_ADDR, 40009, S_ADDR, 5000, 50, 0, SYN, syn_options())
    pair.send("c", syn)
    synack = segment(S_ADDR, 5000, C_ADDR, 40009, 70, 51, SYN | ACK, syn_options(ts=False))
    assert pair.send("s", synack) == [synack]
    for flags in (ACK | FIN, ACK):
        pair.send("c", segment(C_ADDR, 40009, S_ADDR, 5000, 51, 71, flags))
    pair.send("s", segment(S_ADDR, 5000, C_ADDR, 40009, 71, 52, ACK | FIN))
    row = [r for r in pair.eng["c"].sessions() if r["remote"].endswith(":5000") and r["local"].endswith(":40009")][0]
    assert row["protected"] is False and row["sid"] is None
    assert pair.eng["c"].session_id(("10.0.1.2", 40009), ("10.0.1.1", 5000)) is None


def test_a_forged_syn_on_a_protected_flow_never_turns_it_plain():
    """syn-desync (mptcrypt/attacks/syn_desync.py): a plain SYN with a new ISN on the 4-tuple of a live
    protected subflow used to replace the flow with a plain one; it must be dropped and the flow stay keyed."""
    pair = EnginePair()
    handshake(pair)
    for side, pkt in (("s", segment(C_ADDR, 40000, S_ADDR, 5000, 424242, 0, SYN, syn_options())),
                      ("c", segment(S_ADDR, 5000, C_ADDR, 40000, 515151, 0, SYN, syn_options()))):
        assert pair.inject(side, pkt) is Verdict.DROP
        assert pair.eng[side].stats()["syn_on_live_flow_dropped"] == 1
    data = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK | PSH, [], b"still secret")
    assert pair.send("c", data) == [data] and b"still secret" not in pair.wire[-1]
    assert pair.eng["c"].stats()["fallbacks_plain"] == 0 and pair.eng["s"].stats()["fallbacks_plain"] == 0


def test_a_peer_refusing_our_syn_reaches_the_application_as_a_refusal():
    """A required-policy server answers a SYN it will not protect with RST: the client kernel must see it
    (connection refused), not wait for a timeout."""
    pair = EnginePair(server=Config(policy=Policy.REQUIRED))
    syn = segment(C_ADDR, 40000, S_ADDR, 5000, CISN, 0, SYN, syn_options())
    hello_syn = pair.eng["c"].handle(syn, True, 0.0).packet
    stripped = segment(C_ADDR, 40000, S_ADDR, 5000, CISN, 0, SYN, syn_options())  # HELLO removed by the attacker
    r = pair.eng["s"].handle(stripped, False, 0.0)
    assert r.verdict is Verdict.DROP and len(r.inject) == 1 and hello_syn != stripped
    rst = r.inject[0]
    assert decode(rst)[1].flags & RST
    assert pair.inject("c", rst) is Verdict.ACCEPT and pair.rx["c"] == [rst]
    assert pair.eng["c"].flow_state(("10.0.1.2", 40000), ("10.0.1.1", 5000)) is State.REFUSED


def test_a_join_opened_before_init2_is_held_and_leaves_with_nextk1():
    """Linux may send the MP_JOIN SYN as soon as the SYN-ACK is in, before our INIT2 arrives: the join must wait
    for the keys instead of going out without NEXTK1 (which the peer daemon would refuse)."""
    pair = EnginePair()
    pair.send("c", segment(C_ADDR, 40000, S_ADDR, 5000, CISN, 0, SYN, syn_options(mpc(4))))
    lost = []
    pair.tap = lambda p: (lost.append(p), None)[1] if b"MPTC" in p and not lost else p  # INIT1 lost: keys late
    pair.send("s", segment(S_ADDR, 5000, C_ADDR, 40000, SISN, CISN + 1, SYN | ACK, syn_options(mpc(12, SKEY), ts=False)))
    pair.tap = None
    third = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK, [mpc(20, CKEY, SKEY)])
    assert pair.send("c", third) == []
    assert pair.send("c", join_syn()) == []  # held, not sent plain
    pair.tick(0.25)  # INIT1 again -> INIT2 -> third ACK and the join SYN (now with NEXTK1) released in order
    assert [decode(p)[1].flags & SYN for p in pair.rx["s"][-2:]] == [0, SYN]
    assert pair.eng["s"].stats()["joins_refused"] == 0
    s_opts = [o.kind for o in parse_options(decode(pair.wire[-1])[1].options)]
    assert 253 in s_opts  # NEXTK1 on the wire


def test_sack_blocks_are_trimmed_to_leave_room_for_the_mac():
    """SACK stays negotiated (loss recovery); an ACK whose DSS + SACK blocks leave no room for the MAC keeps the
    first (most recent, RFC 2018 §4) blocks that fit, and the peer kernel gets exactly those."""
    from mptcrypt.wire.tcp import TCPOption, sack_option

    pair = mptcp_pair()
    data_ack = TCPOption(30, bytes((0x20, 0x08)) + (5).to_bytes(8, "big"))  # DSS, 64-bit data ack only (12 bytes)
    blocks = [(SISN + 3001, SISN + 4001), (SISN + 5001, SISN + 6001), (SISN + 7001, SISN + 8001)]
    ack = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK, [data_ack, TCPOption(1), TCPOption(1),
                                                                          sack_option(blocks)])
    assert len(decode(ack)[1].options) == 40
    (got,) = pair.send("c", ack)
    sacks = [option_value(o) for o in parse_options(decode(got)[1].options) if o.kind == 5]
    assert sacks == [[blocks[0]]] and pair.eng["c"].stats()["sack_trimmed"] == 1
    assert len(decode(pair.wire[-1])[1].options) <= 40


def test_join_subflows_keep_sack_permitted_beside_mp_join_and_nextk2():
    """A join recovers from a burst of losses (a handover) with SACK like the first subflow: SACK-permitted
    survives in the join SYN beside NEXTK1 and in a Linux-shaped join SYN-ACK (NOP-aligned, 28 bytes) beside
    NEXTK2, whose 13 bytes fit only once the alignment NOPs go; nothing overflows 40 bytes."""
    from mptcrypt.wire.tcp import TCPOption, mss_option, wscale_option

    pair = mptcp_pair()
    (got,) = pair.send("c", join_syn())
    syn_wire = [o.kind for o in parse_options(decode(pair.wire[-1])[1].options)]
    assert TCPOPT_SACK_PERM in syn_wire and TCPOPT_TIMESTAMP not in syn_wire and 253 in syn_wire
    kernel = {o.kind: o for o in parse_options(decode(got)[1].options)}
    # no room for timestamps on the wire beside NEXTK1: the responder's daemon restores them, tsval 0
    assert TCPOPT_SACK_PERM in kernel and option_value(kernel[TCPOPT_TIMESTAMP]) == (0, 0)
    nop = TCPOption(1)
    linux_synack = [mss_option(1448), nop, nop, TCPOption(TCPOPT_SACK_PERM), nop, wscale_option(7),
                    mpj_synack(b"h" * 8, b"RRRR")]
    synack = segment(S2_ADDR, 5000, C2_ADDR, 41000, 444, 334, SYN | ACK, linux_synack)
    assert len(decode(synack)[1].options) == 28
    (got,) = pair.send("s", synack)
    wire = decode(pair.wire[-1])[1].options
    assert len(wire) <= 40 and TCPOPT_SACK_PERM in [o.kind for o in parse_options(wire)]
    kernel = [o for o in parse_options(decode(got)[1].options) if o.kind != 1]
    assert [o.kind for o in kernel] == [2, TCPOPT_SACK_PERM, 3, 30, TCPOPT_TIMESTAMP]
    assert option_value(kernel[-1]) == (0, 1000)  # restored: tsecr echoes the initiator kernel's own SYN tsval
    for e in pair.eng.values():
        assert e.stats()["option_overflow"] == 0 and e.stats()["joins_protected"] == 1
