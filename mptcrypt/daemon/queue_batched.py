"""The batched NFQUEUE edge: the daemon's own netlink client on a raw NETLINK_NETFILTER socket (no library).

Same contract as `mptcrypt.daemon.nfqueue.QueueWorker` (it subclasses it: the per-packet decision, counters,
fail-closed handling and logging are that class's `on_packet`); only the queue I/O differs:

* with the engine's compiled fast path (core/datapath.FastPath, on unless MPTCRYPT_FAST_PATH=off), the
  protected flows' ordinary segments are sealed / opened and verdicted inside `_nfq.recv_batch_fast`, in C,
  never reaching `on_packet`; from the first packet of a batch that the fast path declines, the rest of the
  batch goes through `on_packet` in order (the engine tries its fast path again for each).
* a wakeup drains the socket without blocking (up to BATCH packets, or the time slice), and the verdicts of what
  it read go to the kernel together, as consecutive netlink messages in ONE sendmsg (netfilterqueue: one recv and
  one sendmsg per packet). Before any daemon-made packet is injected, the verdicts so far are flushed, so the
  kernel sees packets in the order the engine decided them.
* NETLINK_NO_ENOBUFS (a full socket buffer drops the packet and counts it in /proc instead of failing the
  socket), the socket buffer forced to hold a full queue, queue maxlen MAX_QUEUE_LEN, the whole packet copied
  (no 4016-byte limit), and NFQA_CFG_F_FAIL_OPEN always cleared, `--fail-open` or not: with it the kernel passes
  packets unexamined whenever the queue is full, which anyone who can flood the host can cause, and protected
  connections would then leak plaintext and take injected segments. `--fail-open` means only "while no daemon
  listens" (iptables --queue-bypass); a full queue drops, and TCP retransmits.

Message layout (linux/netfilter/nfnetlink_queue.h): nlmsghdr | nfgenmsg(family, version, res_id = queue) |
attributes (nlattr: u16 length, u16 type, padded to 4). The kernel puts NFQA_PACKET_HDR first.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from typing import Callable

from mptcrypt.daemon.nfqueue import (MAX_QUEUE_LEN, NF_INET_LOCAL_OUT, NF_INET_PRE_ROUTING, SLICE, QueueWorker,
                                     _SliceOver)
from mptcrypt.errors import KernelFeatureError, MptcryptError

try:
    from mptcrypt.daemon import _nfq
    _NFQ_MISSING = ""
except ImportError as _exc:  # not built: the netfilterqueue backend runs instead
    _nfq = None
    _NFQ_MISSING = f"extension mptcrypt.daemon._nfq not importable: {_exc}"

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5
SO_RCVBUFFORCE = 33
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
MSG_PACKET = NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET
MSG_VERDICT = NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_VERDICT
MSG_CONFIG = NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_CONFIG
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_PAYLOAD = 1, 2, 10
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQNL_CFG_CMD_BIND, NFQNL_CFG_CMD_UNBIND = 1, 2
NFQNL_COPY_PACKET = 2
NFQA_CFG_F_FAIL_OPEN = 0x1
NF_DROP, NF_ACCEPT = 0, 1

BATCH = 64  # packets per recvmmsg; their verdicts go out together
SLOT = 16 * 1024  # _nfq's receive slot per packet
COPY_RANGE = SLOT - 512  # bytes of a packet the kernel copies; a longer one is cut and then dropped here
RECV_BUF = 4096  # config ACKs
MSG_OVERHEAD = 512  # netlink + skb bookkeeping per queued packet, for sizing the socket buffer
SOCK_BUF = MAX_QUEUE_LEN * (1500 + MSG_OVERHEAD)

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid (host order)
_NFGEN = struct.Struct("!BBH")  # family, version, res_id (queue number, big-endian)
_NLATTR = struct.Struct("=HH")


def _attr(kind: int, data: bytes) -> bytes:
    n = _NLATTR.size + len(data)
    return _NLATTR.pack(n, kind) + data + bytes(-n & 3)


class BatchedQueueWorker(QueueWorker):
    """QueueWorker over the daemon's own NFQUEUE netlink socket, with batched verdicts."""

    backend = "batched"

    def __init__(self, engine, queue_num: int, send: Callable[[bytes], None], clock: Callable[[], float] = time.monotonic,
                 **kwargs):
        super().__init__(engine, queue_num, send, clock, **kwargs)
        self._sock: socket.socket | None = None
        self._verdicts: list[tuple] = []  # (packet id, verdict, new payload or None), sent as one sendmsg
        self.batch = BATCH  # packets per recvmmsg (the SYN lane reads fewer: daemon/lanes.py)
        self._seq = 0

    # --- queue lifecycle -------------------------------------------------------------------------------------
    def bind(self) -> None:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        except OSError as exc:
            raise KernelFeatureError(
                f"cannot open a netfilter netlink socket ({exc}): the daemon needs root and the kernel nfnetlink"
            ) from None
        try:
            sock.bind((0, 0))
            sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, SOCK_BUF)
            except OSError:  # without CAP_NET_ADMIN: as much as rmem_max allows
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCK_BUF)
            self._sock = sock
            self._config(_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)))
            self._config(_attr(NFQA_CFG_PARAMS, struct.pack("!IB", COPY_RANGE, NFQNL_COPY_PACKET)),
                         _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", self.max_len)))
            self._config(_attr(NFQA_CFG_FLAGS, struct.pack("!I", 0)),  # never fail open on a full queue (above)
                         _attr(NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN)))
        except OSError as exc:
            sock.close()
            self._sock = None
            if exc.errno == errno.EBUSY:
                raise MptcryptError(f"cannot bind NFQUEUE {self.queue_num}: another process holds it "
                                    "(choose another --queue-num)") from None
            raise KernelFeatureError(f"cannot configure NFQUEUE {self.queue_num} ({exc}): the kernel needs "
                                     "nfnetlink_queue (`modprobe nfnetlink_queue`)") from None
        sock.setblocking(False)
        self._nfq = self  # QueueWorker checks `_nfq is not None` for "bound"

    def _config(self, *attrs: bytes) -> None:
        """Send one NFQNL_MSG_CONFIG with `attrs` and wait for its ACK; OSError with the kernel's errno if refused."""
        self._seq += 1
        body = _NFGEN.pack(socket.AF_UNSPEC, 0, self.queue_num) + b"".join(attrs)
        msg = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, self._seq, 0) + body
        self._sock.send(msg)
        while True:
            data = self._sock.recv(RECV_BUF)
            _len, kind, _flags, seq, _pid = _NLMSGHDR.unpack_from(data)
            if kind == NLMSG_ERROR and seq == self._seq:
                code = struct.unpack_from("=i", data, _NLMSGHDR.size)[0]
                if code:
                    raise OSError(-code, os.strerror(-code))
                return

    def fileno(self) -> int:
        return self._sock.fileno()

    def unbind(self) -> None:
        if self._sock is not None:
            self._flush()
            try:
                self._sock.settimeout(1.0)
                self._config(_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_UNBIND, 0)))
            except OSError:
                pass  # closing the socket unbinds too
            self._sock.close()
            self._sock = None
        self._nfq = None

    # --- the packet path -------------------------------------------------------------------------------------
    def read(self, slice_seconds: float = SLICE) -> None:
        """Drain queued packets without blocking (BATCH per recvmmsg, verdicts flushed after each batch), for about
        `slice_seconds` (0: until the queue is empty)."""
        sock = self._sock
        if sock is None:
            return
        self._slice_end = self.clock() + slice_seconds if slice_seconds > 0 else float("inf")
        fd, on_packet, counters = sock.fileno(), self.on_packet, self.counters
        fast = getattr(self.engine, "fast", None)  # the compiled fast path (core/datapath.FastPath), or None
        try:
            slice_over = False
            while not slice_over:
                if fast is None:
                    batch = _nfq.recv_batch(fd, self.batch)
                    if not batch:
                        return
                else:
                    batch, fast_in, fast_out, verdict_errno = _nfq.recv_batch_fast(fd, self.batch, self.queue_num,
                                                                                   fast.table, self.clock())
                    if fast_in or fast_out:
                        counters["nfq_inbound"] += fast_in
                        counters["nfq_outbound"] += fast_out
                        counters["nfq_modified"] += fast_in + fast_out
                        counters["nfq_fast_path"] += fast_in + fast_out
                    elif not batch:
                        return
                    if verdict_errno:
                        counters["nfq_engine_errors"] += 1
                        self._once(f"verdict:{verdict_errno}", "could not send verdicts to NFQUEUE",
                                   OSError(verdict_errno, os.strerror(verdict_errno)), traceback=False)
                    if not batch and self.clock() >= self._slice_end:
                        return
                for packet_id, hook, payload in batch:  # every packet read gets its verdict, slice over or not
                    if payload is None:  # longer than a receive slot: never passed unexamined
                        counters["nfq_truncated"] += 1
                        counters["nfq_dropped"] += 1
                        outbound = hook in (NF_INET_LOCAL_OUT, NF_INET_PRE_ROUTING)  # PRE_ROUTING: gateway mode
                        counters["nfq_outbound" if outbound else "nfq_inbound"] += 1
                        self._once("truncated", f"dropped a packet longer than {COPY_RANGE} bytes")
                        self._verdicts.append((packet_id, NF_DROP, None))
                        continue
                    try:
                        on_packet(_Packet(self._verdicts, packet_id, hook, payload))
                    except _SliceOver:
                        slice_over = True
                self._flush()
        except OSError as exc:
            self._once(f"recv:{exc.errno}", "could not read from NFQUEUE", exc, traceback=False)
        finally:
            self._flush()
            self._slice_end = float("inf")

    def inject(self, packets) -> None:
        self._flush()  # verdicts of earlier packets first: the kernel sees packets in the engine's order
        super().inject(packets)

    def _flush(self) -> None:
        if self._verdicts and self._sock is not None:
            batch, self._verdicts = self._verdicts, []
            try:
                _nfq.send_verdicts(self._sock.fileno(), self.queue_num, batch)
            except OSError as exc:  # the kernel keeps them queued; unbind drops them (fail-closed)
                self.counters["nfq_engine_errors"] += 1
                self._once(f"verdict:{exc.errno}", "could not send verdicts to NFQUEUE", exc, traceback=False)


class _Packet:
    """One queued packet with netfilterqueue's Packet interface (what QueueWorker.on_packet uses); its verdict
    joins the worker's next batch."""

    __slots__ = ("_verdicts", "id", "hook", "_payload", "_new")

    def __init__(self, verdicts: list, packet_id: int, hook: int, payload: bytes):
        self._verdicts, self.id, self.hook, self._payload, self._new = verdicts, packet_id, hook, payload, None

    def get_payload(self) -> bytes:
        return self._payload

    def set_payload(self, payload: bytes) -> None:
        self._new = payload

    def accept(self) -> None:
        self._verdicts.append((self.id, NF_ACCEPT, self._new))

    def drop(self) -> None:
        self._verdicts.append((self.id, NF_DROP, None))


QUEUE_BACKENDS = ("netfilterqueue", "batched")
DEFAULT_QUEUE_BACKEND = "batched"  # measured faster (bench_queue, bench_throughput); netfilterqueue stays selectable


def make_queue_worker(backend: str, engine, queue_num: int, send: Callable[[bytes], None]) -> tuple[QueueWorker, str]:
    """The NFQUEUE edge `backend` (one of QUEUE_BACKENDS) for `engine`, and a line saying which one runs and why:
    "batched" needs the compiled helper mptcrypt.daemon._nfq, and runs netfilterqueue without it."""
    if backend not in QUEUE_BACKENDS:
        raise MptcryptError(f"unknown queue backend {backend!r} (one of {', '.join(QUEUE_BACKENDS)})")
    if backend == "batched":
        if _nfq is not None:
            return BatchedQueueWorker(engine, queue_num, send), "batched (recvmmsg, one sendmsg)"
        return QueueWorker(engine, queue_num, send), f"netfilterqueue (batched unavailable: {_NFQ_MISSING})"
    return QueueWorker(engine, queue_num, send), "netfilterqueue"
