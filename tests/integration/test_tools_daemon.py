"""Operator tools against real daemons on topologies/two_path.py: systemd notification, the live monitor and
the Prometheus endpoint. One network and one daemon pair for the module; tests run in file order."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile

import pytest

pytestmark = pytest.mark.root

PY = sys.executable
PORT = 5040
MARKER = "MPTCRYPT-TOOLS-MARKER-51c9"
METRICS = "127.0.0.1:9464"


@pytest.fixture(scope="module")
def env():
    from conftest import netns_unavailable, topology_path
    from mptcrypt.daemon.main import spawn_in_netns, stop
    from mptcrypt.topo import Net, load_topo

    if netns_unavailable():
        pytest.skip(netns_unavailable())
    tmp = tempfile.mkdtemp(prefix="mptcrypt-tools-")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(os.path.join(tmp, "notify"))  # a path: `ip netns exec` keeps the file system, not abstract names
    notify.settimeout(10)
    topo, *_ = load_topo(topology_path("two_path.py"))
    net = Net(topo, state_file=None, lock_timeout=900)
    net.start()
    daemons = {}
    try:
        daemons["server"] = spawn_in_netns("mptc-server", "--ports", "5000-5099", "--metrics", METRICS,
                                           env={"NOTIFY_SOCKET": os.path.join(tmp, "notify")})
        daemons["client"] = spawn_in_netns("mptc-client", "--ports", "5000-5099")
        yield {"net": net, "daemons": daemons, "notify": notify, "tmp": tmp, "stop": stop}
    finally:
        for proc in daemons.values():
            stop(proc, remove_log=True)
        net.stop()
        notify.close()
        subprocess.run(["rm", "-rf", tmp], check=False)


def notifications(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def transfer(net, port: int, nbytes: int) -> tuple[dict, dict]:
    """One MPTCP connection client -> server:port carrying nbytes with MARKER in them; both reports."""
    sink = net["server"].popen([PY, "-m", "mptcrypt.traffic", "sink", "--port", str(port), "--mptcp"],
                               stdout=subprocess.PIPE, text=True)
    assert json.loads(sink.stdout.readline())["event"] == "listening"
    source = net["client"].popen([PY, "-m", "mptcrypt.traffic", "source", "--to", f"10.0.1.1:{port}", "--bytes",
                                  str(nbytes), "--marker", MARKER, "--mptcp"], stdout=subprocess.PIPE, text=True)
    out, _ = source.communicate(timeout=120)
    got = json.loads(sink.stdout.readline())
    sink.wait(timeout=10)
    return json.loads(out.strip().splitlines()[-1]), got


def test_ready_notification_after_the_rules(env):
    msg = notifications(env["notify"])
    assert msg["READY"] == "1"
    assert "ports 5000-5099" in msg["STATUS"]
    rules = env["net"]["server"].cmd("iptables-save")
    assert "MPTC-IN" in rules  # READY came after the rules were in place (the daemon was ready before we got here)


def test_monitor_shows_the_protected_connection_and_its_join(env):
    net = env["net"]
    monitor = net["client"].popen([PY, "-m", "mptcrypt", "monitor", "--json", "--count", "2"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "monitoring" in monitor.stderr.readline()  # subscribed: no event of the transfer can be missed
    sent, got = transfer(net, PORT, 256 * 1024)
    assert got["sha256"] == sent["sha256"]
    out, _ = monitor.communicate(timeout=30)
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["event"] for r in records] == ["protected", "join-protected"]
    first, join = records
    assert first["flow"].startswith("10.0.1.2:") and first["flow"].endswith(f"> 10.0.1.1:{PORT}")
    assert join["flow"].startswith("10.0.2.2:") and join["flow"].endswith(f"> 10.0.1.1:{PORT}")
    assert first["detail"].startswith("new index 0 sid ") and join["detail"].startswith("join index 1 sid ")
    assert first["detail"].split()[-1] == join["detail"].split()[-1]  # one session
    env["sid_prefix"] = first["detail"].split()[-1]


def test_metrics_scrape_and_stats_prometheus_agree(env):
    from prometheus_client.parser import text_string_to_metric_families

    def parse(text):
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    server = env["net"]["server"]
    scrape = server.run([PY, "-c", f"import urllib.request,sys; sys.stdout.write(urllib.request.urlopen("
                                   f"'http://{METRICS}/metrics', timeout=5).read().decode())"])
    assert scrape.returncode == 0, scrape.stderr
    once = server.run([PY, "-m", "mptcrypt", "stats", "--prometheus"])
    assert once.returncode == 0, once.stderr
    stats = json.loads(server.run([PY, "-m", "mptcrypt", "stats", "--json"]).stdout)
    for text in (scrape.stdout, once.stdout):
        m = parse(text)
        assert m[("mptcrypt_pk_ops_total", ())] == 1  # one public-key handshake, none for the join
        assert m[("mptcrypt_joins_protected_total", ())] == 1
        assert m[("mptcrypt_joins_refused_total", ())] == 0
        assert m[("mptcrypt_mac_failures_total", ())] == 0
        assert m[("mptcrypt_segments_verified_total", ())] >= 256 * 1024 // 1448
        assert m[("mptcrypt_segments_verified_total", ())] <= stats["segments_verified"]
        assert m[("mptcrypt_packet_seconds_count", ())] > 0
        assert m[("mptcrypt_packet_seconds_bucket", (("le", "+Inf"),))] == m[("mptcrypt_packet_seconds_count", ())]
        assert m[("mptcrypt_queue_drops_total", (("reason", "queue_full"),))] == 0
        assert sum(v for (n, _), v in m.items() if n == "mptcrypt_connections_by_state") >= 1


def test_stopping_notification(env):
    proc = env["daemons"].pop("server")
    assert env["stop"](proc, remove_log=True) == 0
    assert notifications(env["notify"]) == {"STOPPING": "1"}
