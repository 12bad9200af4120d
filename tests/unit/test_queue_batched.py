"""The batched NFQUEUE edge (mptcrypt.daemon.queue_batched) over a fake netlink helper: every packet read gets
exactly one verdict (also when the time slice ends in the middle of a batch), verdicts go out before any injected
packet, a cut packet is dropped, and the backend choice. The real socket runs in
tests/integration/test_queue_backends.py."""

import pytest

from mptcrypt.core.events import Result, Verdict
from mptcrypt.daemon import queue_batched as qb
from mptcrypt.daemon.nfqueue import NF_INET_LOCAL_IN, NF_INET_LOCAL_OUT, QueueWorker
from mptcrypt.errors import MptcryptError


class FakeNfq:
    def __init__(self, batches):
        self.batches, self.log = list(batches), []

    def recv_batch(self, fd, n):
        return self.batches.pop(0) if self.batches else []

    def send_verdicts(self, fd, queue_num, items):
        self.log.append(("verdicts", [(i, v, p) for i, v, p in items]))


class FakeSock:
    def fileno(self):
        return 99


class Engine:
    """DROP for payloads starting with b'd', a new payload for b'm', and an injected packet for b'i'."""

    def __init__(self, log):
        self.log, self.seen = log, []

    def handle(self, packet, outbound, now):
        self.seen.append(packet)
        if packet.startswith(b"d"):
            return Result(Verdict.DROP)
        if packet.startswith(b"m"):
            return Result(Verdict.ACCEPT, b"M" + packet[1:])
        if packet.startswith(b"i"):
            return Result(Verdict.ACCEPT, inject=[b"injected"])
        return Result(Verdict.ACCEPT)

    def next_timer(self):
        return None

    def events(self):
        return []


def worker(monkeypatch, batches, clock=None):
    fake = FakeNfq(batches)
    monkeypatch.setattr(qb, "_nfq", fake)
    engine = Engine(fake.log)
    w = qb.BatchedQueueWorker(engine, 7, lambda p: fake.log.append(("inject", p)),
                              **({"clock": clock} if clock else {}))
    w._sock, w._nfq = FakeSock(), w
    return w, fake, engine


def test_each_packet_one_verdict_in_one_send_per_batch(monkeypatch):
    w, fake, _ = worker(monkeypatch, [[(1, NF_INET_LOCAL_OUT, b"a1"), (2, NF_INET_LOCAL_IN, b"m2"),
                                       (3, NF_INET_LOCAL_IN, b"d3")], [(4, NF_INET_LOCAL_OUT, b"a4")]])
    w.read()
    assert fake.log == [("verdicts", [(1, qb.NF_ACCEPT, None), (2, qb.NF_ACCEPT, b"M2"), (3, qb.NF_DROP, None)]),
                        ("verdicts", [(4, qb.NF_ACCEPT, None)])]
    s = w.stats()
    assert (s["nfq_packets"], s["nfq_outbound"], s["nfq_modified"], s["nfq_dropped"]) == (4, 2, 1, 1)


def test_verdicts_go_out_before_an_injected_packet(monkeypatch):
    w, fake, _ = worker(monkeypatch, [[(1, NF_INET_LOCAL_IN, b"a1"), (2, NF_INET_LOCAL_IN, b"i2"),
                                       (3, NF_INET_LOCAL_IN, b"a3")]])
    w.read()
    assert fake.log == [("verdicts", [(1, qb.NF_ACCEPT, None), (2, qb.NF_ACCEPT, None)]), ("inject", b"injected"),
                        ("verdicts", [(3, qb.NF_ACCEPT, None)])]


def test_slice_ending_mid_batch_still_decides_the_whole_batch(monkeypatch):
    ticks = iter([0.0, 0.0] + [10.0] * 100)  # (init, slice start) then the slice is over from the first packet on
    w, fake, engine = worker(monkeypatch, [[(i, NF_INET_LOCAL_IN, b"a%d" % i) for i in range(5)],
                                           [(9, NF_INET_LOCAL_IN, b"a9")]], clock=lambda: next(ticks))
    w.read()
    assert [i for _, items in fake.log for i, _v, _p in items] == [0, 1, 2, 3, 4]
    assert len(engine.seen) == 5 and fake.batches  # the next batch stays in the socket for the next slice


def test_a_cut_packet_is_dropped_and_counted(monkeypatch):
    w, fake, engine = worker(monkeypatch, [[(5, NF_INET_LOCAL_OUT, None)]])
    w.read()
    assert fake.log == [("verdicts", [(5, qb.NF_DROP, None)])] and engine.seen == []
    assert w.stats()["nfq_truncated"] == 1 and w.stats()["nfq_dropped"] == 1


def test_backend_choice(monkeypatch):
    w, why = qb.make_queue_worker("netfilterqueue", Engine([]), 7, print)
    assert type(w) is QueueWorker and why == "netfilterqueue"
    monkeypatch.setattr(qb, "_nfq", object())
    w, why = qb.make_queue_worker("batched", Engine([]), 7, print)
    assert isinstance(w, qb.BatchedQueueWorker) and why.startswith("batched")
    monkeypatch.setattr(qb, "_nfq", None)
    w, why = qb.make_queue_worker("batched", Engine([]), 7, print)
    assert type(w) is QueueWorker and why.startswith("netfilterqueue (batched unavailable")
    with pytest.raises(MptcryptError):
        qb.make_queue_worker("bogus", Engine([]), 7, print)
