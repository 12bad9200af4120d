"""Between the queue and the engine: Path MTU Discovery with 12 more bytes per segment than the kernel knows of.

1. Inbound ICMP "fragmentation needed" / ICMPv6 "Packet Too Big" get the MTU they report lowered by the MAC option's
   size (mptcrypt/wire/icmp.py), so the kernel sizes segments that still fit once the option is added.
2. The kernel also checks each outgoing packet against that (lowered) path MTU after the daemon enlarged it, and
   would refuse it locally. A protected segment longer than the MTU reported for its destination is therefore
   dropped from the queue and sent as is through the raw socket (daemon/rawsock.py: checked against the device MTU),
   where it fits the real path.

`TooBigClamp(engine)` stands where the engine would (the queue worker calls `.handle(packet, outbound, now)`);
everything else (`sessions`, `stats`, timers) is the engine's.
"""

from __future__ import annotations

from mptcrypt.constants import MAC_OPTION_LEN
from mptcrypt.core.events import ACCEPT, Result, Verdict
from mptcrypt.wire.icmp import IPPROTO_ICMP, IPPROTO_ICMPV6, lower_reported_mtu, quoted_destination, too_big_mtu

_ICMP_AT = {4: (9, IPPROTO_ICMP), 6: (6, IPPROTO_ICMPV6)}  # version -> (protocol byte offset, ICMP protocol)
_DST = {4: slice(16, 20), 6: slice(24, 40)}
MAX_DESTINATIONS = 4096  # remembered lowered path MTUs; beyond this the oldest is forgotten


class TooBigClamp:
    def __init__(self, engine, by: int = MAC_OPTION_LEN, resend: bool = True):
        self.engine = engine
        self.by = by
        self.resend = resend
        self.counters = {"icmp_too_big_lowered": 0, "pmtu_resent_raw": 0}
        self._handle = engine.handle
        self._reported: dict[bytes, int] = {}  # destination -> the path MTU we let the kernel learn for it

    def handle(self, packet: bytes, outbound: bool, now: float) -> Result:
        if not outbound and len(packet) >= 40:
            at, proto = _ICMP_AT.get(packet[0] >> 4, (0, -1))
            if packet[at] == proto:
                return self._too_big(packet)
        res = self._handle(packet, outbound, now)
        if outbound and self.resend and self._reported and res.packet is not None and res.verdict is Verdict.ACCEPT:
            limit = self._reported.get(packet[_DST.get(packet[0] >> 4, slice(0, 0))])
            if limit is not None and len(res.packet) > limit:
                self.counters["pmtu_resent_raw"] += 1
                return Result(Verdict.HOLD, None, [res.packet, *res.inject])
        return res

    def _too_big(self, packet: bytes) -> Result:
        lowered = lower_reported_mtu(packet, self.by)
        if lowered is None:
            return ACCEPT
        self.counters["icmp_too_big_lowered"] += 1
        if len(self._reported) >= MAX_DESTINATIONS:
            self._reported.pop(next(iter(self._reported)))
        self._reported[quoted_destination(packet)] = too_big_mtu(lowered)
        return Result(Verdict.ACCEPT, lowered)

    @property
    def fast(self):
        """The engine's compiled fast path, for the queue to call without `handle`: only while no lowered path
        MTU makes outbound segments need the look `handle` gives them."""
        return None if self.resend and self._reported else self.engine.fast

    def stats(self) -> dict:
        return {**self.engine.stats(), **self.counters}

    def __getattr__(self, name):
        return getattr(self.engine, name)
