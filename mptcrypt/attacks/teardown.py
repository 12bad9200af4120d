"""Shared judge of the teardown attacks (REMOVE_ADDR, MP_TCPRST, RST): did a subflow die?"""

from __future__ import annotations

from mptcrypt.attacks.judging import decide
from mptcrypt.attacks.runner import Evidence, Verdict


def subflow_killed(ev: Evidence, path: str, what: str, counters: tuple[str, ...]) -> Verdict:
    t_attack = ev.attack_t
    before = ev.paths_at("server", t_attack)
    after = ev.paths_at("server", ev.steady_end)  # before the transfer's own close
    alive_before = path in before
    alive_after = path in after
    gone_t = next((s["t"] for s in ev.timeline if t_attack and s["t"] >= t_attack
                   and path not in {ev.path_of(sf, "server") for sf in s.get("server", [])}), None)
    moved = ev.bytes_by_path("server", "bytes_received", gone_t, None) if gone_t else {}
    moved = {p: b for p, b in moved.items() if p != path}
    evidence = {
        f"server_{path}_subflow_before": alive_before,
        f"server_{path}_subflow_after": alive_after,
        "server_subflows_after": sorted(after),
        "upload_bytes_after_it_died_by_path": moved,
        "MPTcpExt": {h: {k: ev.counter(h, k) for k in counters if ev.counter(h, k)} for h in ("client", "server")},
    }
    effective = alive_before and not alive_after
    still = [p for p, b in moved.items() if b > 0]
    return decide(ev, effective, f"{what}: the {path} subflow died"
                  + (f"; upload continued on {', '.join(still)}" if still else ""),
                  f"{what} dropped: the {path} subflow is still up", evidence)
