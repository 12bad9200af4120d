"""A stand-in engine that accepts every packet and counts: for testing the edges (queue, rules, control socket,
shutdown) with the real kernel path but without the protocol. Selected with the environment variable
MPTCRYPT_ENGINE=passthrough:PassthroughEngine (with this directory on PYTHONPATH). It protects nothing and says so in `mptcrypt status`.
"""

from __future__ import annotations

from mptcrypt.core.events import ACCEPT, Event, Result


class PassthroughEngine:
    """Same surface as mptcrypt.core.engine.Engine; every verdict is ACCEPT."""

    name = "passthrough"

    def __init__(self, config=None, *, random=None):
        self.config = config
        self.counts = {"packets_in": 0, "packets_out": 0, "bytes_in": 0, "bytes_out": 0}
        self._events = [Event("passthrough", "-", "engine accepts every packet unchanged: nothing is protected")]

    def handle(self, packet: bytes, outbound: bool, now: float) -> Result:
        if outbound:
            self.counts["packets_out"] += 1
            self.counts["bytes_out"] += len(packet)
        else:
            self.counts["packets_in"] += 1
            self.counts["bytes_in"] += len(packet)
        return ACCEPT

    def handle_timer(self, now: float) -> list[bytes]:
        return []

    def next_timer(self) -> float | None:
        return None

    def events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def sessions(self) -> list[dict]:
        return []

    def stats(self) -> dict[str, int]:
        return dict(self.counts)

    def session_id(self, local: tuple[str, int], remote: tuple[str, int]) -> bytes | None:
        return None
