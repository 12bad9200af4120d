"""The NFQUEUE worker: moves queued packets into the engine and applies its verdicts. Nothing else.

One queue number serves both hooks: `Packet.hook` says whether the kernel queued a packet from LOCAL_OUT (a segment
this host sends, `outbound=True`) or LOCAL_IN (one it receives). Per packet::

    res = engine.handle(payload, outbound, now)
    ACCEPT            -> accept (with res.packet as the new payload when set)
    DROP, HOLD        -> drop (on HOLD the engine kept a copy and hands it back later through an inject list)
    res.inject        -> sent in order through the raw socket, after the verdict

Fail-closed everywhere: an exception from the engine, a verdict the engine did not give, or a packet truncated by
the copy limit drops the packet. The daemon counts it and logs the first of each kind; it never crashes and never
lets a segment through unexamined.

netfilterqueue 1.1.0 copies at most 4016 bytes of a packet and cannot ask for GSO packets, so the kernel segments
them before queueing: every packet is at most one MTU (loopback is excluded by the rules for that reason).

Packets are read by the library's C loop (`run(block=False)`, ~20% faster here than feeding it from Python). To
keep the control socket and the engine's timers served under a flood, a read is a time slice: once SLICE seconds
have passed, the callback, after giving its packet a verdict, raises `_SliceOver`, which netfilterqueue propagates
out of `run()` by design; the rest stays in the socket for the next slice.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from mptcrypt.core.events import Verdict
from mptcrypt.daemon.metrics import LatencyHistogram
from mptcrypt.wire.segment import announced_length
from mptcrypt.errors import KernelFeatureError, MptcryptError

log = logging.getLogger("mptcrypt.nfqueue")
_ACCEPT, _HOLD = Verdict.ACCEPT, Verdict.HOLD

NF_INET_LOCAL_IN = 1
NF_INET_LOCAL_OUT = 3
NF_INET_PRE_ROUTING = 0  # gateway mode: a LAN host's segment before it is forwarded toward the peer
MAX_QUEUE_LEN = 4096  # packets the kernel may hold for us before it drops (fail-closed) or bypasses (fail-open)
COPY_LIMIT = 4016  # netfilterqueue's BufferSize (4096) minus its metadata allowance (80)
NLMSG_BUDGET = COPY_LIMIT + 780  # netfilterqueue's measured per-message socket overhead
SOCK_LEN = MAX_QUEUE_LEN * NLMSG_BUDGET // 2  # the kernel doubles it: room for a full queue, no ENOBUFS
# events every connection makes (one per keyed subflow): logged at DEBUG (-v), still streamed to `mptcrypt monitor`;
# at thousands of connections/s an INFO line each flooded the log (and was ~7% of a daemon's CPU under a profiler)
ROUTINE_EVENTS = frozenset({"protected"})
SLICE = 0.02  # seconds of packet handling before the loop looks at the control socket and timers again
PROC_QUEUES = "/proc/net/netfilter/nfnetlink_queue"  # per network namespace

EDGE_COUNTERS = (
    "nfq_packets",  # packets read from the queue
    "nfq_inbound",
    "nfq_outbound",
    "nfq_accepted",
    "nfq_modified",  # accepted with a new payload
    "nfq_fast_path",  # of those, sealed / opened and verdicted in C without the Python engine (queue_batched.py)
    "nfq_dropped",  # DROP verdicts and fail-closed drops
    "nfq_held",  # HOLD verdicts (dropped here, kept by the engine)
    "nfq_engine_errors",  # engine.handle / handle_timer raised
    "nfq_truncated",  # longer than the copy limit: dropped
    "nfq_injected",  # packets sent through the raw socket
    "nfq_inject_errors",
    "nfq_queue_full",  # kernel: dropped (or bypassed, fail-open) because MAX_QUEUE_LEN packets were waiting
    "nfq_socket_overflow",  # kernel: dropped because our netlink socket buffer was full
)


def ip_total_length(packet: bytes) -> int:
    """The length an IP header announces for its packet (0 if unknown: too short or not IP)."""
    return announced_length(packet)


def kernel_queue_drops(queue_num: int, path: str = PROC_QUEUES) -> tuple[int, int] | None:
    """(queue_dropped, user_dropped) of queue `queue_num` from /proc, None if the queue is not listed."""
    try:
        with open(path) as fh:
            for line in fh:
                fields = line.split()
                # queue_num portid queue_total copy_mode copy_range queue_dropped user_dropped id_sequence 1
                if len(fields) >= 7 and fields[0] == str(queue_num):
                    return int(fields[5]), int(fields[6])
    except (OSError, ValueError):
        pass
    return None


class _SliceOver(Exception):
    """Raised by the callback, after its verdict, to end a time slice of `run()`."""


class QueueWorker:
    """Binds queue `queue_num` and feeds `engine`; `send(packet)` injects (the raw socket's send)."""

    def __init__(
        self,
        engine,
        queue_num: int,
        send: Callable[[bytes], None],
        clock: Callable[[], float] = time.monotonic,
        event_rate: float = 50.0,
        event_burst: int = 200,
    ):
        self.engine = engine
        self.queue_num = queue_num
        self.send = send
        self.clock = clock
        self.counters = dict.fromkeys(EDGE_COUNTERS, 0)  # nfq_packets, nfq_accepted, kernel drops: see stats()
        self._handle = engine.handle
        self.latency = LatencyHistogram()  # engine time per packet (mptcrypt_packet_seconds)
        self.on_events = None  # callable(list of engine events), e.g. the daemon's monitor fan-out
        self._slice_end = float("inf")  # outside read(), on_packet never ends a slice
        self._seen: set[str] = set()  # kinds of trouble already logged once
        self._nfq = None
        self.max_len = MAX_QUEUE_LEN  # packets the kernel may hold in this queue (the SYN lane holds fewer)
        # events -> log: token bucket
        self._event_rate = event_rate
        self._event_burst = event_burst
        self._tokens = float(event_burst)
        self._tokens_at = clock()
        self._suppressed = 0

    # --- queue lifecycle -------------------------------------------------------------------------------------
    def bind(self) -> None:
        try:
            from netfilterqueue import NetfilterQueue
        except ImportError as exc:
            raise KernelFeatureError(f"the netfilterqueue module cannot be loaded ({exc}): pip install netfilterqueue")
        try:
            nfq = NetfilterQueue()
        except OSError as exc:
            raise KernelFeatureError(
                f"cannot open NFQUEUE ({exc}): the kernel needs nfnetlink_queue (`modprobe nfnetlink_queue`) "
                "and the daemon needs root"
            ) from None
        try:
            nfq.bind(self.queue_num, self.on_packet, max_len=self.max_len, sock_len=SOCK_LEN)
        except OSError:
            raise MptcryptError(
                f"cannot bind NFQUEUE {self.queue_num}: another process holds it (choose another --queue-num) or "
                "the kernel lacks nfnetlink_queue (`modprobe nfnetlink_queue`)"
            ) from None
        self._nfq = nfq

    def fileno(self) -> int:
        return self._nfq.get_fd()

    def unbind(self) -> None:
        """Destroy the queue; the kernel drops whatever is still queued to it. Idempotent."""
        if self._nfq is not None:
            self._nfq.unbind()
            self._nfq = None

    def read(self, slice_seconds: float = SLICE) -> None:
        """Handle queued packets without blocking, for at most about `slice_seconds` (0: until the queue is empty)."""
        if self._nfq is None:
            return
        self._slice_end = self.clock() + slice_seconds if slice_seconds > 0 else float("inf")
        try:
            self._nfq.run(False)
        except _SliceOver:
            pass
        finally:
            self._slice_end = float("inf")

    def tick(self) -> None:
        """Fire the engine's timer if due, and log its events. Call after every loop iteration."""
        self.timers()
        self.drain_events()

    # --- the packet path -------------------------------------------------------------------------------------
    def on_packet(self, pkt) -> None:
        """netfilterqueue's callback. Must never raise: the library cannot report it and the packet would stay
        queued until unbind. The common path (accept) costs two dict increments besides the engine."""
        counters = self.counters
        decided = False
        try:
            payload = pkt.get_payload()
            outbound = pkt.hook == NF_INET_LOCAL_OUT or pkt.hook == NF_INET_PRE_ROUTING
            counters["nfq_outbound" if outbound else "nfq_inbound"] += 1
            if len(payload) >= COPY_LIMIT and len(payload) < ip_total_length(payload):
                counters["nfq_truncated"] += 1
                self._once(
                    "truncated",
                    f"dropped a packet longer than {len(payload)} bytes: netfilterqueue copies at most {COPY_LIMIT} "
                    "bytes; lower the MTU of interfaces above ~4000 bytes (jumbo frames) to use mptcrypt on them",
                )
                pkt.drop()
                decided = True
                counters["nfq_dropped"] += 1
                return
            now = self.clock()
            res = self._handle(payload, outbound, now)
            self.latency.observe(self.clock() - now)
            verdict = res.verdict
            if verdict is _ACCEPT:
                if res.packet is not None:
                    pkt.set_payload(bytes(res.packet))
                    counters["nfq_modified"] += 1
                pkt.accept()
                decided = True
            else:
                pkt.drop()
                decided = True
                counters["nfq_held" if verdict is _HOLD else "nfq_dropped"] += 1
            if res.inject:
                self.inject(res.inject)
        except Exception as exc:
            counters["nfq_engine_errors"] += 1
            self._once(f"engine:{type(exc).__name__}", "engine error on a queued packet (packet dropped)", exc)
            if not decided:
                try:
                    pkt.drop()
                    counters["nfq_dropped"] += 1
                except Exception:  # nothing more we can do: unbind will drop it
                    pass
            return
        if now >= self._slice_end:
            raise _SliceOver  # after the verdict: netfilterqueue hands it to read() through run()

    def stats(self) -> dict[str, int]:
        """The edge's counters (EDGE_COUNTERS order), with the totals derived from the per-outcome counts."""
        c = self.counters
        packets = c["nfq_inbound"] + c["nfq_outbound"]
        derived = {"nfq_packets": packets, "nfq_accepted": packets - c["nfq_dropped"] - c["nfq_held"]}
        drops = kernel_queue_drops(self.queue_num) if self._nfq is not None else None
        if drops is not None:
            derived["nfq_queue_full"], derived["nfq_socket_overflow"] = drops
        return {name: derived.get(name, c.get(name, 0)) for name in EDGE_COUNTERS}

    def inject(self, packets) -> None:
        counters = self.counters
        for packet in packets:
            try:
                self.send(packet)
                counters["nfq_injected"] += 1
            except (OSError, ValueError) as exc:
                counters["nfq_inject_errors"] += 1
                kind = f"inject:{getattr(exc, 'errno', None) or type(exc).__name__}"
                self._once(kind, "could not send a daemon-made packet", exc, traceback=False)

    def timers(self) -> None:
        """Run the engine's timer if it is due and send what it returns."""
        try:
            deadline = self.engine.next_timer()
            if deadline is None:
                return
            now = self.clock()
            if deadline <= now:
                self.inject(self.engine.handle_timer(now))
        except Exception as exc:
            self.counters["nfq_engine_errors"] += 1
            self._once(f"timer:{type(exc).__name__}", "engine error in handle_timer", exc)

    def timeout(self, cap: float) -> float:
        """Seconds the loop may sleep before the engine's next timer (at most `cap`)."""
        try:
            deadline = self.engine.next_timer()
        except Exception:
            return 0.0 if cap <= 0 else min(cap, 0.1)
        if deadline is None:
            return cap
        return max(0.0, min(cap, deadline - self.clock()))

    # --- logging ---------------------------------------------------------------------------------------------
    def drain_events(self) -> None:
        """Log the engine's events, at most `event_rate` per second (bursts up to `event_burst`)."""
        try:
            events = self.engine.events()
        except Exception as exc:
            self._once(f"events:{type(exc).__name__}", "engine error in events()", exc)
            return
        if events and self.on_events is not None:
            self.on_events(events)
        now = self.clock()
        self._tokens = min(self._event_burst, self._tokens + (now - self._tokens_at) * self._event_rate)
        self._tokens_at = now
        if self._suppressed and self._tokens >= 1:
            log.warning("%d engine events not logged (more than %g per second)", self._suppressed, self._event_rate)
            self._suppressed = 0
        debug = log.isEnabledFor(logging.DEBUG)
        for event in events:
            if event.kind in ROUTINE_EVENTS:
                if debug:
                    log.debug("%s %s: %s", event.kind, event.flow, event.detail)
                continue
            if self._tokens >= 1:
                self._tokens -= 1
                log.info("%s %s%s", event.kind, event.flow, f": {event.detail}" if event.detail else "")
            else:
                self._suppressed += 1

    def _once(self, kind: str, message: str, exc: BaseException | None = None, traceback: bool = True) -> None:
        """Log `message` the first time `kind` happens; later ones only count."""
        if kind in self._seen:
            return
        self._seen.add(kind)
        if exc is None:
            log.warning("%s (logged once; see `mptcrypt stats`)", message)
        else:
            log.error(
                "%s: %s: %s (logged once per kind; see `mptcrypt stats`)",
                message,
                type(exc).__name__,
                exc,
                exc_info=exc if traceback else None,
            )
