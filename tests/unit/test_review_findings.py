"""Findings of the security review (session 3): each test fails on the code before its fix, or is xfail(strict)
with the reason when the fix is not small."""

from __future__ import annotations

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
