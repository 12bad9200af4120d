"""The delay line's schedule (sans-IO) and the plan's delay options. No root needed."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mptcrypt.errors import ConfigError
from mptcrypt.topo import Topo, plan_topology
from mptcrypt.topo.delayline import DelaySchedule, LineParams


def schedule(**params) -> DelaySchedule:
    return DelaySchedule(params=LineParams(**params), rng=random.Random(7))


def test_fixed_delay():
    s = schedule(delay_us=20_000)
    assert s.admit(1.0, 100) == [pytest.approx(1.02)]
    assert s.held == 1 and s.held_bytes == 100
    s.release(100)
    assert s.held == 0 and s.held_bytes == 0


@settings(max_examples=50)
@given(st.lists(st.floats(0, 0.01), min_size=2, max_size=200), st.integers(0, 30_000))
def test_jitter_never_reorders(gaps, jitter_us):
    s = schedule(delay_us=20_000, jitter_us=jitter_us)
    now, out = 0.0, []
    for gap in gaps:
        now += gap
        (t,) = s.admit(now, 1500)
        assert t >= now + (20_000 - jitter_us) / 1e6 - 1e-9
        out.append(t)
    assert out == sorted(out)


def test_jitter_spreads_within_bounds():
    s = schedule(delay_us=20_000, jitter_us=5_000)
    delays = []
    for i in range(2000):
        now = i * 0.1  # far apart: FIFO order never holds a frame back
        delays.append(s.admit(now, 60)[0] - now)
    assert 0.015 <= min(delays) < 0.0155 and 0.0245 < max(delays) <= 0.025


def test_reorder_sends_some_at_once_and_duplicate_sends_twice():
    s = schedule(delay_us=10_000, reorder=25)
    times = [s.admit(1.0, 60) for _ in range(4000)]
    now_sent = sum(1 for (t,) in times if t == 1.0)
    assert 800 < now_sent < 1200 and s.counters["reordered"] == now_sent and s.held == 4000 - now_sent
    s = schedule(delay_us=10_000, duplicate=10)
    copies = [len(s.admit(1.0, 60)) for _ in range(4000)]
    assert set(copies) == {1, 2} and 300 < copies.count(2) < 500 and s.counters["duplicated"] == copies.count(2)


def test_limit_drops_at_the_tail():
    s = schedule(delay_us=10_000, limit=3)
    assert [len(s.admit(1.0, 60)) for _ in range(5)] == [1, 1, 1, 0, 0]
    assert s.counters["dropped"] == 2


def test_bad_line_params():
    with pytest.raises(ValueError, match="unknown"):
        LineParams.from_dict({"delay": 5})
    with pytest.raises(ValueError, match="bad"):
        LineParams.from_dict({"reorder": 150})
    assert LineParams.from_dict({"dir": "ab", "delay_us": 5}).delay_us == 5


def _topo(**link) -> Topo:
    class T(Topo):
        def build(self):
            self.addHost("a")
            self.addHost("b")
            self.addLink("a", "b", intfName1="a0", intfName2="b0", **link)

    return T()


def test_plan_delay_options_per_direction():
    plan = plan_topology(_topo(delay="20ms", jitter="5ms", params2={"delay": "40ms", "reorder": 10, "duplicate": 1}))
    a, b = plan.node("a").intf("a0").shaping, plan.node("b").intf("b0").shaping
    assert (a.delay_us, a.jitter_us, a.reorder, a.duplicate) == (20_000, 5_000, 0, 0)
    assert (b.delay_us, b.jitter_us, b.reorder, b.duplicate) == (40_000, 5_000, 10, 1)
    assert plan.links[0].delayed and plan.namespaces() == ["mptc-a", "mptc-b", "mptc-link-a-a0"]


def test_plan_zero_delay_still_gets_a_line_and_no_delay_none():
    assert plan_topology(_topo(delay=0)).links[0].delayed
    assert not plan_topology(_topo(bw=10)).links[0].delayed
    assert plan_topology(_topo()).namespaces() == ["mptc-a", "mptc-b"]


@pytest.mark.parametrize("link, message", [
    ({"reorder": 10}, "needs a delay"),
    ({"delay": "1ms", "duplicate": 101}, "between 0 and 100"),
    ({"jitter": "-1ms"}, "expected a time"),
])
def test_bad_delay_options(link, message):
    with pytest.raises(ConfigError, match=message):
        plan_topology(_topo(**link))
