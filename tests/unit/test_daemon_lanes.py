"""The two queue lanes (daemon/lanes.py): segments before SYNs, the SYN lane's slice bounded, counters summed."""

from mptcrypt.daemon.lanes import SYN_LANE_LEN, SYN_SLICE, Lanes
from mptcrypt.daemon.nfqueue import EDGE_COUNTERS, MAX_QUEUE_LEN, SLICE


class FakeLane:
    def __init__(self, name, log, stats):
        self.name, self.log, self._stats = name, log, stats
        self.max_len = MAX_QUEUE_LEN
        self.on_events = None
        self.bound = False

    def read(self, slice_seconds=SLICE):
        self.log.append((self.name, slice_seconds))

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
    return Lanes(FakeLane("segments", log, {**zero, **(seg_stats or {})}),
                 FakeLane("syns", log, {**zero, **(syn_stats or {})}))


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
    assert both.timeout(1.0) == 0.25  # delegated to the segment lane
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
