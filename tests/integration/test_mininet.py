"""topologies/two_path.py built by real Mininet (`Mininet(topo, switch=LinuxBridge, controller=None)`), daemons on
its hosts, one protected MPTCP transfer over both subflows.

Mininet's cleanup (`mn -c`, `mininet.clean`) kills processes by name host-wide, so it is never called. What this
test runs of Mininet, read in mininet 2.3's source: `Mininet.init()` (skipped by setting `Mininet.inited`: it
would raise host-wide limits and sysctls with `fixLimits`), `Host.startShell` (a `bash` under `mnexec -cdn`: an
anonymous network namespace per host, alive as long as a process holds it), `makeIntfPair` (runs `ip link del`
and `ip link add ... netns PID` inside the hosts' own shells, never in the root namespace: the veths c-eth0/1 and
s-eth0/1 only exist inside the hosts). Teardown is ours, by PID: our processes (daemons, traffic, tcpdump), then
each host's shell (`Node.terminate`: killpg of the shell's own pid); the namespaces and their veths go with them.
The test then checks that no process it started is alive and no interface it made is left anywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.root

PY = sys.executable
DEBIAN_MININET = "/usr/lib/python3/dist-packages/mininet"
PORT = 5077
MARKER = "MPTCRYPT-MININET-MARKER-90d2"
INTFS = ("c-eth0", "c-eth1", "s-eth0", "s-eth1")


def import_mininet(tmp_path):
    """Real Mininet, or a skip with the precise reason. The venv's Python does not see Debian's dist-packages:
    only the `mininet` package is linked in (adding all of dist-packages would shadow the venv's own packages)."""
    try:
        import mininet  # noqa: F401
    except ImportError:
        if not os.path.isdir(DEBIAN_MININET):
            pytest.skip("Mininet is not installed (Debian package mininet: scripts/setup.sh installs it)")
        shim = str(tmp_path / "sys-path")
        os.mkdir(shim)
        os.symlink(DEBIAN_MININET, os.path.join(shim, "mininet"))
        sys.path.insert(0, shim)
    from mininet.net import Mininet
    from mininet.nodelib import LinuxBridge
    from mininet.topo import Topo

    for tool in ("mnexec", "ip", "ifconfig"):
        if subprocess.run(["which", tool], capture_output=True).returncode:
            pytest.skip(f"Mininet needs `{tool}` on PATH")
    return Mininet, LinuxBridge, Topo


def root_has_intfs() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return [name for name in INTFS if f" {name}:" in out or f" {name}@" in out]


def wait_ready(log_path: str, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    from mptcrypt.daemon.main import READY_MARKER

    deadline = time.monotonic() + timeout
    while READY_MARKER not in open(log_path, errors="replace").read():
        assert proc.poll() is None, open(log_path).read()
        assert time.monotonic() < deadline, "daemon not ready:\n" + open(log_path).read()
        time.sleep(0.05)


def test_protected_two_subflow_transfer_on_real_mininet(tmp_path):
    Mininet, LinuxBridge, Topo = import_mininet(tmp_path)
    from conftest import topology_path
    from mptcrypt.topo import load_topo
    from mptcrypt.topo.daemons import stop

    topo, *_ = load_topo(topology_path("two_path.py"))
    assert isinstance(topo, Topo), "two_path.py should build on Mininet's own Topo when Mininet is importable"
    assert not root_has_intfs(), "interfaces of an earlier run are still in the root namespace"
    Mininet.inited = True  # skip Mininet.init(): fixLimits() would change host-wide limits and sysctls
    net = procs = None
    procs: list[subprocess.Popen] = []
    shells: list[int] = []
    try:
        net = Mininet(topo, switch=LinuxBridge, controller=None, build=False, cleanup=False)
        net.build()
        shells = [h.pid for h in net.hosts]
        client, server = net.get("client"), net.get("server")
        # Host.configDefault gave each host's first interface an address from ipBase: the links' own win
        for link in net.links:
            for intf in (link.intf1, link.intf2):
                if "ip" in intf.params:
                    intf.setIP(intf.params["ip"])
        assert "10.0.1.2/24" in client.cmd("ip -o addr show dev c-eth0")
        # what mptcrypt.topo does from the hosts' `mptcp` options and `params1` gateways, by hand
        for h in (client, server):
            h.cmd("sysctl -qw net.mptcp.enabled=1; ip mptcp limits set subflow 2 add_addr_accepted 2")
        client.cmd("ip mptcp endpoint add 10.0.2.2 dev c-eth1 subflow")
        client.cmd("ip rule add from 10.0.2.2 table 101; ip route add default via 10.0.2.1 dev c-eth1 table 101")
        assert "1 received" in client.cmd("ping -c1 -W2 10.0.1.1") and "1 received" in client.cmd(
            "ping -c1 -W2 -I 10.0.2.2 10.0.1.1")

        logs = {}
        for h in (server, client):
            logs[h.name] = str(tmp_path / f"{h.name}.log")
            with open(logs[h.name], "wb") as out:
                procs.append(h.popen([PY, "-m", "mptcrypt", "daemon", "--ports", "5000-5099"], stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            wait_ready(logs[h.name], procs[-1])
        pids = {h.name: json.loads(h.cmd(f"{PY} -m mptcrypt status --json"))["pid"] for h in (server, client)}
        assert sorted(pids.values()) == sorted(p.pid for p in procs)  # mnexec -da execs: the Popen pid is the daemon

        pcap = str(tmp_path / "c-eth1.pcap")
        tcpdump = client.popen(["tcpdump", "-i", "c-eth1", "-U", "--immediate-mode", "-s", "0", "-w", pcap, "tcp"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        procs.append(tcpdump)
        assert "listening" in tcpdump.stderr.readline()
        nbytes = 2 << 20
        sink = server.popen([PY, "-m", "mptcrypt.traffic", "sink", "--port", str(PORT), "--mptcp"], text=True)
        procs.append(sink)
        assert json.loads(sink.stdout.readline())["event"] == "listening"
        source = client.popen([PY, "-m", "mptcrypt.traffic", "source", "--to", f"10.0.1.1:{PORT}", "--bytes",
                               str(nbytes), "--marker", MARKER, "--mptcp"], text=True)
        procs.append(source)
        out, _ = source.communicate(timeout=120)
        sent = json.loads(out.strip().splitlines()[-1])
        got = json.loads(sink.stdout.readline())
        assert got["sha256"] == sent["sha256"] and got["bytes"] == nbytes

        stats = {h.name: json.loads(h.cmd(f"{PY} -m mptcrypt stats --json"))["stats"] for h in (client, server)}
        for side in ("client", "server"):
            assert stats[side]["joins_protected"] == 1 and stats[side]["pk_ops"] == 1, stats[side]
            assert stats[side]["mac_failures"] == 0 and stats[side]["segments_verified"] > 100
        rows = json.loads(client.cmd(f"{PY} -m mptcrypt sessions --json"))["sessions"]
        (conn,) = [r for r in rows if r["remote"] == f"10.0.1.1:{PORT}"]
        assert conn["protected"] and conn["mptcp"]
        assert sorted(s["local"].split(":")[0] for s in conn["subflows"]) == ["10.0.1.2", "10.0.2.2"]
        server_rows = json.loads(server.cmd(f"{PY} -m mptcrypt sessions --json"))["sessions"]
        assert conn["sid"] in [r["sid"] for r in server_rows]  # one session ID at both ends

        stop(tcpdump)
        wire = open(pcap, "rb").read()
        assert len(wire) > 100_000, "the second subflow carried data"
        assert MARKER.encode() not in wire  # ciphertext only on path 2
    finally:
        for proc in procs:  # ours, by PID: SIGTERM, SIGKILL after 10 s
            stop(proc)
        if net is not None:
            for h in net.hosts:  # Node.terminate: killpg of this host's shell, by its pid; no name-based kill
                h.terminate()
    for pid in [p.pid for p in procs] + shells:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z", pid
    assert not root_has_intfs()
    assert all(p.returncode == 0 for p in procs[:2]), "a daemon did not stop cleanly"
