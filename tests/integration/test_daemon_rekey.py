"""REKEY under loss on real kernels (docs/protocol.md §4): both daemons with `rekey_interval` at its 1 ms minimum,
5% loss on each host's ingress, and a request/response exchange with 5 ms pauses, so that nearly every segment
starts a new key generation and first segments of generations get lost. Before the rule that a sender moves on
only after the peer acked bytes of its current generation, the sender ran two generations ahead of the receiver
after such a loss and the connection stalled within a few exchanges (MAC failures on both daemons)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.root

PY = sys.executable
EXCHANGES = 150
SERVER = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.0.1.1", 5020))
s.listen()
print("listening", flush=True)
c, _ = s.accept()
while data := c.recv(100):
    c.sendall(data)
"""
CLIENT = f"""
import socket, time
c = socket.create_connection(("10.0.1.1", 5020), timeout=20)
for i in range({EXCHANGES}):
    c.sendall(bytes([i % 256]) * 100)
    got = b""
    while len(got) < 100:
        got += c.recv(100 - len(got))
    assert got == bytes([i % 256]) * 100
    time.sleep(0.005)
print("done", flush=True)
"""


@pytest.fixture
def net(tmp_path):
    from conftest import netns_unavailable, topology_path
    from mptcrypt.topo import Net, load_topo
    from mptcrypt.topo.daemons import spawn_in_netns, stop

    if netns_unavailable():
        pytest.skip(netns_unavailable())
    config = tmp_path / "rekey.toml"
    config.write_text("rekey_interval = 0.001\n")
    topo, *_ = load_topo(topology_path("two_path.py"))
    net = Net(topo, state_file=None, lock_timeout=900)
    net.start()
    daemons = []
    try:
        for host in ("client", "server"):
            daemons.append(spawn_in_netns(f"mptc-{host}", "--ports", "5000-5099", "--config", str(config)))
        yield net
    finally:
        for proc in daemons:
            assert stop(proc, remove_log=True) == 0, "the daemon did not stop cleanly"
        net.stop()  # (the loss rules go with the namespaces)


def stats(net, host) -> dict:
    return json.loads(net[host].run([PY, "-m", "mptcrypt", "stats", "--json"]).stdout)["stats"]


def test_a_request_response_stream_survives_loss_with_a_rekey_on_nearly_every_segment(net):
    for host, intf in (("server", "s-eth0"), ("client", "c-eth0")):
        net[host].run(f"iptables -t raw -A PREROUTING -i {intf} -p tcp -m statistic --mode random "
                      "--probability 0.05 -j DROP")
    server = net["server"].popen([PY, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "listening"
        client = net["client"].popen([PY, "-c", CLIENT], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out, _ = client.communicate(timeout=120)
    finally:
        server.kill()
        server.communicate()
    assert client.returncode == 0 and out.strip().endswith("done"), out[-2000:]
    for host in ("client", "server"):
        st = stats(net, host)
        # no reordering on these links: every segment that arrives is of the receiver's generation or the next
        assert st["mac_failures"] == 0, (host, st)
        assert st["rekeys_sent"] >= EXCHANGES // 2 and st["rekeys_followed"] >= EXCHANGES // 2, (host, st)
