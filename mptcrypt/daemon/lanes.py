"""Two queue lanes for one engine: established segments first, SYNs in what time is left.

The rules (daemon/iptables.py) put arriving SYNs and SYN-ACKs on their own queue, the SYN lane (`syn_lane_queue`), and
every other segment, the host's own SYNs included, on the daemon's queue. With one shared queue, spoofed SYNs (each a
new half-open flow, ~70 µs of engine work) arriving faster than the daemon takes them filled the queue, and the kernel
then dropped the segments of established protected connections with them: a 20k SYN/s flood cut a bulk transfer to
0.01-0.12x of its rate (issue 12 item 6; RFC 4987 §2 on the cost asymmetry). Now a wakeup drains the segment lane (its
slice), then takes at most SYN_SLICE of the SYN lane. A flood fills the SYN lane's short queue (SYN_LANE_LEN) and the
kernel drops the excess there (counted as `nfq_syn_lane_full`), never in front of an established connection's
segments. A legitimate SYN lost in a flood is retransmitted by its sender, as with any SYN flood (the kernel's own
backlog).

Under a flood the SYN lane never runs dry, and a daemon busy with it all the time would take a core from the
kernel and the applications whose segments it protects (on the 2-vCPU lab machine that alone halved a transfer).
So after a SYN slice that ran out with SYNs left the lane rests in proportion (SYN_SHARE of the time at most): its
socket is taken out of the selector until then, the segment lane and everything else run as usual, and the kernel
drops the SYNs that do not fit the lane.

`Lanes` has the QueueWorker interface the daemon uses (bind, read, tick, timeout, stats, inject, ...); everything
but the SYN lane's reading, resting and counting is the segment lane's (timers, events, latency).
"""

from __future__ import annotations

import selectors

from mptcrypt.daemon.nfqueue import SLICE, QueueWorker
from mptcrypt.daemon.queue_batched import make_queue_worker

SYN_SLICE = 0.002  # seconds of SYN handling per wakeup (at least one batch): ~30 SYNs at ~70 µs each
SYN_SHARE = 0.25  # at most this share of the time goes to SYNs while they keep coming: the rest is the host's
SYN_BATCH = 16  # SYNs per recvmmsg (batched backend): a batch read is handled whole, so it bounds a slice's overrun
SYN_LANE_LEN = 1024  # SYNs the kernel may hold for the lane; beyond, it drops them (fail-closed, as any full queue)
LANE_COUNTERS = (
    "nfq_syn_lane",  # packets read from the SYN lane (included in nfq_packets)
    "nfq_syn_lane_full",  # kernel: SYNs dropped because the SYN lane was full (included in nfq_queue_full)
)


class Lanes:
    """The segment lane `segments` and the SYN lane `syns`: two workers of one engine on two queues."""

    def __init__(self, segments: QueueWorker, syns: QueueWorker):
        self.segments = segments
        self.syns = syns
        self._selector = None  # attach(): where the sockets are registered
        self._callback = None
        self._syn_resume: float | None = None  # the SYN lane rests until then (its socket out of the selector)
        syns.max_len = SYN_LANE_LEN
        syns.batch = SYN_BATCH  # netfilterqueue's worker has no batch: one packet a callback

    def __getattr__(self, name):  # engine, queue_num, backend, latency, counters, timers, drain_events, ...
        return getattr(self.segments, name)

    @property
    def on_events(self):
        return self.segments.on_events

    @on_events.setter
    def on_events(self, callback) -> None:
        self.segments.on_events = callback
        self.syns.on_events = callback

    def bind(self) -> None:
        self.segments.bind()
        try:
            self.syns.bind()
        except BaseException:
            self.segments.unbind()
            raise

    def unbind(self) -> None:
        self.syns.unbind()
        self.segments.unbind()

    def filenos(self) -> tuple[int, int]:
        return self.segments.fileno(), self.syns.fileno()

    def attach(self, selector: selectors.BaseSelector, callback) -> None:
        """Register both lanes' sockets in `selector` with `callback` (which calls read()); either lane's wake-up
        reads both, the segments first."""
        self._selector, self._callback = selector, callback
        for fd in self.filenos():
            selector.register(fd, selectors.EVENT_READ, callback)

    def read(self, slice_seconds: float = SLICE) -> None:
        """The segment lane for `slice_seconds`, then, unless it rests, the SYN lane for SYN_SLICE (both until
        empty with 0: the drain at shutdown)."""
        self.segments.read(slice_seconds)
        if slice_seconds <= 0:
            self.syns.read(0)
            return
        if self._syn_resume is not None:
            return
        clock = self.segments.clock
        start = clock()
        self.syns.read(SYN_SLICE)
        spent = clock() - start
        if spent >= SYN_SLICE:  # the slice ran out with SYNs left: a flood. One slow SYN (a handshake's public-key
            # work, ~1 ms) must not rest the lane: a join's SYN-ACK right behind it would wait the rest out
            self._rest(clock() + spent * (1 - SYN_SHARE) / SYN_SHARE)

    def _rest(self, until: float) -> None:
        self._syn_resume = until
        if self._selector is not None:
            self._selector.unregister(self.syns.fileno())

    def tick(self) -> None:
        """The segment lane's timers and events; the SYN lane back in the selector once its rest is over."""
        self.segments.tick()
        if self._syn_resume is not None and self.segments.clock() >= self._syn_resume:
            self._syn_resume = None
            if self._selector is not None:
                self._selector.register(self.syns.fileno(), selectors.EVENT_READ, self._callback)

    def timeout(self, cap: float) -> float:
        """How long the loop may sleep: the segment lane's timers, and the end of the SYN lane's rest."""
        wait = self.segments.timeout(cap)
        if self._syn_resume is not None:
            wait = min(wait, max(0.0, self._syn_resume - self.segments.clock()))
        return wait

    def inject(self, packets) -> None:
        self.segments.inject(packets)

    def stats(self) -> dict[str, int]:
        """Both lanes' counters summed (EDGE_COUNTERS), and the SYN lane's own two (LANE_COUNTERS)."""
        seg, syn = self.segments.stats(), self.syns.stats()
        merged = {name: value + syn.get(name, 0) for name, value in seg.items()}
        packets, full = LANE_COUNTERS
        merged[packets] = syn.get("nfq_packets", 0)
        merged[full] = syn.get("nfq_queue_full", 0)
        return merged


def make_lanes(backend: str, engine, queue_num: int, syn_queue: int, send) -> tuple[Lanes, str]:
    """Both lanes of `engine` on the NFQUEUE edge `backend` (make_queue_worker), and the line saying which runs."""
    segments, which = make_queue_worker(backend, engine, queue_num, send)
    return Lanes(segments, make_queue_worker(backend, engine, syn_queue, send)[0]), which
