"""`mptcrypt daemon --workers 2` on the server of topologies/two_path.py: an MPTCP connection whose two subflows
the kernel's --queue-balance hash puts on different workers is protected on both, with 0 fallback, bytes intact;
the control socket answers for both workers; the daemon stops fail-closed and leaves no rules.

The hash (xt_NFQUEUE, over the address pair) is seeded at boot, so the test finds a client address whose pair
with the server lands on the other worker: it adds candidates to the client's second interface and sends one SYN
from each to a closed port, reading which worker's queue counter moved."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.root

PY = sys.executable
PORT = 5150  # the transfer
NBYTES = 128 << 20
PROBE_PORT = 5199  # nothing listens: each probe is a SYN answered by RST
PORTS = "5100-5199"
MARKER = "MPTCRYPT-WORKERS-MARKER-91d2"
FALLBACKS = ("MPTcpExtMPCapableFallbackACK", "MPTcpExtMPCapableFallbackSYNACK", "MPTcpExtDSSFallback",
             "MPTcpExtMPCapableDataFallback", "MPTcpExtDssFallback")
CANDIDATES = [f"10.0.2.{i}" for i in range(10, 22)]


@pytest.fixture(scope="module")
def env():
    from conftest import netns_unavailable, topology_path
    from mptcrypt.topo import Net, load_topo
    from mptcrypt.topo.daemons import spawn_in_netns, stop

    if netns_unavailable():
        pytest.skip(netns_unavailable())
    topo, *_ = load_topo(topology_path("two_path.py"))
    net = Net(topo, state_file=None, lock_timeout=900)
    net.start()
    daemons = {}
    try:
        daemons["client"] = spawn_in_netns("mptc-client", "--ports", PORTS)
        daemons["server"] = spawn_in_netns("mptc-server", "--ports", PORTS, "--workers", "2")
        yield {"net": net, "daemons": daemons}
    finally:
        codes = {h: stop(proc, remove_log=True) for h, proc in daemons.items()}
        leftover = {h: net[h].cmd("iptables-save") for h in ("client", "server")}
        net.stop()
    assert codes == {"client": 0, "server": 0}, codes
    assert all("MPTC-" not in rules for rules in leftover.values()), "a daemon left MPTC- rules"


def control(net, host, cmd: str) -> dict:
    code = f"import json; from mptcrypt.daemon.control import ControlClient; print(json.dumps(ControlClient().request({cmd!r})))"
    return json.loads(net[host].run([PY, "-c", code]).stdout)


def queue_counts(net) -> list[int]:
    return [w["edge"]["nfq_inbound"] for w in control(net, "server", "stats")["workers"]]


def worker_of(net, source: str) -> int:
    """Which server worker the address pair (source, 10.0.1.1) is queued to."""
    before = queue_counts(net)
    probe = (f"import socket; s = socket.socket(); s.bind(({source!r}, 0)); s.settimeout(3)\n"
             f"try: s.connect(('10.0.1.1', {PROBE_PORT}))\nexcept OSError: pass")
    net["client"].run([PY, "-c", probe])
    moved = [k for k, (a, b) in enumerate(zip(before, queue_counts(net))) if b > a]
    assert len(moved) == 1, (source, before, moved)
    return moved[0]


def other_worker_address(net) -> tuple[int, str]:
    """(first subflow's worker, a client address on c-eth1 whose pair with the server hashes elsewhere)."""
    client = net["client"]
    rules = client.cmd("ip", "rule", "show")
    table = next(line.split("lookup")[1].split()[0] for line in rules.splitlines() if "from 10.0.2.2 " in line)
    first = worker_of(net, "10.0.1.2")
    for addr in CANDIDATES:
        client.cmd("ip", "addr", "add", f"{addr}/24", "dev", "c-eth1")
        client.cmd("ip", "rule", "add", "from", addr, "lookup", table)
        if worker_of(net, addr) != first:
            return first, addr
    pytest.fail(f"every candidate address hashed to worker {first} (probability 2^-{len(CANDIDATES)})")


def test_subflows_on_two_workers_are_protected_and_intact(env):
    from mptcrypt.topo import mptcp_counters

    net = env["net"]
    status = control(net, "server", "status")
    assert status["workers"] and len(status["workers"]) == 2 and status["queue"] == "4242:4243", status
    first, addr = other_worker_address(net)
    net["client"].cmd("ip", "mptcp", "endpoint", "flush")
    net["client"].cmd("ip", "mptcp", "endpoint", "add", addr, "dev", "c-eth1", "subflow")
    before = control(net, "server", "stats")["workers"]
    nstat_before = {h: mptcp_counters(net[h]) for h in ("client", "server")}

    sink = net["server"].popen([PY, "-m", "mptcrypt.traffic", "sink", "--port", str(PORT), "--mptcp"],
                               stdout=subprocess.PIPE, text=True)
    assert json.loads(sink.stdout.readline())["event"] == "listening"
    # 128 MiB: long enough (~1.5 s unloaded) for the loop below to see the join encrypting before the connection
    # closes, also in a whole-suite run on a loaded machine (32 MiB ended first once there, 0.4 s)
    source = net["client"].popen([PY, "-m", "mptcrypt.traffic", "source", "--to", f"10.0.1.1:{PORT}", "--bytes",
                                  str(NBYTES), "--marker", MARKER, "--mptcp"], stdout=subprocess.PIPE, text=True)
    row, sids = None, set()
    deadline = time.time() + 20
    while time.time() < deadline and source.poll() is None:
        rows = [r for r in control(net, "server", "sessions")["sessions"]
                if r.get("mptcp") and r["local"].endswith(f":{PORT}")]
        if rows and len([s for s in rows[0]["subflows"] if s["state"] == "encrypting"]) == 2:
            row = rows[0]
            for s in row["subflows"]:  # `sid` finds each subflow's worker
                local, remote = s["local"].rsplit(":", 1), s["remote"].rsplit(":", 1)
                code = ("from mptcrypt.daemon.control import ControlClient; print(ControlClient().sid("
                        f"({local[0]!r}, {local[1]}), ({remote[0]!r}, {remote[1]})).hex())")
                sids.add(net["server"].run([PY, "-c", code]).stdout.strip())
            break
        time.sleep(0.05)
    out, _ = source.communicate(timeout=180)
    sent = json.loads(out.strip().splitlines()[-1])
    got = json.loads(sink.stdout.readline())
    sink.wait(timeout=10)

    assert sent["acked"] and got["bytes"] == NBYTES and got["sha256"] == sent["sha256"]
    assert row is not None, "the server never showed two encrypting subflows of one connection"
    # one connection row, its first subflow in one worker and the join in the other
    assert sorted((s["kind"], s["worker"]) for s in row["subflows"]) == sorted([("mptcp", first), ("join", 1 - first)])
    assert sids == {row["sid"]} and sent["sid"] == got["sid"] == row["sid"]
    after = control(net, "server", "stats")["workers"]
    delta = [{k: a["stats"][k] - b["stats"][k] for k in ("handshakes_completed", "joins_protected", "joins_zero_pk",
                                                          "segments_verified", "mac_failures", "pk_ops")}
             for a, b in zip(after, before)]
    assert delta[first]["handshakes_completed"] == 1 and delta[first]["joins_protected"] == 0, delta
    assert delta[1 - first]["joins_protected"] == 1 and delta[1 - first]["joins_zero_pk"] == 1, delta
    assert delta[1 - first]["pk_ops"] == 0 and all(d["mac_failures"] == 0 for d in delta), delta
    assert all(d["segments_verified"] > 100 for d in delta), delta  # data came in over both subflows
    assert after[1 - first]["edge"]["repl_received"] > before[1 - first]["edge"]["repl_received"]
    for h in ("client", "server"):
        now = mptcp_counters(net[h])
        for name in FALLBACKS:
            assert now.get(name, 0) == nstat_before[h].get(name, 0), f"{h}: {name} moved"


def test_stop_resets_protected_connections_of_every_worker(env):
    """SIGTERM to the parent: both workers reset their protected subflows before the rules go (fail-closed)."""
    from mptcrypt.topo.daemons import daemon_log, spawn_in_netns, stop

    net = env["net"]
    server = env["daemons"]["server"]
    sink = net["server"].popen([PY, "-m", "mptcrypt.traffic", "sink", "--port", str(PORT + 1), "--mptcp"],
                               stdout=subprocess.PIPE, text=True)
    assert json.loads(sink.stdout.readline())["event"] == "listening"
    source = net["client"].popen([PY, "-m", "mptcrypt.traffic", "source", "--to", f"10.0.1.1:{PORT + 1}",
                                  "--bytes", str(1 << 34), "--mptcp"], stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while time.time() < deadline:
        rows = [r for r in control(net, "server", "sessions")["sessions"] if r["local"].endswith(f":{PORT + 1}")]
        if rows and len([s for s in rows[0]["subflows"] if s["state"] == "encrypting"]) == 2:
            break
        time.sleep(0.2)
    assert stop(server) == 0
    log = daemon_log(server)
    # one RST pair per protected subflow, from the worker that has it (an MPTCP socket itself may linger until its
    # own timeout: the kernels have no subflow left, and the peer daemon drops anything unprotected)
    assert "reset 2 protected connection" in log, log[-2000:]
    for proc in (source, sink):
        proc.kill()
        proc.wait()
    assert "MPTC-" not in net["server"].cmd("iptables-save")
    env["daemons"]["server"] = spawn_in_netns("mptc-server", "--ports", PORTS, "--workers", "2")
