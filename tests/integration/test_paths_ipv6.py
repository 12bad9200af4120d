"""IPv6 and dual stack (issue 13 item 4) on topologies/nat.py with ipv6=True (routed IPv6 beside the IPv4 paths):
protected MPTCP over IPv6 with a join, and one MPTCP connection with an IPv4 and an IPv6 subflow, the IPv6 address
announced by the server (ADD_ADDR with an IPv6 address, RFC 8684 §3.4.1)."""

from __future__ import annotations

import pytest

from pathkit import MARKER, PathNet

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def dual():
    from conftest import netns_unavailable

    if netns_unavailable():
        pytest.skip(netns_unavailable())
    pn = PathNet("nat.py", "nat,nat=none,ipv6=True,signal6=True", taps=("nat1", "nat2"))
    yield pn
    rcs = pn.stop()
    assert set(rcs.values()) == {0}, rcs


def _checked(pn, sent, got):
    assert sent is not None, f"the transfer failed: {pn.last_error}"
    assert got["sha256"] == sent["sha256"] and sent["sid"] and sent["sid"] == got["sid"]
    assert not any(t.contains(MARKER.encode()) for t in pn.taps), "plaintext on a router link"
    assert pn.fallbacks("client") == pn.fallbacks("server") == 0


def test_protected_mptcp_over_ipv6_joins_the_second_path(dual):
    joins = dual.nstat("server").get("MPTcpExtMPJoinAckRx", 0)
    sent, got = dual.transfer("fd00:1::1", 5070, 4 << 20, sink_bind="::", timeout=30)
    _checked(dual, sent, got)
    seen = dual.keyed_subflows("client", 5070)
    kinds = sorted(s["kind"] for s in seen)  # joins from fd00:12::2 and to the announced fd00:2::1
    assert kinds.count("mptcp") == 1 and kinds.count("join") >= 1, seen
    assert all(":" in s["remote"].rsplit(":", 1)[0] for s in seen), seen  # IPv6 both
    assert dual.nstat("server")["MPTcpExtMPJoinAckRx"] > joins
    v6_data = [p for t in dual.taps for ip, _h, p in t.tcp(5070) if ip.version == 6 and p]
    assert len(v6_data) > 100  # the protected data crossed the routers as IPv6


def test_one_mptcp_connection_with_an_ipv4_and_an_ipv6_subflow(dual):
    """Connect over IPv4; the server announces fd00:2::1 (its signal endpoint); the client joins it over IPv6.
    The client's socket is AF_INET6 (to ::ffff:10.0.1.1): Linux opens IPv6 subflows only for an IPv6 MPTCP socket."""
    add_addr = dual.nstat("client").get("MPTcpExtAddAddr", 0)
    sent, got = dual.transfer("::ffff:10.0.1.1", 5071, 8 << 20, sink_bind="::", timeout=30)
    _checked(dual, sent, got)
    seen = dual.keyed_subflows("client", 5071)
    assert dual.nstat("client")["MPTcpExtAddAddr"] > add_addr, "no ADD_ADDR received"
    families = {":" in s["remote"].rsplit(":", 1)[0] for s in seen}
    assert families == {False, True}, seen
    assert any(s["remote"].startswith("fd00:2::1") for s in seen), seen
