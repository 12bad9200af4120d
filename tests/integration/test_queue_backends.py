"""Each NFQUEUE backend (`mptcrypt daemon --queue-backend netfilterqueue|batched`) carries a short protected MPTCP
transfer on topologies/two_path.py: bytes intact, one session ID at both ends, both subflows protected, no
fallback, no plaintext on the wire, and the daemon says which backend, segment path and fast path it runs; with
the batched backend most segments go through the compiled fast path."""

from __future__ import annotations

import pytest

from test_daemon_e2e import FALLBACKS, MARKER, Capture, nstat, sessions, stats, transfer

pytestmark = pytest.mark.root


@pytest.fixture(scope="module", params=["netfilterqueue", "batched"])
def backend_env(request):
    from conftest import netns_unavailable, topology_path
    from mptcrypt.topo.daemons import daemon_log, spawn_in_netns, stop
    from mptcrypt.topo import Net, load_topo

    if netns_unavailable():
        pytest.skip(netns_unavailable())
    topo, *_ = load_topo(topology_path("two_path.py"))
    net = Net(topo, state_file=None, lock_timeout=900)
    net.start()
    daemons = {}
    try:
        for host in ("client", "server"):
            daemons[host] = spawn_in_netns(f"mptc-{host}", "--ports", "5000-5099", "--queue-backend", request.param)
        logs = {h: daemon_log(p) for h, p in daemons.items()}
        yield {"net": net, "backend": request.param, "logs": logs}
    finally:
        for proc in daemons.values():
            assert stop(proc, remove_log=True) == 0, "the daemon did not stop cleanly"
        net.stop()


def test_short_mptcp_transfer_through_each_backend(backend_env, tmp_path):
    net, backend = backend_env["net"], backend_env["backend"]
    for log in backend_env["logs"].values():
        assert f"queue backend: {backend}" in log and "segment path: " in log and "fast path: on" in log
    before = {h: nstat(net, h) for h in ("client", "server")}
    caps = [Capture(net, "server", intf, str(tmp_path / f"{intf}.pcap")) for intf in ("s-eth0", "s-eth1")]
    sent, got = transfer(net, 5011, 8 << 20)
    wires = [c.stop() for c in caps]
    assert sent["acked"] and got["bytes"] == 8 << 20 and got["sha256"] == sent["sha256"]
    assert sent["sid"] and sent["sid"] == got["sid"]
    row = [r for r in sessions(net, "client") if r["remote"].endswith(":5011")][0]
    assert row["protected"] and len(row["subflows"]) == 2, row
    for h in ("client", "server"):
        after = nstat(net, h)
        assert all(after.get(n, 0) == before[h].get(n, 0) for n in FALLBACKS), h
        s = stats(net, h)
        assert s["mac_failures"] == 0 and s["nfq_engine_errors"] == 0 and s["nfq_truncated"] == 0, (h, s)
        if backend == "batched":  # most segments sealed / opened in C, never in Python (core/datapath.FastPath)
            print(h, "fast path", s["nfq_fast_path"], "of", s["nfq_packets"])
            assert s["nfq_fast_path"] > s["nfq_packets"] // 2, (h, s)
    assert all(MARKER.encode() not in wire for wire in wires)
