"""Counters say what their names claim, measured, not assumed (issue 10): pk_handshakes counts handshakes that
did public-key operations, handshakes_completed every first subflow keyed; joins_zero_pk counts joins whose
handling did no public-key operation, read from the pk_ops counter around it."""

from mptcrypt.core import join

from enginepair import EnginePair
from pktkit import C2_ADDR, S2_ADDR, mpj_synack, segment, syn_options
from test_engine_handshake import handshake, join_syn, mptcp_pair
from mptcrypt.wire.tcp import ACK, SYN


def test_resumed_connection_is_a_completed_handshake_without_public_key_operations():
    pair = EnginePair()
    handshake(pair)
    handshake(pair, sport=40002, cisn=5, sisn=9)
    for e in pair.eng.values():
        st = e.stats()
        assert st["handshakes_completed"] == 2 and st["pk_handshakes"] == 1 and st["resumptions"] == 1
        assert st["pk_ops"] == 1


def run_join(pair):
    pair.send("c", join_syn())
    synack = segment(S2_ADDR, 5000, C2_ADDR, 41000, 444, 334, SYN | ACK,
                     syn_options(mpj_synack(b"h" * 8, b"RRRR"), ts=False))
    pair.send("s", synack)


def test_a_join_is_zero_pk_only_when_no_public_key_operation_happened_while_handling_it(monkeypatch):
    pair = mptcp_pair()
    run_join(pair)
    for e in pair.eng.values():
        assert e.stats()["joins_protected"] == 1 and e.stats()["joins_zero_pk"] == 1
    # the same join, but a (simulated) public-key operation during its handling: it must not count as zero-pk
    pair = mptcp_pair()
    real = join.syn_binding

    def with_pk_op(mpj):
        for e in pair.eng.values():
            e.counters["pk_ops"] += 1
        return real(mpj)

    monkeypatch.setattr(join, "syn_binding", with_pk_op)
    run_join(pair)
    for e in pair.eng.values():
        st = e.stats()
        assert st["joins_protected"] == 1 and st["joins_zero_pk"] == 0, st
