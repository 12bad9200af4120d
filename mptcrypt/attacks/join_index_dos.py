"""Attack 16 (mptcrypt-specific), join-index DoS: MP_JOIN SYNs whose NEXTK1 names a key index far ahead.

Issue 12 item 6. A join's NEXTK1 names the index i of the key ss[i] its proof comes from; ss[i] is i HMACs forward
of ss[0]. The attacker knows the victim's token (sniffed keys) but not the session secret: it sends many join SYNs
for that token with random proofs at index 0xFFFF and a spread of other far-ahead indexes. A daemon that computes
ss[i] before it checks the index does up to 65,535 HMACs (and keeps them) per SYN: a few cheap packets keep it busy
and its real connections starve. (The chain it computed is kept, so it is the first SYN at 0xFFFF of each session
that costs ~0.33 s, later ones less: over SYNS = 500 the average is what the judge bounds.) Now the index must lie
in a window past the peer's highest (`Session.in_join_window`), checked before any key work, and the SYN is refused
(`joins_refused`).
Plain MPTCP has no key chain: n/a (its join with a wrong HMAC costs the kernel one HMAC).

Effect measured: the server daemon's CPU time per join SYN it refused (from /proc/PID/stat, sampled by the
runner, minus its rate before the attack), judged against COST_BOUND_US; the victim transfer intact.
"""

from __future__ import annotations

import random
import threading
import time

from mptcrypt.attacks.flood import ETH, ETH_P_IP, blast, join_syn, random_proof, resolve_macs
from mptcrypt.attacks.judging import base_evidence, mounted
from mptcrypt.attacks.runner import ATTACKER_IP, BLOCKED, EFFECTIVE, ERROR, Evidence, Verdict

NUMBER = 16
TITLE = "join SYNs with NEXTK1 at key index 0xFFFF and other far-ahead indexes"
SOURCE = "issue 12 item 6 (key work before the index check)"
SYNS = 500
RATE = 10_000  # SYNs a second: the server's queue takes them all (a flood is attack 17)
COST_BOUND_US = 200  # daemon CPU per refused SYN, averaged over the SYNS
SAMPLE_EVERY = 0.05


def variants(target: str) -> list[str | None]:
    return [None] if target == "mptcrypt" else []  # plain MPTCP has no key chain: n/a


def prepare(ctx) -> None:
    """Sample the server daemon's CPU time all along the cell (the judge takes the attack's share)."""
    if ctx.daemons is None or "server" not in ctx.daemons.procs:
        return
    samples: list[tuple[float, float]] = []
    ctx.extra["server_cpu"] = samples
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            cpu = ctx.daemons.cpu_seconds("server")
            if cpu is not None:
                samples.append((time.time(), cpu))
            done.wait(SAMPLE_EVERY)

    thread = threading.Thread(target=sample, daemon=True, name="mptc-attack-cpu")
    thread.start()
    ctx.cleanups.append(lambda: (done.set(), thread.join(2)))


def setup(agent) -> None:
    agent.view.macs.update(resolve_macs([agent.view.server]))


def attack(agent) -> dict:
    v = agent.view
    if not v.keys_known or v.server not in v.macs:
        return {"skipped": "MP_CAPABLE keys (or the server's link address) not known"}
    rng = random.Random()
    token = v.token_server
    # half at the chain's last index, the rest spread over far-ahead indexes of both parities
    indexes = [0xFFFF] * (SYNS // 2) + [rng.randrange(0x100, 0xFFFF) for _ in range(SYNS - SYNS // 2)]
    rng.shuffle(indexes)
    head = ETH.pack(v.macs[v.server], agent.tap.mac, ETH_P_IP)
    frames = [head + join_syn(v.me, rng.randrange(20000, 60000), v.server, v.port, rng.getrandbits(32), token, i,
                              random_proof()) for i in indexes]
    t0 = time.time()
    sent = blast(agent.tap, frames, rate=RATE)
    t1 = time.time()
    agent.actions.append({"t": round(t0, 4), "what": f"{sent['sent']} MP_JOIN SYNs for the victim's token from "
                          f"{ATTACKER_IP}, NEXTK1 at index 0xFFFF and far ahead, random proofs", **sent})
    return {"syns": sent["sent"], "t_start": round(t0, 4), "t_end": round(t1, 4), "send": sent,
            "at_0xffff": indexes.count(0xFFFF)}


def attack_cpu(samples: list, t0: float, t_load_end: float | None) -> dict:
    """The daemon's CPU time from the attack's start to the end of the cell, less what its rate before the attack
    (the victim transfer's load, while it lasts) accounts for."""
    before = [s for s in samples if t0 - 1.0 <= s[0] <= t0]
    after = [s for s in samples if s[0] >= t0]
    if len(before) < 2 or len(after) < 2:
        return {}
    rate = (before[-1][1] - before[0][1]) / max(1e-3, before[-1][0] - before[0][0])
    start, end = before[-1], after[-1]
    load_s = max(0.0, min(end[0], t_load_end or end[0]) - start[0])
    return {"baseline_cpu_per_s": round(rate, 3), "window_s": round(end[0] - start[0], 2),
            "cpu_in_window_s": round(end[1] - start[1], 3), "attack_cpu_s": round(end[1] - start[1] - rate * load_s, 3)}


def judge(ev: Evidence) -> Verdict:
    r = ev.result
    refused = ev.stat("server", "joins_refused")
    cpu = attack_cpu(ev.extra.get("server_cpu") or [], r.get("t_start") or 0, ev.steady_end)
    per_syn = round(cpu["attack_cpu_s"] / refused * 1e6, 1) if cpu and refused else None
    evidence = {**base_evidence(ev), "syns_sent": r.get("syns"), "server_joins_refused": refused,
                "server_cpu": cpu, "cpu_us_per_syn": per_syn, "bound_us": COST_BOUND_US}
    why_not = mounted(ev)
    if why_not:
        return Verdict(ERROR, why_not, evidence)
    t = ev.transfer
    if not t["intact"] or t["connection_died"]:
        return Verdict(EFFECTIVE, f"the victim transfer was damaged (intact={t['intact']}, died="
                       f"{t['connection_died']}); daemon CPU {cpu.get('attack_cpu_s')} s for {refused} refused "
                       f"SYNs ({per_syn} µs each)", evidence)
    if per_syn is None:
        return Verdict(ERROR, f"no CPU figure (joins_refused {refused}, {len(ev.extra.get('server_cpu') or [])} "
                       "samples)", evidence)
    if per_syn >= COST_BOUND_US:
        return Verdict(EFFECTIVE, f"{per_syn} µs of daemon CPU per join SYN (bound {COST_BOUND_US} µs; "
                       f"{refused} refused)", evidence)
    return Verdict(BLOCKED, f"{refused} join SYNs refused before key work, {per_syn} µs of daemon CPU each (bound "
                   f"{COST_BOUND_US} µs); transfer intact", evidence)
