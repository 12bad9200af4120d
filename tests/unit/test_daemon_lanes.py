"""The two queue lanes (daemon/lanes.py): segments before SYNs, the SYN lane's slice bounded, counters summed."""

import selectors

from mptcrypt.daemon.lanes import SYN_LANE_LEN, SYN_SHARE, SYN_SLICE, Lanes
from mptcrypt.daemon.nfqueue import EDGE_COUNTERS, MAX_QUEUE_LEN, SLICE


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class FakeLane:
    def __init__(self, name, log, stats, clock=None):
        self.name, self.log, self._stats = name, log, stats
        self.max_len = MAX_QUEUE_LEN
        self.on_events = None
        self.bound = False
        self.clock = clock or Clock()
        self.busy = 0.0  # seconds a read takes (a flood in the SYN lane)
        self.ticks = 0

    def read(self, slice_seconds=SLICE):
        self.log.append((self.name, slice_seconds))
        self.clock.now += self.busy

    def tick(self):
        self.ticks += 1

    def bind(self):
        if self.name == "syns" and self.log == ["fail"]:
            raise OSError("busy")
        self.bound = True

    def unbind(self):
        self.bound = False

    def fileno(self):
        return {"segments": 3, "syns": 4}[self.name]

    def stats(self):
        return dict(self._stats)

    def timeout(self, cap):
        return 0.25


def lanes(log, seg_stats=None, syn_stats=None):
    zero = dict.fromkeys(EDGE_COUNTERS, 0)
    clock = Clock()
    return Lanes(FakeLane("segments", log, {**zero, **(seg_stats or {})}, clock),
                 FakeLane("syns", log, {**zero, **(syn_stats or {})}, clock))


class FakeSelector:
    def __init__(self):
        self.fds = {}

    def register(self, fd, events, data):
        assert fd not in self.fds and events == selectors.EVENT_READ
        self.fds[fd] = data

    def unregister(self, fd):
        del self.fds[fd]


def test_a_flooded_syn_lane_rests_out_of_the_selector_and_takes_at_most_its_share():
    log = []
    both = lanes(log)
    sel = FakeSelector()
    both.attach(sel, "cb")
    assert sel.fds == {3: "cb", 4: "cb"}
    both.syns.busy = 1.25 * SYN_SLICE  # every SYN read runs out its slice (and overruns it by part of a batch)
    clock = both.segments.clock
    start, syn_time = clock(), 0.0
    for _ in range(400):  # the daemon's loop: read what woke it, tick, sleep at most timeout()
        before = clock()
        both.read()
        syn_time += clock() - before
        assert (4 in sel.fds) == (both._syn_resume is None)
        both.tick()
        clock.now += min(both.timeout(1.0), 0.001) if 4 not in sel.fds else 0.0
    share = syn_time / (clock() - start)
    assert 0.8 * SYN_SHARE <= share <= SYN_SHARE + 0.01  # all the time it may have, no more
    assert sum(1 for name, _ in log if name == "segments") == 400  # the segments are read on every wake-up


def test_a_quiet_syn_lane_never_rests_not_even_after_one_slow_syn():
    both = lanes([])
    sel = FakeSelector()
    both.attach(sel, "cb")
    both.syns.busy = SYN_SLICE / 2  # a SYN-ACK whose handshake work takes a millisecond: no flood
    for _ in range(10):
        both.read()
        both.tick()
    assert 4 in sel.fds and both._syn_resume is None


def test_a_wakeup_drains_segments_first_then_a_short_slice_of_syns():
    log = []
    both = lanes(log)
    both.read()
    assert log == [("segments", SLICE), ("syns", SYN_SLICE)]
    log.clear()
    both.read(0)  # shutdown drain: both until empty
    assert log == [("segments", 0), ("syns", 0)]
    assert both.syns.max_len == SYN_LANE_LEN < both.segments.max_len
    assert both.filenos() == (3, 4)


def test_the_segment_lane_answers_for_timers_and_events():
    both = lanes([])
    assert both.timeout(1.0) == 0.25  # the segment lane's, while the SYN lane does not rest
    both.on_events = print
    assert both.segments.on_events is print and both.syns.on_events is print


def test_stats_sum_both_lanes_and_name_the_syn_lanes_share():
    both = lanes([], {"nfq_inbound": 10, "nfq_packets": 12, "nfq_queue_full": 1},
                 {"nfq_inbound": 5, "nfq_packets": 5, "nfq_queue_full": 900})
    got = both.stats()
    assert got["nfq_inbound"] == 15 and got["nfq_packets"] == 17 and got["nfq_queue_full"] == 901
    assert got["nfq_syn_lane"] == 5 and got["nfq_syn_lane_full"] == 900


def test_a_syn_lane_that_cannot_bind_unbinds_the_segment_lane():
    log = ["fail"]
    both = lanes(log)
    try:
        both.bind()
    except OSError:
        pass
    else:
        raise AssertionError("bind should have failed")
    assert not both.segments.bound
