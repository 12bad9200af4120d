"""Graceful restart in memory: a successor engine takes over the live sessions and flows (core/handover.py) and
the connection goes on protected, without a public-key operation, its joins and resumptions intact."""

import json

from mptcrypt.core.engine import Engine
from mptcrypt.core.state import State
from mptcrypt.wire.tcp import ACK, PSH

from pktkit import C2_ADDR, C_ADDR, S2_ADDR, S_ADDR, mpj_synack, segment, syn_options
from test_engine_handshake import CISN, SISN, handshake, join_syn, mptcp_pair

C_LOCAL, S_LOCAL = ("10.0.1.2", 40000), ("10.0.1.1", 5000)


def take_over(pair, side):
    old = pair.eng[side]
    data = json.loads(json.dumps(old.export_state()))  # what crosses the control socket
    new = Engine(old.config)
    assert new.import_state(data) >= 1
    pair.eng[side] = new
    return old, new


def test_a_successor_continues_a_protected_mptcp_connection():
    pair = mptcp_pair()
    pair.send("c", join_syn())
    pair.send("s", segment(S2_ADDR, 5000, C2_ADDR, 41000, 444, 334, 0x12, syn_options(mpj_synack(b"h" * 8, b"RRRR"),
                                                                                      ts=False)))
    sid = pair.eng["s"].session_id(S_LOCAL, C_LOCAL)
    old, new = take_over(pair, "s")
    assert new.session_id(S_LOCAL, C_LOCAL) == sid and new.flow_state(S_LOCAL, C_LOCAL) is State.ENCRYPTING
    for k in range(3):
        up = segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1 + 100 * k, SISN + 1, ACK | PSH, [], b"u" * 100)
        assert pair.send("c", up) == [up] and b"u" * 100 not in pair.wire[-1]
    down = segment(S_ADDR, 5000, C_ADDR, 40000, SISN + 1, CISN + 301, ACK | PSH, [], b"d" * 50)
    assert pair.send("s", down) == [down] and b"d" * 50 not in pair.wire[-1]
    assert new.stats()["mac_failures"] == 0 and new.stats()["pk_ops"] == old.stats()["pk_ops"]
    # the join subflow goes on too, and the token still leads to the session (a forged join is still refused)
    j = segment(C2_ADDR, 41000, S2_ADDR, 5000, 334, 445, ACK | PSH, [], b"j" * 10)
    assert pair.send("c", j) == [j]
    assert pair.inject("s", join_syn(src=bytes([10, 0, 1, 66]), sport=42000)).value == "drop"


def test_a_successor_resumes_cached_sessions_without_public_key_operations():
    pair = mptcp_pair()
    take_over(pair, "s")
    take_over(pair, "c")
    handshake(pair, sport=40002, cisn=5, sisn=9)
    for e in pair.eng.values():
        assert e.stats()["resumptions"] == 1 and e.stats()["pk_ops"] == 1
