"""MPTCP on the handover topology with real round-trip times (Wi-Fi 10 ms, LTE 40 ms one way by default).

Plain MPTCP (no daemons): what the emulated RTTs change in the kernel's behaviour, which a study on microsecond
links cannot show. The default scheduler sends on the subflow with the lowest RTT that has room in its
window, so an application-limited flow rides Wi-Fi almost alone; and after Wi-Fi goes down the data stuck on it
is reinjected on LTE, so the stall grows with LTE's delay.
"""

from __future__ import annotations

import socket
import time
import tomllib

import pytest

from mptcrypt.topo.subflows import tcp_subflows

pytestmark = pytest.mark.root

PORT = 5301


def test_default_scheduler_prefers_the_low_rtt_path(make_net):
    net = make_net("handover.py", "handover,wifi_bw=20,lte_bw=20")  # same rate: only the RTT differs
    srv = net["server"].socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_MPTCP)
    srv.bind(("0.0.0.0", PORT))
    srv.listen(1)
    cli = net["mobile"].socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_MPTCP)
    cli.connect(("10.0.1.1", PORT))
    conn, _ = srv.accept()
    conn.setblocking(False)
    cli.sendall(b"x")  # data: the connection becomes fully established and the path manager opens the join
    deadline = time.monotonic() + 10
    while len(tcp_subflows(net["mobile"], PORT)) < 2:  # the LTE join
        assert time.monotonic() < deadline, "no second subflow"
        time.sleep(0.05)
    chunk = bytes(16 << 10)
    for _ in range(150):  # 16 KiB every 20 ms: 6.5 Mbit/s, a third of either link
        cli.sendall(chunk)
        try:
            while conn.recv(1 << 20):
                pass
        except BlockingIOError:
            pass
        time.sleep(0.02)
    acked = {sf["local"].split(":")[0]: sf.get("bytes_acked", 0) for sf in tcp_subflows(net["mobile"], PORT)}
    total = sum(acked.values())
    assert total >= 150 * len(chunk) * 0.9, acked  # (bytes_acked counts from the join's start on LTE)
    assert acked["10.0.1.2"] / total > 0.8, acked  # Wi-Fi (20 ms RTT) over LTE (80 ms RTT)


SCENARIO = """
name = "wifi-gone"
description = "test: Wi-Fi goes down, LTE carries on"
duration = 4.0
direction = "down"
topo = {{ wifi_bw = 20, lte_bw = 10, wifi_delay = "10ms", lte_delay = "{lte}" }}
events = [ {{ at = 1.5, action = "down", intf = "wifi" }} ]
"""


def test_wifi_to_lte_stall_grows_with_the_lte_delay(tmp_path):
    from mptcrypt.handover.runner import run_scenario
    from mptcrypt.handover.scenario import parse_scenario

    stalls = {}
    for lte in ("5ms", "80ms"):
        sc = parse_scenario(tomllib.loads(SCENARIO.format(lte=lte)), f"wifi-gone-{lte}")
        run = run_scenario(sc, ["plain"], str(tmp_path / lte), log=lambda m: None)["targets"]["plain"]
        assert run["ok"] and run["bulk"]["intact"], run.get("error")
        stalls[lte] = run["stall_s"]
    print(f"longest stall after Wi-Fi down, by LTE one-way delay: {stalls}")
    # the reinjected data needs at least one more LTE round trip (150 ms more here)
    assert stalls["80ms"] > stalls["5ms"] + 0.05, stalls
