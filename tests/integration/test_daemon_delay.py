"""mptcrypt on delayed paths: two_path with 20 ms per direction on both links (40 ms RTT), then 80 ms (160 ms).

A protected MPTCP transfer arrives intact over both subflows with no fallback, `session_id()` right after
connect() gets the session ID although INIT1/INIT2 need one more round trip (issue 16 item 5), and the INIT
retransmission timer does not fire on a path whose round trip is close to its first timeout.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.root

PY = sys.executable
FALLBACKS = ("MPTcpExtMPCapableFallbackACK", "MPTcpExtMPCapableFallbackSYNACK", "MPTcpExtDSSFallback",
             "MPTcpExtMPCapableDataFallback")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from conftest import topology_path
    from mptcrypt.topo.daemons import spawn_in_netns, stop
    from mptcrypt.topo import Net, load_topo

    topo, *_ = load_topo(topology_path("two_path.py"), "two_path,delay1='20ms',delay2='20ms'")
    net = Net(topo, state_file=None, lock_timeout=900).start()
    config = tmp_path_factory.mktemp("delay") / "no-resume.toml"
    config.write_text("resume = false\n")  # every connection runs the full INIT1/INIT2 handshake
    daemons = {}
    try:
        for host in ("client", "server"):
            daemons[host] = spawn_in_netns(f"mptc-{host}", "--ports", "5000-5099", "--config", str(config))
        yield net
    finally:
        for proc in daemons.values():
            assert stop(proc, remove_log=True) == 0
        net.stop()


def stats(net, host) -> dict:
    return json.loads(net[host].run([PY, "-m", "mptcrypt", "stats", "--json"]).stdout)["stats"]


def sessions(net, host) -> list[dict]:
    return json.loads(net[host].run([PY, "-m", "mptcrypt", "sessions", "--json"]).stdout)["sessions"]


def transfer(net, port: int, nbytes: int) -> tuple[dict, dict]:
    sink = net["server"].popen([PY, "-m", "mptcrypt.traffic", "sink", "--port", str(port), "--mptcp"],
                               stdout=subprocess.PIPE, text=True)
    assert json.loads(sink.stdout.readline())["event"] == "listening"
    source = net["client"].run([PY, "-m", "mptcrypt.traffic", "source", "--to", f"10.0.1.1:{port}", "--bytes",
                                str(nbytes), "--mptcp"], timeout=180)
    sent = json.loads(source.stdout.strip().splitlines()[-1])
    got = json.loads(sink.stdout.readline())
    sink.wait(timeout=10)
    return sent, got


def test_protected_mptcp_over_two_delayed_paths(env):
    from mptcrypt.topo import mptcp_counters

    net = env
    out = net["client"].run(["ping", "-n", "-U", "-c", "3", "-i", "0.05", "10.0.1.1"]).stdout
    rtt = [float(x) for x in re.findall(r"time=([\d.]+)", out)][1:]
    assert all(38 < r < 60 for r in rtt), rtt  # 2 x 20 ms: the paths really are delayed
    before = {h: stats(net, h) for h in ("client", "server")}
    fallback_before = {h: mptcp_counters(net[h]) for h in ("client", "server")}
    sent, got = transfer(net, 5010, 16 << 20)
    assert sent["acked"] and got["bytes"] == 16 << 20 and got["sha256"] == sent["sha256"]
    assert sent["sid"] and sent["sid"] == got["sid"]  # session_id() right after connect(), 40 ms RTT
    row = [r for r in sessions(net, "client") if r["remote"] == "10.0.1.1:5010"][0]
    subflows = row["subflows"]
    assert sorted(s["kind"] for s in subflows) == ["join", "mptcp"], subflows
    assert all(s["bytes_out"] > 100_000 for s in subflows), subflows  # both paths carried data
    for h in ("client", "server"):
        after = mptcp_counters(net[h])
        assert all(after.get(k, 0) == fallback_before[h].get(k, 0) for k in FALLBACKS), (h, after)
        s = stats(net, h)
        assert s["mac_failures"] == before[h]["mac_failures"]
        print(f"{h}: init_retransmits {s['init_retransmits'] - before[h]['init_retransmits']} at 40 ms RTT")


def test_both_subflows_run_with_tcp_timestamps(env):
    """Under mptcrypt the kernels keep TCP timestamps (docs/protocol.md §3, §6): the first subflow's SYN carries
    them end to end, a join's are restored by the daemons (no room beside NEXTK1 / NEXTK2). On the wire of each
    path, data segments (client kernel) and ACKs (server kernel) carry a timestamps option beside the MAC, so both
    kernels negotiated them on both subflows, and the echoes are the peer kernel's real clock (not the 0 a
    daemon restored in the SYN)."""
    net = env
    caps = {intf: net["server"].popen(["tcpdump", "-i", intf, "-nn", "-v", "-l", "-c", "60", "tcp port 5016"],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            for intf in ("s-eth0", "s-eth1")}
    try:
        # tcpdump opens its socket before it prints anything: give it the moment the ping takes
        net["client"].run(["ping", "-n", "-c", "2", "-i", "0.2", "10.0.1.1"])
        sent, got = transfer(net, 5016, 32 << 20)
        assert got["sha256"] == sent["sha256"]
        for intf, cap in caps.items():
            out, _ = cap.communicate(timeout=30)
            # segments with a DSS: the daemon-made INIT1/INIT2 and the handshake's MP_CAPABLE / MP_JOIN segments
            # (no room for timestamps beside them, `timestamps_removed`) are not what this checks
            lines = [ln for ln in out.splitlines() if re.search(r"mptcp \d+ dss", ln)]
            to_server = [ln for ln in lines if "> 10.0.1.1.5016" in ln and "length 0" not in ln]
            to_client = [ln for ln in lines if ln.split(">")[0].strip().endswith(".5016")]
            assert to_server and to_client, (intf, out[-2000:])
            for side in (to_server, to_client):
                echoes = [re.search(r"TS val \d+ ecr (\d+)", ln) for ln in side]
                assert all(echoes), (intf, [ln for ln, e in zip(side, echoes) if not e])  # timestamps on
                # a join's first ACK echoes the 0 its SYN was restored with; from the first data on, real values
                assert int(echoes[-1].group(1)) != 0, (intf, side[-1])
    finally:
        for cap in caps.values():
            if cap.poll() is None:
                cap.kill()
                cap.wait(timeout=10)
    for h in ("client", "server"):
        assert stats(net, h)["option_overflow"] == 0


def test_init_timer_on_a_160ms_rtt_path(env):
    """80 ms per direction: INIT1 -> INIT2 takes one 160 ms round trip plus the daemons' work, close to the
    first INIT timeout (init_rto 200 ms). Count the INIT retransmissions of ten fresh connections."""
    net = env
    net.set_link("client", "server", intf="c-eth0", delay="80ms")
    net.set_link("client", "server", intf="c-eth1", delay="80ms")
    try:
        before = {h: stats(net, h)["init_retransmits"] for h in ("client", "server")}
        sids = []
        for i in range(10):
            sent, got = transfer(net, 5020 + i, 64 << 10)
            assert got["sha256"] == sent["sha256"] and sent["sid"] == got["sid"]
            sids.append(sent["sid"])
        assert all(sids)
        fired = {h: stats(net, h)["init_retransmits"] - before[h] for h in ("client", "server")}
        print(f"init_retransmits at 160 ms RTT, 10 connections: {fired}")
        assert fired == {"client": 0, "server": 0}, fired
    finally:
        net.set_link("client", "server", intf="c-eth0", delay="20ms")
        net.set_link("client", "server", intf="c-eth1", delay="20ms")
