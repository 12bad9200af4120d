"""Two queue lanes for one engine: established segments first, SYNs in what time is left.

The rules (daemon/iptables.py) put arriving SYNs and SYN-ACKs on their own queue, the SYN lane (`syn_lane_queue`),
and every other segment, the host's own SYNs included, on the daemon's queue. With one shared queue, spoofed SYNs (each a new half-open flow, ~70 µs
of engine work) arriving faster than the daemon takes them filled the queue, and the kernel then dropped the
segments of established protected connections with them: a 20k SYN/s flood cut a bulk transfer to 0.01-0.12x of
its rate (issue 12 item 6; RFC 4987 §2 on the cost asymmetry). Now a wakeup drains the segment lane (its slice),
then takes at most SYN_SLICE of the SYN lane. A flood fills the SYN lane's short queue (SYN_LANE_LEN) and the kernel
drops the excess there (counted as `nfq_syn_lane_full`), never in front of an established connection's segments.
A legitimate SYN lost in a flood is retransmitted by its sender, as with any SYN flood (the kernel's own backlog).

`Lanes` has the QueueWorker interface the daemon uses (bind, read, tick, stats, inject, ...); everything but the
SYN lane's reading and counting is the segment lane's (timers, events, latency).
"""

from __future__ import annotations

from mptcrypt.daemon.nfqueue import SLICE, QueueWorker

SYN_SLICE = 0.002  # seconds of SYN handling per wakeup (at least one batch): ~30 SYNs at ~70 µs each
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
        syns.max_len = SYN_LANE_LEN
        syns.batch = SYN_BATCH  # netfilterqueue's worker has no batch: one packet a callback

    def __getattr__(self, name):  # engine, queue_num, backend, latency, tick, timers, timeout, drain_events, ...
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

    def read(self, slice_seconds: float = SLICE) -> None:
        """The segment lane for `slice_seconds`, then the SYN lane for SYN_SLICE (both until empty with 0: the
        drain at shutdown)."""
        self.segments.read(slice_seconds)
        self.syns.read(SYN_SLICE if slice_seconds > 0 else 0)

    def inject(self, packets) -> None:
        self.segments.inject(packets)

    def stats(self) -> dict[str, int]:
        """Both lanes' counters summed (EDGE_COUNTERS), and the SYN lane's own two (LANE_COUNTERS)."""
        seg, syn = self.segments.stats(), self.syns.stats()
        merged = {name: value + syn.get(name, 0) for name, value in seg.items()}
        merged["nfq_syn_lane"] = syn.get("nfq_packets", 0)
        merged["nfq_syn_lane_full"] = syn.get("nfq_queue_full", 0)
        return merged
