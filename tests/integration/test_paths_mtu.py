"""Small and changing path MTUs (issue 13 item 5): path 1 of topologies/nat.py (double=True: client - home1 - nat1 -
server) has a middle link neither end host is on, so only ICMP "fragmentation needed" tells the client's kernel.
Without the daemon lowering that MTU by its 12 option bytes, every full-sized protected segment is dropped again
(measured before the fix: the transfer hung, 46 ICMP messages received, nothing delivered)."""

from __future__ import annotations

import pytest

from pathkit import MARKER, PathNet, wait_for

pytestmark = pytest.mark.root

TOPO = "nat,nat=none,double=True"
MID_LINK = (("home1", "h-wan"), ("nat1", "cgn-lan"))


@pytest.fixture(scope="module")
def small():
    from conftest import netns_unavailable

    if netns_unavailable():
        pytest.skip(netns_unavailable())
    pn = PathNet("nat.py", TOPO + ",mtu1=1280", taps=("home1",))
    yield pn
    pn.stop()


def _protected(pn, sent, got, nbytes):
    assert sent is not None, f"the transfer did not finish: {pn.last_error}"
    assert got["bytes"] == nbytes and got["sha256"] == sent["sha256"]
    assert sent["sid"] and sent["sid"] == got["sid"]


@pytest.mark.parametrize("mptcp", [False, True], ids=["tcp", "mptcp"])
def test_transfer_over_a_1280_byte_path_finishes(small, mptcp):
    before = small.stats("client")["icmp_too_big_lowered"]
    sent, got = small.transfer("10.0.1.1", 5050 + mptcp, 4 << 20, mptcp=mptcp, timeout=20)
    _protected(small, sent, got, 4 << 20)
    assert not any(t.contains(MARKER.encode()) for t in small.taps)
    # the segments that crossed the small link fit it: every frame on home1's WAN side is at most 1280 + 14
    wan = [t for t in small.taps if t.name.endswith("h-wan")][0]
    assert max(len(f) for f in wan.frames) <= 1280 + 14
    if not mptcp:  # (the MPTCP connection finds the route's learned PMTU already lowered)
        assert small.stats("client")["icmp_too_big_lowered"] > before


def test_mtu_drop_mid_transfer_does_not_stall(small):
    """The middle link starts at 1500; after 1 MiB of a 16 MiB transfer it drops to 1280."""
    for host, intf in MID_LINK:
        small.net.set_mtu(host, intf, 1500)
    small["client"].run("ip route flush cache")  # forget the PMTU the tests above learned
    before = small.stats("client")["icmp_too_big_lowered"]

    def sent_bytes():
        subs = (small.row("client", 5060) or {}).get("subflows") or [{}]
        return subs[0].get("bytes_out", 0)

    def drop_mtu(_source):
        wait_for(lambda: sent_bytes() > (1 << 20), timeout=10, step=0.05)
        for host, intf in MID_LINK:
            small.net.set_mtu(host, intf, 1280)

    nbytes = 16 << 20
    sent, got = small.transfer("10.0.1.1", 5060, nbytes, mptcp=False, during=drop_mtu, timeout=30)
    _protected(small, sent, got, nbytes)
    assert small.stats("client")["icmp_too_big_lowered"] > before
