"""Both MP_CAPABLE keys, hence both tokens, on both daemons (RFC 8684 §3.1): the SYN-ACK carries the server's key,
the third ACK and the first data segment the client's and the server's. The client's daemon sees its own key only
in what its kernel sends; before the fix it learned keys only from inbound segments and from segments it had
held, so once keyed it never registered its own token and a join the server opens towards the client (to an
address the client announced) was not recognised as one of a protected connection."""

from __future__ import annotations

import pytest

from mptcrypt.core.state import State
from mptcrypt.crypto import segment as seg_cipher
from mptcrypt.wire.mptcp import mptcp_token
from mptcrypt.wire.tcp import ACK, PSH, SYN, parse_options

from enginepair import EnginePair
from pktkit import C2_ADDR, C_ADDR, S2_ADDR, S_ADDR, decode, dss, mpc, mpj_syn, mpj_synack, segment, syn_options, \
    token
from test_engine_handshake import CISN, CKEY, SISN, SKEY, handshake

FAST = [False] + ([True] if seg_cipher.FlowTable is not None else [])


def connection_tokens(engine) -> list[set[int]]:
    conns = {id(sf.conn): sf.conn for sf in engine._t.flows.values() if sf.conn is not None and sf.conn.mptcp}
    return [set(c.tokens) for c in conns.values()]


@pytest.mark.parametrize("fast", FAST)
def test_both_daemons_register_both_tokens(fast):
    pair = EnginePair(fast_path=fast)
    handshake(pair, mptcp=True)
    both = {mptcp_token(CKEY), mptcp_token(SKEY)}
    for side in "cs":
        assert connection_tokens(pair.eng[side]) == [both], side
        assert set(pair.eng[side]._t.tokens) == both, side


def test_the_first_data_segment_teaches_the_key_when_the_third_ack_was_lost():
    """Linux repeats MP_CAPABLE with both keys on the first data segment (RFC 8684 §3.1) until it is acked."""
    pair = EnginePair()

    def lose_the_third_ack(packet):
        ip, h, payload = decode(packet)
        return None if ip.src == C_ADDR and h.flags == ACK and not payload else packet

    pair.tap = lose_the_third_ack
    handshake(pair, mptcp=True)
    pair.tap = None
    assert set(pair.eng["s"]._t.tokens) == {mptcp_token(SKEY)}  # the server has not seen the client's key yet
    first_data = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, ACK | PSH, [mpc(20, CKEY, SKEY)], b"hi")
    assert pair.send("c", first_data) == [first_data]
    for side in "cs":
        assert set(pair.eng[side]._t.tokens) == {mptcp_token(CKEY), mptcp_token(SKEY)}, side


@pytest.mark.parametrize("fast", FAST)
def test_a_join_the_server_opens_towards_the_client_is_keyed_and_accepted(fast):
    """The server's kernel joins the client's second address with the client's token: its daemon adds NEXTK1,
    the client's daemon checks it and answers NEXTK2, and the subflow carries protected data both ways."""
    pair = EnginePair(fast_path=fast)
    handshake(pair, mptcp=True)
    c, s = pair.eng["c"], pair.eng["s"]
    sport, cport, sisn, cisn = 45000, 40000, 8_000, 9_000
    join = segment(S2_ADDR, sport, C2_ADDR, cport, sisn, 0, SYN, syn_options(mpj_syn(token(CKEY), b"NNNN")))
    (got,) = pair.send("s", join)
    assert 253 not in [o.kind for o in parse_options(decode(got)[1].options)]  # NEXTK1 taken off by the client
    synack = segment(C2_ADDR, cport, S2_ADDR, sport, cisn, sisn + 1, SYN | ACK,
                     syn_options(mpj_synack(b"h" * 8, b"RRRR"), ts=False))
    assert len(pair.send("c", synack)) == 1
    ack = segment(S2_ADDR, sport, C2_ADDR, cport, sisn + 1, cisn + 1, ACK, [dss(1, 2, 1, 10)], b"0123456789")
    assert pair.send("s", ack) == [ack] and b"0123456789" not in pair.wire[-1]
    back = segment(C2_ADDR, cport, S2_ADDR, sport, cisn + 1, sisn + 11, ACK, [dss(11, 3, 1, 5)], b"hello")
    assert pair.send("c", back) == [back] and b"hello" not in pair.wire[-1]
    for e in (c, s):
        st = e.stats()
        assert st["joins_protected"] == 1 and st["joins_refused"] == 0 and st["pk_ops"] == 1
    assert c.flow_state(("10.0.2.2", cport), ("10.0.2.1", sport)) is State.ENCRYPTING
    sid = c.session_id(("10.0.1.2", 40000), ("10.0.1.1", 5000))
    assert c.session_id(("10.0.2.2", cport), ("10.0.2.1", sport)) == sid
    (row,) = [r for r in c.sessions() if r["mptcp"]]
    assert [sf["index"] for sf in row["subflows"]] == [0, 2]  # the server, the session's responder: even indices
