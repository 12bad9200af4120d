"""Progress lines of `mptcrypt attack` / `mptcrypt handover` when stderr is not a terminal."""

from __future__ import annotations

import io

from mptcrypt.progress import Progress, clock_text


def test_one_line_per_step_with_eta():
    now = [100.0]
    out = io.StringIO()
    bar = Progress(4, "attack", stream=out, clock=lambda: now[0])
    bar.update(0, "join_hijack vs plain")
    now[0] += 30
    bar.update(1, "add_addr vs plain")
    now[0] += 50
    bar.update(3, "rst vs mptcrypt")
    now[0] += 10
    bar.update(4, "done")
    bar.close()
    assert out.getvalue().splitlines() == [
        "attack: [0/4]   0% join_hijack vs plain  elapsed 0:00  ETA ?",
        "attack: [1/4]  25% add_addr vs plain  elapsed 0:30  ETA 1:30",
        "attack: [3/4]  75% rst vs mptcrypt  elapsed 1:20  ETA 0:27",
        "attack: [4/4] 100% done  elapsed 1:30  ETA 0:00",
    ]


def test_fractional_units_and_a_stream_that_is_not_a_terminal():
    now = [0.0]
    out = io.StringIO()  # isatty() is False: lines, never a rich bar
    with Progress(60.0, "handover walk-out-of-wifi", stream=out, clock=lambda: now[0]) as bar:
        now[0] = 12.0
        bar.update(7.5, "[mptcrypt] wifi down")
    assert out.getvalue() == ("handover walk-out-of-wifi: [7.5/60]  12% [mptcrypt] wifi down  elapsed 0:12  "
                              "ETA 1:24\n")


def test_clock_text():
    assert [clock_text(s) for s in (0, 59.4, 83.4, 3725, None)] == ["0:00", "0:59", "1:23", "1:02:05", "?"]
