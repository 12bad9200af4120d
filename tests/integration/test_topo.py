"""The topology engine: plans (no root), then real networks in namespaces (root)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mptcrypt.errors import ConfigError, KernelFeatureError
from mptcrypt.topo import Topo, demo_two_subflows, load_topo, plan_topology, split_topo_spec
from mptcrypt.topo import netns as topo_netns
from mptcrypt.topo.spec import LOSS_CHAIN, loss_rules, loss_script, policy_tables

REPO = Path(__file__).resolve().parents[2]
TOPOLOGIES = REPO / "topologies"
TOPOLOGY_FILES = ["two_path.py", "handover.py", "hijack.py"]
SYSTEM_PYTHON = "/usr/bin/python3"

root = pytest.mark.root


def _pair(loss_client_to_server: float = 0, **link: object) -> Topo:
    """client 10.9.1.2 <-> server 10.9.1.1, one link."""

    class Pair(Topo):
        def build(self) -> None:
            self.addHost("client")
            self.addHost("server")
            self.addLink("client", "server", intfName1="c-eth0", intfName2="s-eth0",
                         params1={"ip": "10.9.1.2/24", "loss": loss_client_to_server},
                         params2={"ip": "10.9.1.1/24"}, **link)

    return Pair()


def _ping_loss(node, dst: str, count: int, interval: float = 0.01, src: str | None = None) -> float:
    argv = ["ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "1"]
    if src:
        argv += ["-I", src]
    out = node.run(argv + [dst], check=False, timeout=count * interval + 10).stdout
    m = re.search(r"([\d.]+)% packet loss", out)
    assert m, out
    return float(m.group(1))


# --- plans: no root needed ------------------------------------------------------------------------


def test_topo_has_mininets_api():
    topo, name, _, _ = load_topo(str(TOPOLOGIES / "hijack.py"))
    assert name == "hijack"
    assert topo.hosts() == ["attacker", "client", "server"]
    assert topo.switches() == ["hub"]
    links = topo.links(withInfo=True)
    assert len(links) == 4
    n1, n2, info = links[0]
    assert (n1, n2, info["port1"], info["port2"], info["intfName1"]) == ("client", "hub", 0, 1, "c-eth0")
    assert topo.nodeInfo("hub")["hub"] is True
    assert topo.linkInfo("client", "server")["intfName1"] == "c-eth1"


def test_two_path_plan_routes_each_source_by_its_own_link():
    plan = plan_topology(load_topo(str(TOPOLOGIES / "two_path.py"))[0])
    client = plan.node("client")
    assert [(i.name, str(i.addr)) for i in client.intfs] == [("c-eth0", "10.0.1.2/24"), ("c-eth1", "10.0.2.2/24")]
    tables = {str(t.src): (t.table, t.dev, str(t.gw)) for t in policy_tables(client)}
    assert tables == {"10.0.1.2": (100, "c-eth0", "10.0.1.1"), "10.0.2.2": (101, "c-eth1", "10.0.2.1")}
    ep = client.mptcp.endpoints[0]
    assert (ep.addr, ep.dev, ep.flags) == ("10.0.2.2", "c-eth1", 2)
    assert client.mptcp.limits == {"subflows": 2, "add_addr_accepted": 2}
    assert plan.node("server").mptcp.endpoints == []


def test_loss_goes_to_the_receivers_ingress_or_the_senders_egress_into_a_switch():
    class T(Topo):
        def build(self):
            self.addHost("a")
            self.addHost("b")
            self.addSwitch("s1")
            self.addLink("a", "b", params1={"ip": "10.1.0.1/24", "loss": 10}, params2={"ip": "10.1.0.2/24"})
            self.addLink("a", "s1", params1={"ip": "10.2.0.1/24"}, loss=20)

    rules = loss_rules(plan_topology(T()))
    assert [(r.intf, r.probability, r.table) for r in rules["b"]] == [("b-eth0", 0.1, "raw")]
    # link-level loss is for both directions: s1 -> a on a's ingress, a -> s1 on a's egress
    assert sorted((r.intf, r.probability, r.table) for r in rules["a"]) == [("a-eth1", 0.2, "mangle"),
                                                                            ("a-eth1", 0.2, "raw")]
    script = loss_script(rules["b"])
    assert f"iptables -t raw -A {LOSS_CHAIN} -i b-eth0 -m statistic --mode random --probability 0.100000 -j DROP" in script


@pytest.mark.parametrize(
    "link, message",
    [
        ({"params1": {"ip": "10.0.0.1"}}, "prefix length"),
        ({"params1": {"ip": "10.0.0.1/24", "gw": "10.9.9.9"}}, "not in"),
        ({"loss": 150}, "between 0 and 100"),
        ({"bw": "fast"}, "expected a number"),
        ({"delay": "soon"}, "expected a time"),
        ({"colour": "red"}, "unsupported option"),
        ({"enable_red": True}, "not supported"),
        ({"intfName1": "a-very-long-interface"}, "interface name"),
    ],
)
def test_bad_topologies_are_config_errors(link, message):
    class T(Topo):
        def build(self):
            self.addHost("a")
            self.addHost("b")
            self.addLink("a", "b", **link)

    with pytest.raises(ConfigError, match=message):
        plan_topology(T())


def test_bad_mptcp_settings_are_config_errors():
    class T(Topo):
        def build(self, ep):
            self.addHost("a", mptcp={"endpoints": [ep]})
            self.addHost("b")
            self.addLink("a", "b", params1={"ip": "10.0.0.1/24"})

    with pytest.raises(ConfigError, match="not an address of a"):
        plan_topology(T({"addr": "10.0.0.9", "flags": ["subflow"]}))
    with pytest.raises(ConfigError, match="unknown endpoint flag"):
        plan_topology(T({"addr": "10.0.0.1", "flags": ["sideways"]}))
    assert plan_topology(T({"addr": "10.0.0.1", "flags": "subflow,backup"})).node("a").mptcp.endpoints[0].flags == 6


def test_loading_errors_name_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_topo(str(tmp_path / "nope.py"))
    with pytest.raises(ConfigError, match="available: two_path"):
        load_topo(str(TOPOLOGIES / "two_path.py"), "three_path")
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="topos"):
        load_topo(str(tmp_path / "empty.py"))
    assert split_topo_spec("handover,30,lte_bw=10") == ("handover", [30], {"lte_bw": 10})
    topo, _, args, kwargs = load_topo(str(TOPOLOGIES / "handover.py"), "handover,30,lte_bw=10")
    shaping = {i.name: i.shaping.bw for i in plan_topology(topo).node("mobile").intfs}
    assert shaping == {"wifi": 30, "lte": 10}


MININET_SCRIPT = r"""
import importlib.util, json, sys
sys.path.insert(0, sys.argv[1])
import mininet.topo
from mptcrypt.topo.spec import plan_topology
out = {}
for path in sys.argv[2:]:
    spec = importlib.util.spec_from_file_location("custom", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.Topo is mininet.topo.Topo, module.Topo
    for name, cls in module.topos.items():
        topo = cls()
        assert isinstance(topo, mininet.topo.Topo)
        plan = plan_topology(topo)
        out[name] = sorted((n.name, i.name, str(i.addr)) for n in plan.nodes.values() for i in n.intfs)
print(json.dumps(out))
"""


def test_topology_files_build_with_mininets_topo():
    """`mn --custom` loading, as a library only: never run `mn`."""
    if subprocess.run([SYSTEM_PYTHON, "-c", "import mininet.topo"], capture_output=True).returncode != 0:
        pytest.skip("Debian's mininet package is not installed for /usr/bin/python3")
    files = [str(TOPOLOGIES / f) for f in TOPOLOGY_FILES]
    proc = subprocess.run([SYSTEM_PYTHON, "-c", MININET_SCRIPT, str(REPO), *files], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    with_mininet = json.loads(proc.stdout)
    for f in TOPOLOGY_FILES:
        topo, name, _, _ = load_topo(str(TOPOLOGIES / f))
        plan = plan_topology(topo)
        ours = sorted([n.name, i.name, str(i.addr)] for n in plan.nodes.values() for i in n.intfs)
        assert with_mininet[name] == ours


# --- real networks: root ------------------------------------------------------------------------------


def _ns_ids(names) -> dict[str, tuple[int, int]]:
    """Identity (nsfs dev, inode) of the named namespaces that exist now."""
    ids = {}
    for name in names:
        try:
            st = os.stat(topo_netns.ns_path(name))
        except FileNotFoundError:
            continue
        ids[name] = (st.st_dev, st.st_ino)
    return ids


def _all_gone(ids: dict[str, tuple[int, int]]) -> bool:
    """None of these namespaces exists any more. Another test run may have made new ones with the same
    names as soon as the lock was let go: those are other namespaces (other inodes)."""
    now = _ns_ids(ids)
    return not [n for n, ident in ids.items() if now.get(n) == ident]


def _not_my_record(pid: int) -> bool:
    from mptcrypt.topo.state import read_state

    state = read_state()
    return state is None or state.get("pid") != pid


def _root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


@root
@pytest.mark.parametrize("topology", TOPOLOGY_FILES)
def test_build_and_teardown_leave_no_trace(topology):
    from mptcrypt.topo import Net
    from mptcrypt.topo.state import STATE_FILE

    links_before = _root_links()
    topo, *_ = load_topo(str(TOPOLOGIES / topology))
    net = Net(topo)
    with net:
        ids = _ns_ids(net.namespaces)
        assert sorted(ids) == sorted(net.namespaces)
        for host in net.hosts:
            names = set(re.findall(r"^\d+: (\S+?)[:@]", host.cmd("ip -o link show"), re.M))
            assert names == {"lo", *host.intfNames()}
        for switch in net.switches:
            assert f"master {switch.plan.bridge}" in switch.cmd("ip -o link show", switch.intfNames()[0])
        assert json.load(open(STATE_FILE))["namespaces"] == net.namespaces
        assert _root_links() == links_before  # nothing in the root namespace
    assert _all_gone(ids)
    assert _not_my_record(os.getpid())
    assert _root_links() == links_before


@root
def test_a_failed_build_removes_what_it_made():
    from mptcrypt.topo import Net

    # a multicast MAC: the plan takes it, the kernel refuses it half-way through the build (after the delay line)
    net = Net(_pair(delay="10ms", addr2="01:00:5e:00:00:01"))
    with pytest.raises(KernelFeatureError, match="setting MAC"):
        net.start()
    assert not [ns for ns in net.namespaces if topo_netns.exists(ns)]


@root
def test_addresses_and_per_path_routing(two_path_net):
    client, server = two_path_net["client"], two_path_net["server"]
    assert client.IP("c-eth0") == "10.0.1.2" and server.IP("s-eth1") == "10.0.2.1"
    addrs = client.cmd("ip -o -4 addr show")
    assert re.search(r"c-eth0\s+inet 10\.0\.1\.2/24", addrs) and re.search(r"c-eth1\s+inet 10\.0\.2\.2/24", addrs)
    # each source address leaves by its own link, whatever the destination
    for src, dev in (("10.0.1.2", "c-eth0"), ("10.0.2.2", "c-eth1")):
        for dst in ("10.0.1.1", "10.0.2.1"):
            route = client.run(["ip", "route", "get", dst, "from", src]).stdout
            assert f"dev {dev}" in route, route
    # the server answers a subflow on the link it came in by (destination routing)
    assert "dev s-eth1" in server.run(["ip", "route", "get", "10.0.2.2", "from", "10.0.1.1"]).stdout
    assert _ping_loss(client, "10.0.1.1", 3, 0.05, src="10.0.2.2") == 0
    assert server.cmd("cat /proc/sys/net/mptcp/enabled").strip() == "1"
    assert "10.0.2.2 id 1 subflow dev c-eth1" in client.cmd("ip mptcp endpoint show")
    assert "subflows 2" in server.cmd("ip mptcp limits show")


@root
def test_two_path_gets_two_established_subflows(two_path_net):
    result = demo_two_subflows(two_path_net, nbytes=1 << 20)
    assert result["errors"] == []
    assert result["subflow_count"] == 2, result["subflows"]
    assert {(s["local"].split(":")[0], s["remote"]) for s in result["subflows"]} == {
        ("10.0.1.2", "10.0.1.1:5201"), ("10.0.2.2", "10.0.1.1:5201")}
    assert [s["dev"] for s in result["subflows"] if s["local"].startswith("10.0.2.2")] == ["c-eth1"]
    assert len(result["server_subflows"]) == 2
    assert result["counters"]["client"].get("MPTcpExtMPJoinSynAckRx", 0) >= 1
    assert result["counters"]["server"].get("MPTcpExtMPJoinAckRx", 0) >= 1
    assert result["bytes_received"] == result["bytes_sent"] == result["server_ack"]
    assert result["intf_tx_bytes"].get("c-eth1", 0) > 0  # the join went out by path 2


@root
def test_link_down_and_up_change_reachability(two_path_net):
    net = two_path_net
    client = net["client"]
    assert _ping_loss(client, "10.0.1.1", 2, 0.05) == 0
    net.link_down("client", "server", intf="c-eth0")
    assert "state DOWN" in client.cmd("ip -o link show c-eth0")
    assert _ping_loss(client, "10.0.1.1", 2, 0.05, src="10.0.1.2") == 100
    assert _ping_loss(client, "10.0.2.1", 2, 0.05) == 0  # path 2 untouched
    net.link_up("client", "server", intf="c-eth0")
    assert "dev c-eth0" in client.run(["ip", "route", "get", "10.0.2.1", "from", "10.0.1.2"]).stdout
    deadline = time.monotonic() + 3
    while _ping_loss(client, "10.0.1.1", 1, 0.05, src="10.0.1.2") and time.monotonic() < deadline:
        pass
    assert _ping_loss(client, "10.0.1.1", 2, 0.05, src="10.0.1.2") == 0
    with pytest.raises(ConfigError, match="no link"):
        net.link_down("client", "server", intf="nope")


@root
def test_loss_is_applied_and_changed_at_run_time(make_net):
    net = make_net(_pair(loss_client_to_server=50))
    client, server = net["client"], net["server"]
    loss = _ping_loss(client, "10.9.1.1", 100)
    assert 30 <= loss <= 70, loss
    counters = server.run(["iptables", "-t", "raw", "-L", LOSS_CHAIN, "-v", "-n", "-x"]).stdout
    dropped = int(re.search(r"^\s*(\d+)\s+\d+\s+DROP", counters, re.M).group(1))
    assert 30 <= dropped <= 70, counters
    net.set_intf("client", "c-eth0", loss=0)
    assert _ping_loss(client, "10.9.1.1", 20) == 0
    net.set_link("client", "server", loss=100)  # both directions
    assert _ping_loss(client, "10.9.1.1", 5) == 100
    assert "DROP" in client.cmd(f"iptables -t raw -S {LOSS_CHAIN}")


@root
def test_bandwidth_is_shaped(make_net):
    net = make_net(_pair(bw=20))
    assert "rate 20Mbit" in net["client"].cmd("tc qdisc show dev c-eth0")
    rate = _tcp_rate_mbit(net, nbytes=2_000_000)
    assert 12 <= rate <= 24, rate
    net.set_link("client", "server", bw=None)
    assert "tbf" not in net["client"].cmd("tc qdisc show dev c-eth0")
    net.set_link("client", "server", bw=5, use_htb=True)
    assert "rate 5Mbit" in net["client"].cmd("tc class show dev c-eth0")


def _tcp_rate_mbit(net, nbytes: int) -> float:
    """Plain TCP client -> server through the link; the server reads in a thread."""
    listener = net["server"].socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("10.9.1.1", 5202))
    listener.listen(1)
    listener.settimeout(10)
    got = [0, 0.0]

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            while chunk := conn.recv(1 << 16):
                got[0] += len(chunk)
            got[1] = time.monotonic()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = net["client"].socket(socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(10)
    client.connect(("10.9.1.1", 5202))
    start = time.monotonic()
    client.sendall(b"\0" * nbytes)
    client.close()
    thread.join(15)
    listener.close()
    assert got[0] == nbytes
    return got[0] * 8 / (got[1] - start) / 1e6


@root
def test_hijack_attacker_sees_path_one_only(make_net):
    net = make_net("hijack.py")
    sniffer = net["attacker"].socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    sniffer.bind(("a-eth0", 0))
    sniffer.settimeout(0.2)
    client = net["client"]
    assert _ping_loss(client, "10.0.1.1", 3, 0.05) == 0
    assert _ping_loss(client, "10.0.2.1", 3, 0.05) == 0
    seen = set()
    try:
        while True:
            frame = sniffer.recv(2048)
            src, dst = socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34])
            if frame[23] == 1:  # ICMP
                seen.add((src, dst))
    except socket.timeout:
        pass
    assert ("10.0.1.2", "10.0.1.1") in seen and ("10.0.1.1", "10.0.1.2") in seen
    assert not any("10.0.2." in a for pair in seen for a in pair)


@root
def test_set_addr_moves_the_address_routes_and_endpoint(make_net):
    net = make_net("handover.py")
    mobile = net["mobile"]
    before = {e["addr"]: e for e in net.mptcp_endpoints("mobile")}
    net.set_addr("mobile", "wifi", "10.0.1.77/24")
    after = {e["addr"]: e for e in net.mptcp_endpoints("mobile")}
    assert set(after) == {"10.0.1.77", "10.0.2.2"}
    assert after["10.0.1.77"]["id"] == before["10.0.1.2"]["id"] and after["10.0.1.77"]["flags"] == 2
    assert "10.0.1.2/" not in mobile.cmd("ip -o -4 addr show wifi")
    assert "dev wifi" in mobile.run(["ip", "route", "get", "10.0.2.1", "from", "10.0.1.77"]).stdout
    assert "dev lte" in mobile.run(["ip", "route", "get", "10.0.1.1", "from", "10.0.2.2"]).stdout
    assert _ping_loss(mobile, "10.0.1.1", 2, 0.05, src="10.0.1.77") == 0
    assert "rate 50Mbit" in mobile.cmd("tc qdisc show dev wifi") and "rate 20Mbit" in mobile.cmd("tc qdisc show dev lte")


CHILD = r"""
import os, signal, sys, time
sys.path.insert(0, {repo!r})
from mptcrypt.topo import Net, load_topo
topo, *_ = load_topo({path!r})
if sys.argv[1] == "interrupt":
    with Net(topo, lock_timeout=120):
        print("up", flush=True)
        time.sleep(30)
else:
    Net(topo, lock_timeout=120).start()
    print("up", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


@root
def test_ctrl_c_and_a_crash_leave_nothing_behind(make_net):
    script = CHILD.format(repo=str(REPO), path=str(TOPOLOGIES / "two_path.py"))
    child = subprocess.Popen([sys.executable, "-c", script, "interrupt"], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "up"
    ids = _ns_ids(["mptc-client", "mptc-server"])
    assert len(ids) == 2
    child.send_signal(signal.SIGINT)  # Ctrl-C: KeyboardInterrupt unwinds through Net.__exit__
    child.wait(timeout=60)  # 20 s ran out twice late in fresh-clone runs of the whole suite (a loaded machine)
    assert _all_gone(ids)
    assert _not_my_record(child.pid)

    crash = subprocess.run([sys.executable, "-c", script, "kill"], capture_output=True, text=True, timeout=150)
    assert crash.returncode == -signal.SIGKILL and crash.stdout.strip() == "up"
    ids = _ns_ids(["mptc-client", "mptc-server"])  # left behind, with their record
    net = make_net("two_path.py")  # finds the dead owner's record and removes its namespaces first
    assert _all_gone(ids)
    assert _ping_loss(net["client"], "10.0.1.1", 1, 0.05) == 0


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mptcrypt", "topo", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=150)


@root
def test_cli_up_exec_down():
    up = _cli("up", "topologies/two_path.py", "--wait", "120")  # other test runs may hold the lock
    try:
        assert up.returncode == 0, up.stderr
        assert "10.0.2.2/24" in up.stdout
        ids = _ns_ids(["mptc-client", "mptc-server"])
        again = _cli("up", "topologies/two_path.py", "--wait", "0")
        assert again.returncode == 75 and ("already up" in again.stderr or "another" in again.stderr)
        ping = _cli("exec", "client", "--", "ping", "-c1", "-W1", "10.0.1.1")
        assert ping.returncode == 0 and "1 received" in ping.stdout
        missing = _cli("exec", "nobody", "--", "true")
        assert missing.returncode == 2 and "hosts: client, server" in missing.stderr
        assert "two_path" in _cli("status").stdout
    finally:
        down = _cli("down", "--wait", "120")
    assert down.returncode == 0 and "mptc-client" in down.stdout, down.stderr
    assert len(ids) == 2 and _all_gone(ids)
    unknown = _cli("up", "topologies/two_path.py", "--topo", "nine_path")
    assert unknown.returncode == 2 and "available: two_path" in unknown.stderr
    nofile = _cli("up", "topologies/nope.py")
    assert nofile.returncode == 2 and "not found" in nofile.stderr


@root
def test_clean_removes_prefixed_namespaces_and_their_processes():
    prefix = f"mptc-tclean{os.getpid()}-"  # only this test's own namespaces
    name = prefix + "a"
    topo_netns.create(name)
    sleeper = subprocess.Popen(topo_netns.exec_argv(name, ["sleep", "30"]))
    try:
        deadline = time.monotonic() + 2
        while sleeper.pid not in topo_netns.pids(name) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sleeper.pid in topo_netns.pids(name)
        assert topo_netns.clean(prefix) == [name]
        assert sleeper.wait(timeout=3) != 0
        assert not topo_netns.exists(name)
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
        topo_netns.delete(name)
    with pytest.raises(ConfigError):
        topo_netns.delete("not-ours")
