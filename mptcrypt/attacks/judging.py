"""Shared verdict logic: an attack is EFFECTIVE when its effect was measured; BLOCKED only when it was really
mounted (the attacker saw the connection, learned the keys, sent its packets) and the transfer came through
intact; anything else is an ERROR (never a pass)."""

from __future__ import annotations

from mptcrypt.attacks.runner import BLOCKED, EFFECTIVE, ERROR, Evidence, Verdict

DAEMON_COUNTERS = ("unauthenticated_dropped", "mac_failures", "joins_refused", "unknown_flow_dropped",
                   "malformed_dropped", "refused_policy", "fallbacks_plain", "joins_protected")


def base_evidence(ev: Evidence) -> dict:
    t = ev.transfer
    up, down = t["upload"], t["download"]
    out: dict = {
        "keys_learned": bool(ev.view.get("keys_learned")),
        "frames_sent": ev.agent.get("frames_sent", 0),
        "upload": f"{up['bytes_received']}/{up['bytes_expected']} B sha256 {up['sha256_received'][:12]}"
                  f" ({'intact' if up['intact'] else 'expected ' + up['sha256_expected'][:12]})",
        "download": f"{down['bytes_received']}/{down['bytes_expected']} B sha256 {down['sha256_received'][:12]}"
                    f" ({'intact' if down['intact'] else 'expected ' + down['sha256_expected'][:12]})",
        "connection_died": t["connection_died"],
    }
    errors = {k: v for k, v in (("upload_reader", up["reader_error"]), ("upload_writer", up["writer_error"]),
                                ("download_reader", down["reader_error"]), ("download_writer", down["writer_error"]),
                                ("connect", t["connect_error"])) if v}
    if errors:
        out["errors"] = errors
    if ev.target == "mptcrypt":
        out["daemon"] = {
            host: {k: ev.stat(host, k) for k in DAEMON_COUNTERS if ev.stat(host, k)} for host in ("client", "server")
        }
    return out


def mounted(ev: Evidence, need_keys: bool = True) -> str | None:
    """Why the attack cannot count as mounted, or None."""
    if ev.agent.get("error"):
        return f"attacker agent failed: {ev.agent['error']}"
    if not ev.transfer["connected"]:
        return f"the transfer did not connect ({ev.transfer['connect_error']})"
    if not ev.view.get("connection"):
        return "the attacker never saw the connection on path 1"
    if need_keys and not ev.view.get("keys_learned"):
        return "the attacker did not learn the MP_CAPABLE keys"
    if not ev.agent.get("actions"):
        return "the attacker sent nothing: " + str((ev.result or {}).get("skipped", "no opportunity"))
    return None


def decide(ev: Evidence, effective: bool, effect: str, no_effect: str, evidence: dict,
           need_keys: bool = True) -> Verdict:
    evidence = {**base_evidence(ev), **evidence}
    why_not = mounted(ev, need_keys)
    if effective:
        return Verdict(EFFECTIVE, effect, evidence)
    if why_not:
        return Verdict(ERROR, why_not, evidence)
    t = ev.transfer
    if t["intact"] and not t["connection_died"]:
        return Verdict(BLOCKED, no_effect + "; transfer intact", evidence)
    return Verdict(ERROR, f"{no_effect}, but the transfer was damaged (intact={t['intact']}, "
                          f"died={t['connection_died']})", evidence)
