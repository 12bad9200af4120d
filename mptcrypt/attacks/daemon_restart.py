"""Attack 11 (mptcrypt-specific), daemon restart mid-transfer under policy `required`: does anything leave in clear?

Issue 12 item 3. Not an attacker's packet: the event an attacker waits for (or causes: a crash, an upgrade). The
runner stops the server's daemon with SIGTERM while the transfer runs and starts a new one with the same policy;
the attacker only reads path 1. Before the fix the stopping daemon removed its rules with protected connections
open, so the server kernel's segments went out in clear, and the new daemon passed the segments of a connection it
did not know. Now the stopping daemon resets them (a RST to its kernel and a protected RST to the peer), and the
new one drops (and resets) unknown established flows under `required`: the connection is protected or dead.
Against plain MPTCP there is no daemon: the records are readable anyway.

Variants (mptcrypt): `stop-start` as above; `graceful` (attack 18, issue 12 item 3, "Restarts keep connections"):
`mptcrypt daemon --takeover` mid-transfer, the live sessions move to the successor in memory and the chains are
replaced atomically. BLOCKED then also needs no lost byte: the transfer completes, sha256 intact both ways, the
connection not reset.

Effect measured: application records readable in plaintext on path 1 (any, for mptcrypt), bytes delivered that
are not the sender's.
"""

from __future__ import annotations

import threading
import time

from mptcrypt.attacks.judging import base_evidence, mounted
from mptcrypt.attacks.runner import BLOCKED, EFFECTIVE, ERROR, Evidence, Verdict

NUMBER = 11
TITLE = "server daemon restarted mid-transfer (policy required): [stop-start], [graceful] --takeover (row 18)"
SOURCE = "issue 12 item 3 (forgotten flows: restart, shutdown; restarts keep connections)"
RESTART_AFTER = 1.5  # seconds after the cell starts: the transfer is running
STOP_START, GRACEFUL = "stop-start", "graceful"
VARIANT_NUMBERS = {GRACEFUL: 18}  # the graceful restart is its own row of the matrix


def variants(target: str) -> list[str | None]:
    return [STOP_START, GRACEFUL] if target == "mptcrypt" else [None]


def policy(variant: str | None) -> str:
    return "required"


def prepare(ctx) -> None:
    if ctx.target != "mptcrypt" or ctx.daemons is None:
        return

    def restart() -> None:
        time.sleep(RESTART_AFTER)
        t0 = time.time()
        try:
            if ctx.variant == GRACEFUL:
                ctx.daemons.takeover("server")
            else:
                ctx.daemons.restart("server")
            ctx.extra["restart"] = {"t": round(t0, 3), "seconds": round(time.time() - t0, 3)}
        except Exception as exc:  # judged as an ERROR, never a pass
            ctx.extra["restart"] = {"error": f"{type(exc).__name__}: {exc}"}

    thread = threading.Thread(target=restart, daemon=True)
    thread.start()
    ctx.cleanups.append(lambda: thread.join(timeout=20))


def attack(agent) -> dict:
    return {"observed": True}  # the agent only reads path 1: its view counts every plaintext record


def judge(ev: Evidence) -> Verdict:
    seen = ev.view.get("plaintext_records_seen") or {}
    leaked = int(seen.get("UP", 0)) + int(seen.get("DN", 0))
    t = ev.transfer
    garbled = t["connected"] and not t["connection_died"] and not t["intact"]
    evidence = {**base_evidence(ev), "plaintext_records_on_path1": leaked, "restart": ev.extra.get("restart"),
                "mac_segments_seen": ev.view.get("mac_segments", 0)}
    if ev.target == "plain":
        if leaked:
            return Verdict(EFFECTIVE, f"no daemon: {leaked} records readable on path 1", evidence)
        return Verdict(ERROR, "plain MPTCP, yet no record was read on path 1", evidence)
    restart = ev.extra.get("restart") or {}
    if "t" not in restart:
        return Verdict(ERROR, f"the server daemon was not restarted: {restart.get('error', 'no restart')}", evidence)
    if leaked or garbled:
        what = f"{leaked} records readable in plaintext on path 1" if leaked else "bytes changed (sha256)"
        return Verdict(EFFECTIVE, "the restart let the connection continue in clear: " + what, evidence)
    why_not = mounted(ev, need_keys=False) if not ev.view.get("connection") else None
    if why_not:
        return Verdict(ERROR, why_not, evidence)
    if ev.variant == GRACEFUL:
        if t["connection_died"] or not t["intact"]:
            lost = sum(t[d]["bytes_expected"] - t[d]["bytes_received"] for d in ("upload", "download"))
            return Verdict(EFFECTIVE, f"no plaintext, but the takeover lost the connection ({lost} bytes not "
                           "delivered)", evidence)
        return Verdict(BLOCKED, "no plaintext on path 1 across the takeover; no byte lost (sha256 intact both "
                       "ways, connection not reset)", evidence)
    end = "the connection was reset (protected or dead)" if t["connection_died"] or not t["intact"] else \
        "the transfer completed intact"
    return Verdict(BLOCKED, f"no plaintext on path 1 across the restart; {end}", evidence)
