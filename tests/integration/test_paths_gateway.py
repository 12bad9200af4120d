"""Gateway mode (issue 13 item 3): `mptcrypt daemon --gateway --lan CIDR` on the two routers of
topologies/gateways.py protects what they forward, so unmodified hosts behind them get protection: TCP, MPTCP with
the multihomed gateway carrying one subflow per path, and a gateway that is also its site's NAT.

The hosts run no daemon: protection is read from the gateways' `sessions` (same session ID on both gateways), the
WAN links must never show the plaintext marker, and the LAN link shows it (the hosts do send plaintext)."""

from __future__ import annotations

import pytest

from pathkit import MARKER, PathNet

pytestmark = pytest.mark.root

PORTS = ("--ports", "5000-5099")
GW_ARGS = {
    "gwA": (*PORTS, "--gateway", "--lan", "192.168.10.0/24", "--lan", "192.168.11.0/24"),
    "gwB": (*PORTS, "--gateway", "--lan", "192.168.20.0/24"),
}


@pytest.fixture(scope="module", params=["routed", "nat"])
def gws(request):
    from conftest import netns_unavailable

    if netns_unavailable():
        pytest.skip(netns_unavailable())
    pn = PathNet("gateways.py", f"gateways,nat={request.param == 'nat'}", daemons=("gwA", "gwB"),
                 per_host_args=GW_ARGS, taps=("gwA",))
    pn.variant = request.param
    yield pn
    rcs = pn.stop()
    assert set(rcs.values()) == {0}, rcs


def _wan(pn):
    return [t for t in pn.taps if ":ga-wan" in t.name]


def _lan(pn):
    return [t for t in pn.taps if ":ga-lan" in t.name]


def _check(pn, port, sent, got):
    assert sent is not None, f"the transfer failed: {pn.last_error}"
    assert got["sha256"] == sent["sha256"] and not sent["sid"]  # hostA itself runs no daemon
    row_a, row_b = pn.row("gwA", port), pn.row("gwB", port)
    assert row_a["protected"] and row_b["protected"], (row_a, row_b)
    assert row_a["sid"] and row_a["sid"] == row_b["sid"]
    assert not any(t.contains(MARKER.encode()) for t in _wan(pn)), "plaintext between the gateways"
    assert any(t.contains(MARKER.encode()) for t in _lan(pn))  # behind the gateway: the hosts' own bytes
    return row_a, row_b


def test_tcp_between_hosts_behind_two_gateways_is_protected(gws):
    gws.clear_taps()
    sent, got = gws.transfer("192.168.20.2", 5080, 2 << 20, mptcp=False, client="hostA", server="hostB",
                             timeout=20)
    row_a, row_b = _check(gws, 5080, sent, got)
    if gws.variant == "nat":  # gwB sees the NAT's address as the peer
        assert row_b["remote"].startswith("10.1.1.1:"), row_b


def test_mptcp_with_the_multihomed_gateway_uses_both_paths(gws):
    gws.clear_taps()
    fb = {h: gws.fallbacks(h) for h in ("hostA", "hostB")}
    sent, got = gws.transfer("192.168.20.2", 5081, 4 << 20, client="hostA", server="hostB", timeout=30)
    _check(gws, 5081, sent, got)
    seen = gws.keyed_subflows("gwA", 5081)
    assert sorted(s["kind"] for s in seen) == ["join", "mptcp"], seen
    assert {h: gws.fallbacks(h) for h in fb} == fb, "MPTCP fell back"
    wan_data = {t.name: sum(1 for _ip, _h, p in t.tcp(5081) if p) for t in _wan(gws)}
    assert all(n > 10 for n in wan_data.values()), wan_data  # one subflow per path
