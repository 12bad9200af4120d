"""Two engines joined by an in-memory wire: what each kernel sends goes through its engine, the wire (which may
lose, duplicate or reorder), the peer's engine, and lands in the peer kernel's receive list."""

from __future__ import annotations

from collections import deque

from mptcrypt.core.config import Config
from mptcrypt.core.engine import Engine
from mptcrypt.core.events import Verdict


class EnginePair:
    def __init__(self, client: Config | None = None, server: Config | None = None, seed: int = 1,
                 fast_path: bool | None = None):
        counter = iter(range(1 << 30))

        def rng(n, _tag=seed):  # deterministic, distinct per engine and call
            return (f"{_tag}:{next(counter)}".encode() * n)[:n]

        self.eng = {"c": Engine(client or Config(), random=lambda n: rng(n, seed), fast_path=fast_path),
                    "s": Engine(server or Config(), random=lambda n: rng(n, seed + 1000), fast_path=fast_path)}
        self.rx = {"c": [], "s": []}  # what each kernel received
        self.wire: list[bytes] = []  # every packet that crossed the wire
        self.now = 0.0
        self.drop_next_wire = 0  # lose the next N packets on the wire
        self.tap = None  # callable(packet) -> packet | None on the wire (attacker)

    @staticmethod
    def other(side):
        return "s" if side == "c" else "c"

    def send(self, side: str, packet: bytes) -> list[bytes]:
        """`side`'s kernel sends `packet`; returns the packets the peer kernel received as a result."""
        before = len(self.rx[self.other(side)])
        q = deque([(side, True, packet)])
        while q:
            s, outbound, p = q.popleft()
            r = self.eng[s].handle(p, outbound, self.now)
            if outbound:
                if r.verdict is Verdict.ACCEPT:
                    self._wire(q, self.other(s), r.packet or p)
            elif r.verdict is Verdict.ACCEPT:
                self.rx[s].append(r.packet or p)
            for inj in r.inject:
                self._wire(q, self.other(s), inj)
        return self.rx[self.other(side)][before:]

    def inject(self, side: str, packet: bytes) -> Verdict:
        """An attacker puts `packet` on the wire towards `side`."""
        r = self.eng[side].handle(packet, False, self.now)
        if r.verdict is Verdict.ACCEPT:
            self.rx[side].append(r.packet or packet)
        return r.verdict

    def _wire(self, q, dest, p):
        if self.drop_next_wire:
            self.drop_next_wire -= 1
            return
        if self.tap is not None:
            p = self.tap(p)
            if p is None:
                return
        self.wire.append(p)
        q.append((dest, False, p))

    def tick(self, dt: float) -> None:
        """Advance time by dt and run both engines' timers (handshake retransmissions go on the wire)."""
        self.now += dt
        q = deque()
        for side in ("c", "s"):
            for p in self.eng[side].handle_timer(self.now):
                self._wire(q, self.other(side), p)
        while q:
            s, outbound, p = q.popleft()
            r = self.eng[s].handle(p, outbound, self.now)
            if r.verdict is Verdict.ACCEPT:
                self.rx[s].append(r.packet or p)
            for inj in r.inject:
                self._wire(q, self.other(s), inj)
